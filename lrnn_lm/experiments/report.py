"""Plot (scaled accuracy against length, one line per model) and a Table-3-style markdown table from the
``results.json`` content written by :mod:`lrnn_lm.experiments.evaluate`."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, no display
import matplotlib.pyplot as plt  # noqa: E402

# Column titles of the paper's Table 3; other tasks use their label.
COLUMN_TITLES = {
    "parity": "parity",
    "mod_arith": "mod arith, no brackets",
    "mod_arith_brackets": "mod arith, brackets",
}


def plot_path(out: Path, label: str) -> Path:
    return out / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label).strip('_')}.png"


def line_style(i: int) -> dict:
    """Marker and dash of the ``i``-th line: models often score identically (all exact, or all at chance), and
    alternating dashes keep every line visible where they overlap."""
    return {"marker": "osD^v"[i % 5], "ls": ("-", "--", ":", "-.")[i % 4]}


def save_accuracy_plot(fig, ax, path: Path, *, lowest: float, xlabel: str, title: str, legend_size: int) -> Path:
    """The finish both state-tracking plots share: chance line, scaled-accuracy axis down to ``lowest``, legend,
    ``path`` written and the figure closed."""
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel=xlabel, ylabel="scaled accuracy", title=title, ylim=(lowest - 0.1, 1.05))
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(out: Path, results: dict) -> list[Path]:
    """One PNG per task in ``results``: scaled accuracy against effective test length, one line per model."""
    paths = []
    for label, entry in results.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        lowest = 0.0
        for i, (name, model) in enumerate(entry["models"].items()):
            rows = sorted(model["per_length"].values(), key=lambda r: r["effective_length"])
            scores = [r["scaled_acc"] for r in rows]
            # shrinking markers too, so overlapping lines stay visible
            style = {**line_style(i), "markersize": max(3, 9 - 2 * i)}
            ax.plot([r["effective_length"] for r in rows], scores, label=name, **style)
            lowest = min(lowest, *scores)
        path = plot_path(out, label)
        paths.append(save_accuracy_plot(fig, ax, path, lowest=lowest, xlabel="test length", title=label, legend_size=8))
    return paths


def write_table(out: Path, results: dict) -> Path:
    """``table.md``: model rows, task columns, scaled accuracy averaged over each task's test lengths."""
    labels = list(results)
    models = list(dict.fromkeys(name for entry in results.values() for name in entry["models"]))
    titles = [COLUMN_TITLES.get(label, label) for label in labels]
    lines = ["| model | " + " | ".join(titles) + " |", "|---" * (len(labels) + 1) + "|"]
    for name in models:
        cells = [results[label]["models"].get(name, {}).get("mean_scaled_acc") for label in labels]
        lines.append(f"| {name} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    notes = [
        f"- {title}: lengths {', '.join(map(str, e['lengths']))}; {e['num']} sequences per length; "
        f"{e.get('split', 'test')} split, seed {e['seed']}; chance {e['chance']:.4g}"
        for title, e in zip(titles, results.values())
    ]
    text = (
        "Scaled accuracy (acc - chance) / (1 - chance), averaged over the test lengths (paper, Table 3: 40-256). "
        "Accuracy is argmax accuracy on the target positions: the final answer for parity and modular "
        "arithmetic, every running product for the group tasks.\n\n" + "\n".join(lines) + "\n\n" + "\n".join(notes)
    )
    path = out / "table.md"
    path.write_text(text + "\n")
    return path
