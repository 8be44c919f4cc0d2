"""Compare finished ``train.py`` runs: one table of validation loss and one plot of the loss curves.

    python -m lrnn_lm.analysis.compare_runs runs/a runs/b runs/c --names A B C --output outputs/compare

Reads each run's ``metrics.jsonl`` (training loss every ``log_every`` steps, validation loss every ``eval_every``)
and the parameter count from its ``final/`` checkpoint, and writes ``compare.json``, ``compare.md`` and
``loss_curves.png`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--names", nargs="+", help="one label per run (default: the folder names)")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    names = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs):
        p.error(f"--names has {len(names)} labels for {len(args.runs)} runs")
    results = {name: read_run(run) for name, run in zip(names, args.runs)}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "compare.json").write_text(json.dumps(results, indent=2))
    lines = ["| model | parameters | tokens | final validation loss |", "|---|---|---|---|"]
    for name, r in results.items():
        params = f"{r['params']:,}" if r["params"] is not None else "n/a"
        lines.append(f"| {name} | {params} | {r['tokens']:,} | {r['val_loss']:.3f} |")
    (args.output / "compare.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (name, r) in enumerate(results.items()):
        color = f"C{i}"
        ax.plot(*zip(*r["train"]), color=color, alpha=0.35, linewidth=1)
        ax.plot(*zip(*r["val"]), color=color, marker="o", label=f"{name} (validation)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("training (faint) and validation loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output / "loss_curves.png", dpi=120)
    plt.close(fig)
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
