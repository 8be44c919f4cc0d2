"""The run directory (``out_dir``): one run per folder, never destroyed or mixed by accident.

A run folder holds ``run.json`` (the run's id) and everything the run writes. A fresh run refuses a folder
that already holds anything, naming the choices; ``--overwrite=move`` renames the old folder aside whole and
``--overwrite=delete`` renames it aside and then deletes it (both renames are atomic, both are logged).
Checkpoints carry the run id, so pruning and ``--resume auto`` only ever touch the current run's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
METRICS = "metrics.jsonl"


class RunDirError(RuntimeError):
    """The out_dir cannot be used as asked; the message names it and the choices."""


def is_used(out: Path) -> bool:
    return out.exists() and (not out.is_dir() or any(out.iterdir()))


def read_run_id(out: Path) -> str | None:
    """The id in ``out/run.json``, or None when the folder holds no run of this train.py."""
    try:
        run_id = json.loads((out / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run_id if isinstance(run_id, str) and run_id else None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def refuse_used(out: Path) -> None:
    """Stop a fresh run before any work when ``out`` already holds something."""
    if is_used(out):
        listing = sorted(p.name for p in out.iterdir())[:6] if out.is_dir() else [out.name]
        raise RunDirError(
            f"out_dir {out} is not empty (it holds {', '.join(listing)}); a fresh run never writes into a used "
            f"folder. Choose one: --resume auto (continue the run there), a new --out_dir, or --overwrite=move "
            f"(rename the old folder to {out}.old-<time>) or --overwrite=delete (delete it)."
        )


def clear_aside(out: Path, how: str) -> Path | None:
    """Rename a used ``out`` aside in one atomic step; ``how="delete"`` then deletes the renamed copy.

    Returns where the old run now lives (None when deleted or when there was nothing to move).
    """
    if not is_used(out):
        return None
    label = "old" if how == "move" else "deleting"
    aside = out.with_name(f"{out.name}.{label}-{time.strftime('%Y%m%d-%H%M%S')}")
    k = 1
    while aside.exists():
        aside, k = aside.with_name(f"{aside.name.split('~')[0]}~{k}"), k + 1
    os.replace(out, aside)  # atomic: the old run is either whole at out or whole at aside
    if how == "move":
        logger.warning("--overwrite=move: the previous run in %s is now %s", out, aside)
        return aside
    shutil.rmtree(aside)
    logger.warning("--overwrite=delete: deleted the previous run in %s (renamed to %s first)", out, aside)
    return None


def claim(out: Path, run_id: str) -> None:
    """Create ``out`` and record ``run_id`` in it (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps({"run_id": run_id}) + "\n")
    os.replace(tmp, out / RUN_FILE)


def trim_metrics(out: Path, step: int) -> int:
    """Keep only the records a run resumed at ``step`` has already made (all of them at step 0 are dropped).

    A run killed after its last checkpoint logged steps the resumed run logs again; dropping them keeps
    every step once in ``metrics.jsonl``. Returns how many records were dropped.
    """
    path = out / METRICS
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec_step = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            rec_step = None  # a torn last line from a kill mid-write
        if rec_step is not None and step > 0 and rec_step <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{METRICS}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
        logger.warning("metrics.jsonl: dropped %d records after step %d (logged before the restart)", dropped, step)
    return dropped


def last_evaluation(out: Path) -> tuple[float | None, dict]:
    """From ``metrics.jsonl``: the unigram baseline loss (logged once, at step 0) and the fields of the last
    validation record (``val_*``, ``long_val_*``), so a resumed run that evaluates no more still reports them."""
    path = out / METRICS
    unigram, last = None, {}
    if not path.is_file():
        return unigram, last
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if "unigram_val_loss" in rec:
            unigram = rec["unigram_val_loss"]
        evaluated = {k: v for k, v in rec.items() if k.startswith(("val_", "long_val_"))}
        if evaluated:
            last = evaluated
    return unigram, last


class MetricsLog:
    """``metrics.jsonl`` (one JSON record per line, main process only) and the trackers."""

    def __init__(self, out: Path, accelerator) -> None:
        self.path = out / METRICS
        self.accelerator = accelerator

    def start(self, step: int, config: dict, project: str) -> None:
        """Write ``config.yaml``, drop records made after ``step`` by an earlier attempt, start the trackers."""
        import yaml

        if self.accelerator.is_main_process:
            (self.path.parent / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            trim_metrics(self.path.parent, step)
            self.accelerator.init_trackers(project, config={"out_dir": str(self.path.parent)})

    def __call__(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.accelerator.log(numbers, step=record["step"])
