"""How a run starts: fresh in an unused folder, or resumed from a verified checkpoint of the same run.

Every process decides the same way from the same files; only the main process then changes the folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint as ckpt
from . import run_dir
from .run_dir import RunDirError

logger = logging.getLogger(__name__)


@dataclass
class Start:
    """Where the run starts: its id, and the checkpoint to load (None: step 0)."""

    run_id: str
    checkpoint: Path | None
    overwrite: str = "no"  # "move" / "delete": the main process clears the used folder first


def plan_start(out: Path, resume: str, overwrite: str) -> Start:
    """Decide, without changing anything, how the run in ``out`` starts; raise with the choices when it cannot."""
    if resume == "none":
        if overwrite == "no":
            run_dir.refuse_used(out)
        return Start(run_dir.new_run_id(), None, overwrite)
    if resume == "auto":
        if not run_dir.is_used(out):
            logger.info("resume=auto: %s holds no run yet, starting fresh", out)
            return Start(run_dir.new_run_id(), None)
        run_id = run_dir.read_run_id(out)
        if run_id is None:
            raise RunDirError(
                f"resume=auto: {out} holds files but no {run_dir.RUN_FILE}, so it is not a run of this train.py; "
                "resuming into it could mix runs. Use a new --out_dir, or --overwrite=move with --resume=none."
            )
        found = ckpt.newest_valid(out / "checkpoints", run_id)
        if found is None:
            logger.warning("resume=auto: no usable checkpoint of run %s in %s; restarting it from step 0", run_id, out)
        return Start(run_id, found)
    path = Path(resume)
    try:
        ckpt.verify(path)
    except ckpt.CheckpointError as e:
        raise ckpt.CheckpointError(f"--resume {path}: refusing this checkpoint: {e}") from e
    run_id = ckpt.run_id_of(path) or run_dir.new_run_id()
    if run_dir.is_used(out) and run_dir.read_run_id(out) != run_id:
        raise RunDirError(
            f"--resume {path}: out_dir {out} holds another run ({run_dir.read_run_id(out)}), not the checkpoint's "
            f"run {run_id}; continuing there would mix the two. Use an empty --out_dir."
        )
    return Start(run_id, path)


def prepare_out_dir(out: Path, start: Start, accelerator) -> None:
    """Apply the plan on the main process (clear a used folder if asked, record the run id); all wait."""
    accelerator.wait_for_everyone()  # every process has read the folder before anyone changes it
    if accelerator.is_main_process:
        if start.overwrite != "no":
            run_dir.clear_aside(out, start.overwrite)
        run_dir.claim(out, start.run_id)
    accelerator.wait_for_everyone()
