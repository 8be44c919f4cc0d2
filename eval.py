"""Evaluate checkpoints: lm-eval tasks in the paper's Table 4 layout, state-tracking probes, eigenvalue spectrum.

    python eval.py --checkpoint runs/neg/final runs/pos/final               # Table 4 tasks (datasets from the Hub)
    python eval.py --checkpoint CKPT --tasks lrnn_parity,lrnn_s5 --limit 100  # local tasks work offline
    python eval.py --checkpoint NEG POS --tasks "" --probes parity,mod_arith,s5 --spectrum

Writes OUTPUT/results.json and OUTPUT/table.md; --probes adds probes.json and probes.md; --spectrum adds
spectrum.json, spectrum.md and spectrum.png. A task whose dataset cannot be loaded (offline, say) is reported
as failed in results.json, table.md and on stdout, and the others still run. Run from the repository root: the
local task YAMLs in configs/lm_eval_tasks name their data files relative to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lrnn_lm.analysis.checkpoints import (
    NotACheckpoint,
    RemoteCodeRefused,
    check_checkpoint_folder,
    describe,
    load_checkpoint,
    resolve_device,
)
from lrnn_lm.analysis.lm_harness import LOCAL_TASKS_DIR, TABLE4_TASKS, LazyTaskManager, make_lm, run_tasks
from lrnn_lm.analysis.probes import ProbeSettings, run_linear_probe
from lrnn_lm.analysis.report import (
    other_tasks_markdown,
    plot_spectrum,
    probes_markdown,
    spectrum_markdown,
    table4_markdown,
)
from lrnn_lm.analysis.spectrum import (
    BINS,
    NEAR_MINUS_ONE,
    collect_spectrum,
    eigenvalue_descriptions,
    text_documents,
    token_windows,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", required=True, help="one or more checkpoint folders (OUT/final)")
    p.add_argument("--tasks", default=",".join(TABLE4_TASKS), help="comma-separated lm-eval tasks ('' for none)")
    p.add_argument("--include_path", default=str(LOCAL_TASKS_DIR), help="extra lm-eval task folder")
    p.add_argument("--probes", default="", help="comma-separated state-tracking tasks, e.g. parity,mod_arith,s5")
    p.add_argument("--probe_lengths", default="4,16", help="MIN,MAX lengths to train the linear probes on")
    p.add_argument("--probe_long_length", type=int, default=64, help="length of the long test sequences")
    p.add_argument("--probe_train_seqs", type=int, default=256)
    p.add_argument("--probe_eval_seqs", type=int, default=128)
    p.add_argument("--spectrum", action="store_true", help="collect the transition eigenvalues used on text")
    p.add_argument("--spectrum_text", default=None, help=".jsonl (field text) or text file; default: built-in val")
    p.add_argument("--spectrum_tokens", type=int, default=16384, help="tokens of text to run")
    p.add_argument("--spectrum_seq_len", type=int, default=512)
    p.add_argument("--limit", type=int, default=None, help="documents per lm-eval task (for quick runs)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--output", default="eval_out")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available); bf16 on cuda")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a checkpoint run Python code it carries (never needed for lrnn_lm's own checkpoints)",
    )
    return p.parse_args(argv)


def names(csv: str) -> list[str]:
    return [n.strip() for n in csv.split(",") if n.strip()]


def checkpoint_labels(paths: list[str]) -> list[str]:
    """Short unique names: the run folder for ``RUN/final``, else the folder name."""
    labels = []
    for path in paths:
        p = Path(path).resolve()
        base = p.parent.name if p.name == "final" else p.name
        label, k = base, 2
        while label in labels:
            label, k = f"{base}#{k}", k + 1
        labels.append(label)
    return labels


class UsageError(ValueError):
    """A bad command-line argument; the message names it."""


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out}: an existing file; --output names the folder the results are written to")
    for path in args.checkpoint:  # every one before the first is evaluated, which can take hours
        check_checkpoint_folder(path)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    tasks, probes = names(args.tasks), names(args.probes)
    lo, hi = (int(x) for x in args.probe_lengths.split(","))
    settings = ProbeSettings(
        train_seqs=args.probe_train_seqs,
        eval_seqs=args.probe_eval_seqs,
        min_len=lo,
        max_len=hi,
        long_len=args.probe_long_length,
        batch_size=args.batch_size,
    )
    task_manager = LazyTaskManager(args.include_path)
    documents = text_documents(args.spectrum_text) if args.spectrum else None
    runs, probe_results, spectra = {}, {}, {}

    for label, path in zip(checkpoint_labels(args.checkpoint), args.checkpoint):
        print(f"== {label}: {path}")
        model, tokenizer = load_checkpoint(path, device, trust_remote_code=args.trust_remote_code)
        info = {"path": str(path), "model": describe(model), "dtype": str(model.dtype)}
        lm = make_lm(model, tokenizer, args.batch_size) if tasks or probes else None
        runs[label] = {**info, "tasks": run_tasks(lm, tasks, task_manager, args.limit, label)}

        if probes:
            in_context = run_tasks(lm, [f"lrnn_{p}" for p in probes], task_manager, args.limit, label)
            linear, errors = {}, {}
            for name in probes:
                try:
                    linear[name] = run_linear_probe(model, tokenizer, name, settings)
                except Exception as e:  # unknown task, no labels, a model/tokenizer mismatch: report, go on
                    errors[name] = {"ok": False, "error": f"linear probe: {type(e).__name__}: {e}"}
                    print(f"[{label}] probe {name!r} FAILED: {errors[name]['error']}")
            probe_results[label] = {**info, "in_context": in_context, "linear": linear, "errors": errors}

        if args.spectrum:
            windows = token_windows(tokenizer, documents, args.spectrum_tokens, args.spectrum_seq_len)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            spectra[label] = collect_spectrum(model, windows, args.batch_size, pad)
        del model, lm

    files = {"results.json": {"args": vars(args), "device": str(device), "checkpoints": runs}}
    files["table.md"] = table4_markdown(runs) + "\n" + other_tasks_markdown(runs)
    if probes:
        files["probes.json"] = probe_results
        files["probes.md"] = probes_markdown(probe_results)
    if args.spectrum:
        files["spectrum.json"] = {
            "text": args.spectrum_text or "built-in corpus validation split",
            "bins": BINS,
            "near_minus_one": f"< {NEAR_MINUS_ONE}",
            "what": eigenvalue_descriptions(),
            "checkpoints": spectra,
        }
        files["spectrum.md"] = spectrum_markdown(spectra)
        plot_spectrum(spectra, out / "spectrum.png")
    for name, data in files.items():
        text = data if name.endswith(".md") else json.dumps(data, indent=2) + "\n"
        (out / name).write_text(text)
        if name.endswith(".md"):
            print("\n" + text)
    print(f"wrote {', '.join([*files, *(['spectrum.png'] if args.spectrum else [])])} to {out}")
    return files


def cli(argv: list[str] | None = None) -> int:
    """``main`` for the command line: a refused argument or checkpoint prints one line and exits with status 2."""
    try:
        main(argv)
    except (RemoteCodeRefused, NotACheckpoint, UsageError) as e:
        print(f"eval.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
