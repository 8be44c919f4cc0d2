"""Markdown tables (the paper's Table 4 layout, other tasks, probes, spectrum) and the spectrum figure."""

from __future__ import annotations

import math
from pathlib import Path

from .lm_harness import TABLE4_TASKS, metric

NA = "n/a"
# (header, task, metric, kind): the columns of Table 4 in Grazzi et al. 2025; hella and arc-c use acc_norm.
TABLE4_COLUMNS = [
    ("wiki ppl ↓", "wikitext", "word_perplexity", "ppl"),
    ("lmb ppl ↓", "lambada_openai", "perplexity", "ppl"),
    ("lmb acc ↑", "lambada_openai", "acc", "acc"),
    ("piqa ↑", "piqa", "acc", "acc"),
    ("hella ↑", "hellaswag", "acc_norm", "acc"),
    ("wino ↑", "winogrande", "acc", "acc"),
    ("arc-e ↑", "arc_easy", "acc", "acc"),
    ("arc-c ↑", "arc_challenge", "acc_norm", "acc"),
]


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _fmt(value: float | None, digits: int) -> str:
    return NA if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table4_markdown(runs: dict[str, dict]) -> str:
    """``runs[label] = {"model": description, "tasks": {task: run_task result}}``; one row per checkpoint.

    Accuracies in percent, perplexities as is; avg is the mean of the six accuracies (n/a if any is missing).
    """
    header = ["checkpoint", "model", *(c[0] for c in TABLE4_COLUMNS), "avg ↑"]
    rows, failures = [], []
    for label, run in runs.items():
        cells, accs = [label, run["model"]], []
        for _, task, name, kind in TABLE4_COLUMNS:
            value = metric(run["tasks"], task, name)
            if kind == "acc":
                value = None if value is None else 100 * value
                accs.append(value)
            cells.append(_fmt(value, 2 if kind == "ppl" else 1))
        cells.append(_fmt(sum(accs) / len(accs), 1) if None not in accs else NA)
        rows.append(cells)
        failures += [
            f"- {label}: {t} failed: {e['error']}" for t, e in run["tasks"].items() if t in TABLE4_TASKS and not e["ok"]
        ]
        not_run = [t for t in TABLE4_TASKS if t not in run["tasks"]]
        if not_run:
            failures.append(f"- {label}: not run: {', '.join(not_run)}")
    lines = ["## LM-harness (Table 4 layout)", "", *_table(header, rows)]
    if failures:
        lines += ["", "n/a:", *failures]
    return "\n".join(lines) + "\n"


def other_tasks_markdown(runs: dict[str, dict]) -> str:
    """Every metric of every task outside Table 4 (local state-tracking tasks, extra tasks), one column per
    checkpoint."""
    labels = list(runs)
    values: dict[tuple[str, str], dict[str, str]] = {}
    for label, run in runs.items():
        for task, entry in run["tasks"].items():
            if task in TABLE4_TASKS:
                continue
            if not entry["ok"]:
                values.setdefault((task, "error"), {})[label] = entry["error"]
                continue
            for sub, metrics in entry["results"].items():
                for key, value in metrics.items():
                    if key.endswith(",none") and "_stderr" not in key and isinstance(value, (int, float)):
                        values.setdefault((sub, key.split(",")[0]), {})[label] = _fmt(value, 4)
    if not values:
        return ""
    rows = [[task, name, *(cells.get(label, "") for label in labels)] for (task, name), cells in values.items()]
    return "\n".join(["## Other tasks", "", *_table(["task", "metric", *labels], rows)]) + "\n"


def probes_markdown(probes: dict[str, dict]) -> str:
    """``probes[label] = {"in_context": {task: run_task result}, "linear": {task: run_linear_probe result},
    "errors": {task: {"ok": False, "error": msg}}}``.

    One table per task: a row per layer, held-out short and long accuracy per checkpoint side by side.
    """
    labels = list(probes)
    linear = {label: p.get("linear", {}) for label, p in probes.items()}
    tasks = list(dict.fromkeys(t for per_task in linear.values() for t in per_task))
    lines = ["## State-tracking probes", ""]
    for task in tasks:
        results = {label: linear[label][task] for label in labels if task in linear[label]}
        ref = next(iter(results.values()))
        s = ref["settings"]
        lines += [
            f"### {task}: {ref['target']} (chance {ref['chance']:.3f})",
            "",
            f"Linear readout per layer, trained on lengths {s['min_len']}-{s['max_len']}; *short*: held-out "
            f"sequences of the same lengths; *long*: positions {s['max_len'] + 1}-{s['long_len']} of length-"
            f"{s['long_len']} sequences.",
            "",
        ]
        header = ["layer", *(f"{label} {split}" for label in labels for split in ("short", "long"))]
        deepest = max(results.values(), key=lambda r: len(r["layers"]))
        rows = []
        for i, entry in enumerate(deepest["layers"]):
            row = [entry["name"]]
            for label in labels:
                layers = results[label]["layers"] if label in results else []
                row += [_fmt(layers[i][k], 3) if i < len(layers) else "" for k in ("short", "long")]
            rows.append(row)
        majority, in_context = ["majority class"], [f"in-context (lm-eval lrnn_{task}, acc)"]
        for label in labels:
            m = results[label]["majority"] if label in results else {}
            majority += [_fmt(m.get("short"), 3), _fmt(m.get("long"), 3)]
            in_context += [_fmt(metric(probes[label].get("in_context", {}), f"lrnn_{task}", "acc"), 3), ""]
        lines += [*_table(header, rows + [majority, in_context]), ""]
    errors = [
        f"- {label}: {task}: {entry['error']}"
        for label, p in probes.items()
        for task, entry in {**p.get("in_context", {}), **p.get("errors", {})}.items()
        if not entry.get("ok", True)
    ]
    if errors:
        lines += ["Not available:", *errors, ""]
    return "\n".join(lines)


def spectrum_markdown(spectra: dict[str, list[dict]]) -> str:
    header = ["checkpoint", "layer", "mixer", "count", "frac < 0", "frac < -0.9", "min", "mean"]
    rows = [
        [label, s["layer"], s["mixer"], s["count"], _fmt(s["frac_negative"], 4), _fmt(s["frac_near_minus_one"], 4)]
        + [_fmt(s["min"], 4), _fmt(s["mean"], 4)]
        for label, layers in spectra.items()
        for s in layers
    ]
    # What is counted, for the mixers that appear (each mixer class says it in ``eigenvalues_are``).
    what = {s["mixer"]: s.get("what") for layers in spectra.values() for s in layers if s.get("what")}
    notes = [f"- {mixer}: {text}" for mixer, text in what.items()]
    return "\n".join(["## Transition eigenvalues on text", "", *notes, "", *_table(header, rows)]) + "\n"


def plot_spectrum(spectra: dict[str, list[dict]], path: str | Path) -> Path:
    """One panel per layer; each checkpoint's histogram (fraction per bin, log scale) drawn in each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = max(len(layers) for layers in spectra.values())
    cols = min(4, depth)
    rows = math.ceil(depth / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, sharex=True)
    for i, ax in enumerate(axes.flat):
        if i >= depth:
            ax.axis("off")
            continue
        smallest = 1.0
        for label, layers in spectra.items():
            if i >= len(layers) or not layers[i]["count"]:
                continue
            s = layers[i]
            edges, counts = s["hist"]["edges"], s["hist"]["counts"]
            fractions = [c / sum(counts) for c in counts]
            smallest = min([smallest, *(f for f in fractions if f > 0)])
            ax.stairs(fractions, edges, label=f"{label}: {s['frac_negative']:.1%} < 0")
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_ylim(smallest / 2, 1.5)
        ax.set_xlim(-1, 1)
        mixers = "/".join(dict.fromkeys(layers[i]["mixer"] for layers in spectra.values() if i < len(layers)))
        ax.set_title(f"layer {i + 1} ({mixers})", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    fig.supxlabel("transition eigenvalue (Mamba: a_t; DeltaNet: 1 - beta_t along k_t)", fontsize=9)
    fig.supylabel("fraction of values", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
