"""Validation accuracy against training steps, per length, for task runs of ``train.py``: how far a recipe is from
a bar, and how many more steps the trend asks for.

    python -m lrnn_lm.analysis.val_curves runs/a runs/b --names A B --output outputs/curves

Reads the validation stream that ``train.py`` scores every ``train.eval_every`` steps (``long_val_scaled_acc_<L>``
in each run's ``metrics.jsonl``; the ``val`` split, never the test split) and writes ``val_curves.json`` (every
run's points) and ``val_curves.png`` (one panel per length, scaled accuracy against step, one line per run).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

KEY = re.compile(r"^long_val_scaled_acc_(\d+)$")


def read_curves(run_dir: Path) -> dict[int, list[tuple[int, float]]]:
    """``{length: [(step, scaled accuracy), ...]}`` from ``run_dir/metrics.jsonl``, steps in order."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (not a train.py run folder?)")
    curves: dict[int, dict[int, float]] = {}
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            match = KEY.match(key)
            if match:
                # A resumed run may score a step twice; the later record wins.
                curves.setdefault(int(match.group(1)), {})[row["step"]] = value
    if not curves:
        raise ValueError(f"{run_dir}: metrics.jsonl has no long-length validation (data.task.val_lengths)")
    return {length: sorted(points.items()) for length, points in sorted(curves.items())}


def save_plot(runs: dict[str, dict[int, list[tuple[int, float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({length for curves in runs.values() for length in curves})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4 * len(lengths), 3.4), sharey=True, squeeze=False)
    for ax, length in zip(axes[0], lengths):
        for name, curves in runs.items():
            if length in curves:
                steps, accs = zip(*curves[length])
                ax.plot(steps, accs, marker=".", label=name)
        ax.set_title(f"length {length}")
        ax.set_xlabel("training step")
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("scaled accuracy (validation split)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--names", nargs="+", help="one per run (default: the folder names)")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    names = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs) or len(set(names)) != len(names):
        p.error(f"--names: need {len(args.runs)} distinct names, got {names}")
    runs = {name: read_curves(run) for name, run in zip(names, args.runs)}
    args.output.mkdir(parents=True, exist_ok=True)
    out = {name: {str(length): points for length, points in curves.items()} for name, curves in runs.items()}
    (args.output / "val_curves.json").write_text(json.dumps(out, indent=1) + "\n")
    save_plot(runs, args.output / "val_curves.png")
    print(f"wrote {args.output / 'val_curves.json'} and {args.output / 'val_curves.png'}")


if __name__ == "__main__":
    main()
