"""The outputs of a sweep (:mod:`lrnn_lm.experiments.sweep`): ``results.json``, a Table 3-style ``table.md`` with the
best of the seeds (as the paper reports) and mean ± std, and one plot per task with a band per model."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from .report import COLUMN_TITLES, line_style, plot_path, plt, save_accuracy_plot

SPLITS = ("val", "test")


def spread(values: list[float]) -> dict:
    """n, mean, sample std (None for one value), min and max."""
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"n": len(values), "mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def cell_stats(runs: dict[int, dict], split: str) -> dict | None:
    """Across the seeds of one cell: the best seed (by mean scaled accuracy over the lengths), the spread of the
    means, and the spread per length. None when no seed has scores on ``split``."""
    scored = {seed: rec[split] for seed, rec in runs.items() if split in rec}
    if not scored:
        return None
    means = {seed: e["mean_scaled_acc"] for seed, e in scored.items()}
    best_seed = max(means, key=means.get)
    stats = {"seeds": sorted(scored), "best": means[best_seed], "best_seed": best_seed, **spread(means.values())}
    first = next(iter(scored.values()))["per_length"]
    stats["per_length"] = {
        length: {
            "effective_length": row["effective_length"],
            **spread([e["per_length"][length]["scaled_acc"] for e in scored.values()]),
        }
        for length, row in first.items()
    }
    return stats


def aggregate(sweep, records: list[dict]) -> dict:
    """``results.json``: per task, per cell (model and range), every seed's record and the statistics per split."""
    from ..tasks import get_task

    tasks: dict[str, dict] = {}
    for run, rec in zip(sweep.runs, records):
        if run.task_label not in tasks:
            task = get_task(run.task["name"], **run.task["options"])
            lengths = [task.valid_length(run.task["min_len"]), task.valid_length(run.task["max_len"])]
            tasks[run.task_label] = {"task": run.task, "chance": task.chance, "train_lengths": lengths, "cells": {}}
        cell = tasks[run.task_label]["cells"].setdefault(
            run.cell, {"model": run.model, "eigval_range": run.eigval_range, "runs": {}}
        )
        cell["runs"][run.seed] = rec
    for entry in tasks.values():
        for cell in entry["cells"].values():
            for split in SPLITS:
                cell[split] = cell_stats(cell["runs"], split)
            if cell["val"] and cell["test"]:
                # The protocol that never reads the test stream to choose: the seed best on the validation stream.
                seed = cell["val"]["best_seed"]
                cell["test_of_val_choice"] = {"seed": seed, "test": cell["runs"][seed]["test"]["mean_scaled_acc"]}
    failed = [r.name for r, rec in zip(sweep.runs, records) if rec["status"] == "failed"]
    not_run = [r.name for r, rec in zip(sweep.runs, records) if rec["status"] == "not run"]
    head = {"sweep": sweep.source, "out_root": str(sweep.out_root), "evaluate": sweep.evaluate, "failed": failed}
    return head | {"not_run": not_run, "tasks": tasks}


def _num(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _range(s: dict) -> str:
    return f"[{_num(s['min'])}, {_num(s['max'])}]"


def _summary_cell(stats: dict | None) -> str:
    if stats is None:
        return "–"
    return f"**{_num(stats['best'])}** / {_num(stats['mean'])} ± {_num(stats['std'])} ({stats['n']})"


def write_table(out: Path, results: dict) -> Path:
    """``table.md``: Table 3 layout (model rows, task columns) on the test split, then per-length tables."""
    tasks = results["tasks"]
    ev = results["evaluate"]
    cells = list(dict.fromkeys(c for entry in tasks.values() for c in entry["cells"]))
    titles = [COLUMN_TITLES.get(label, label) for label in tasks]
    lines = [
        f"Sweep `{results['sweep']}`. Scaled accuracy (acc - chance) / (1 - chance) on the test split (seed "
        f"{ev['test']['seed']}, {ev['test']['num']} sequences per length), averaged over the test lengths: "
        "**best of the seeds** (as the paper's Table 3 reports) / mean ± sample std over the seeds (number of "
        "seeds).",
        "",
        "| model | " + " | ".join(titles) + " |",
        "|---" * (len(titles) + 1) + "|",
    ]
    for cell in cells:
        row = [_summary_cell(entry["cells"].get(cell, {}).get("test")) for entry in tasks.values()]
        lines.append(f"| {cell} | " + " | ".join(row) + " |")
    for label, entry in tasks.items():
        lines += ["", f"### {COLUMN_TITLES.get(label, label)}: per length, mean ± std [min, max] over the seeds", ""]
        columns = [("val", n) for n in ev["val"]["lengths"]] + [("test", n) for n in ev["test"]["lengths"]]
        head = [f"{'val ' if split == 'val' else ''}{n}" for split, n in columns]
        lines += ["| model | " + " | ".join(head) + " | test of the seed best on val |"]
        lines += ["|---" * (len(head) + 2) + "|"]
        for cell, stats in entry["cells"].items():
            row = []
            for split, n in columns:
                s = (stats.get(split) or {}).get("per_length", {}).get(str(n))
                row.append("–" if s is None else f"{_num(s['mean'])} ± {_num(s['std'])} {_range(s)}")
            choice = stats.get("test_of_val_choice")
            row.append("–" if choice is None else f"{_num(choice['test'])} (seed {choice['seed']})")
            lines.append(f"| {cell} | " + " | ".join(row) + " |")
        lines += ["", *_run_rows(label, entry, columns)]
        lo, hi = entry["train_lengths"]
        lines += [
            "",
            f"Training lengths {lo}-{hi}; chance {entry['chance']:.4g}; validation: the val split, seed "
            f"{ev['val']['seed']}, {ev['val']['num']} sequences per length. Lengths are as requested (the task may "
            "round them, e.g. mod_arith to odd lengths).",
        ]
    if results["failed"]:
        lines += ["", "Failed runs (not in the table): " + "; ".join(results["failed"])]
    if results.get("not_run"):
        lines += ["", "Not run yet (left out by --only; not in the table): " + "; ".join(results["not_run"])]
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_rows(label: str, entry: dict, columns: list[tuple[str, int]]) -> list[str]:
    """Every run of a task, seed by seed: the spread behind the means, and each run's training time."""
    head = [f"{'val ' if split == 'val' else ''}{n}" for split, n in columns]
    lines = [f"### {COLUMN_TITLES.get(label, label)}: every run (scaled accuracy)", ""]
    lines += ["| model | seed | " + " | ".join(head) + " | train minutes |", "|---" * (len(head) + 3) + "|"]
    for cell, stats in entry["cells"].items():
        for seed, run in stats["runs"].items():
            row = []
            for split, n in columns:
                r = (run.get(split) or {}).get("per_length", {}).get(str(n))
                row.append("–" if r is None else _num(r["scaled_acc"]))
            minutes = run.get("train_minutes")
            lines.append(
                f"| {cell} | {seed} | " + " | ".join(row) + f" | {'–' if minutes is None else f'{minutes:.1f}'} |"
            )
    return lines


def write_plots(out: Path, results: dict) -> list[Path]:
    """One PNG per task: seed-mean scaled accuracy against length (log axis) per model, a min-max band over the
    seeds, the training lengths shaded. The test split, or the validation split when the test was not read."""
    paths = []
    for label, entry in results["tasks"].items():
        split = "test" if any(c.get("test") for c in entry["cells"].values()) else "val"
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        lo, hi = entry["train_lengths"]
        ax.axvspan(lo, hi, color="grey", alpha=0.15, label=f"training lengths {lo}-{hi}")
        lowest, ticks = 0.0, {lo, hi}
        for i, (cell, stats) in enumerate(entry["cells"].items()):
            s = stats.get(split)
            if s is None:
                continue
            rows = sorted(s["per_length"].values(), key=lambda r: r["effective_length"])
            x = [r["effective_length"] for r in rows]
            (line,) = ax.plot(x, [r["mean"] for r in rows], label=f"{cell} (n={s['n']})", **line_style(i))
            ax.fill_between(x, [r["min"] for r in rows], [r["max"] for r in rows], color=line.get_color(), alpha=0.2)
            lowest, ticks = min(lowest, *(r["min"] for r in rows)), ticks | set(x)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])  # the lengths themselves, not powers of 10
        title = f"{COLUMN_TITLES.get(label, label)} ({split} split; band: seed min-max)"
        path = plot_path(out, label)
        xlabel = "length (log scale)"
        paths.append(save_accuracy_plot(fig, ax, path, lowest=lowest, xlabel=xlabel, title=title, legend_size=7))
    return paths


def write_report(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_table(out, results)
    write_plots(out, results)
