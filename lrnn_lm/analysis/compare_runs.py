"""Compare finished ``train.py`` runs: one table of validation loss and one plot of the loss curves.

    python -m lrnn_lm.analysis.compare_runs runs/a runs/b runs/c --names A B C --output outputs/compare
    python -m lrnn_lm.analysis.compare_runs runs/a_s0 runs/a_s1 runs/b_s0 runs/b_s1 --names A A B B --output DIR

Runs given the same name are seeds of one model: the table gives their mean ± sample std and each run's value,
the plot their mean validation curve with a min-max band. Reads each run's ``metrics.jsonl`` (training loss every
``log_every`` steps, validation loss every ``eval_every``) and the parameter count from its ``final/`` checkpoint,
and writes ``compare.json``, ``compare.md`` and ``loss_curves.png`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def read_run(run_dir: Path) -> dict:
    """Training and validation curves of one run, its last validation loss, tokens seen and parameter count."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (not a train.py run folder?)")
    train, val, tokens = [], [], 0
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            train.append((row["step"], row["loss"]))
            tokens = max(tokens, row.get("tokens", 0))
        if "val_loss" in row:
            val.append((row["step"], row["val_loss"]))
    if not val:
        raise ValueError(f"{run_dir}: metrics.jsonl has no validation loss")
    params = None
    final = run_dir / "final"
    if final.is_dir():
        from transformers import AutoModelForCausalLM

        import lrnn_lm  # noqa: F401  (registers our classes; no remote code runs)

        params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(final).parameters())
    return {"run": str(run_dir), "params": params, "tokens": tokens, "val_loss": val[-1][1], "train": train, "val": val}


def summarize(runs: list[dict]) -> dict:
    """One model's runs (seeds): mean and sample std of the final validation loss, and the runs themselves."""
    losses = [r["val_loss"] for r in runs]
    mean = statistics.fmean(losses)
    std = statistics.stdev(losses) if len(losses) > 1 else None
    params = {r["params"] for r in runs}
    tokens = {r["tokens"] for r in runs}
    return {
        "val_loss": mean,
        "val_loss_std": std,
        "val_losses": losses,
        "params": runs[0]["params"] if len(params) == 1 else None,
        "tokens": runs[0]["tokens"] if len(tokens) == 1 else min(tokens),
        "runs": runs,
    }


def plot(results: dict, path: Path) -> None:
    """Training loss (faint, each run) and validation loss (mean over a model's runs, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (name, r) in enumerate(results.items()):
        color = f"C{i}"
        for run in r["runs"]:
            ax.plot(*zip(*run["train"]), color=color, alpha=0.25, linewidth=1)
        curves = [dict(run["val"]) for run in r["runs"]]
        steps = sorted(set.intersection(*(set(curve) for curve in curves)))
        values = [[curve[s] for curve in curves] for s in steps]
        mean = [sum(v) / len(v) for v in values]
        n = len(r["runs"])
        ax.plot(steps, mean, color=color, marker="o", label=f"{name} (validation{f', mean of {n}' if n > 1 else ''})")
        if n > 1:
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("training (faint) and validation loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument(
        "--names",
        nargs="+",
        help="one label per run (default: the folder names); a label repeated "
        "for several runs makes them seeds of one model",
    )
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    names = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs):
        p.error(f"--names has {len(names)} labels for {len(args.runs)} runs")
    groups: dict[str, list[dict]] = {}
    for name, run in zip(names, args.runs):
        groups.setdefault(name, []).append(read_run(run))
    results = {name: summarize(runs) for name, runs in groups.items()}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "compare.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| model | runs | parameters | tokens | final validation loss (mean ± std) | per run |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        params = f"{r['params']:,}" if r["params"] is not None else "n/a"
        spread = f" ± {r['val_loss_std']:.3f}" if r["val_loss_std"] is not None else ""
        each = " / ".join(f"{v:.3f}" for v in r["val_losses"])
        lines.append(
            f"| {name} | {len(r['runs'])} | {params} | {r['tokens']:,} | {r['val_loss']:.3f}{spread} | {each} |"
        )
    (args.output / "compare.md").write_text("\n".join(lines) + "\n")
    plot(results, args.output / "loss_curves.png")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
