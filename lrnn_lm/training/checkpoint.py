"""Atomic, verifiable checkpoints on top of ``accelerator.save_state``.

A checkpoint is written into a temporary folder, every file is fsynced and listed with its size and
SHA-256 in ``manifest.json``, and only then is the folder renamed to ``step-NNNNNNNN``. A folder without a
valid manifest, or whose files do not match it (truncated or corrupt), is refused on resume and the
previous checkpoint is used instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def finalize(tmp: Path, final: Path, step: int, meta: dict | None = None) -> None:
    """Fsync and hash every file of ``tmp``, write the manifest, then atomically rename it to ``final``.

    ``meta`` (the run id, the world size) goes into the manifest next to the step and the file list.
    """
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[str(path.relative_to(tmp))] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = tmp / MANIFEST
    with open(manifest, "w") as f:
        json.dump({"step": step, **(meta or {}), "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for d in sorted({p.parent for p in tmp.rglob("*")} | {tmp}, key=lambda p: -len(p.parts)):
        _fsync_dir(d)
    if final.exists():
        # Only this run's own folder of that step (a restart of the run from an earlier step) is replaced.
        if run_id_of(final) not in (None, (meta or {}).get("run_id")):
            raise CheckpointError(f"{final} belongs to run {run_id_of(final)}; not replacing it")
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def verify(path: Path) -> int:
    """Return the step of a complete, intact checkpoint, or raise :class:`CheckpointError` saying why not."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST} (the write never finished)")
    try:
        meta = json.loads(manifest.read_text())
        files = meta["files"]
        step = int(meta["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable {MANIFEST}: {e}") from e
    for rel, info in files.items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{path}: missing file {rel}")
        if f.stat().st_size != info["size"]:
            raise CheckpointError(f"{path}: {rel} has {f.stat().st_size} bytes, expected {info['size']} (truncated)")
        if _sha256(f) != info["sha256"]:
            raise CheckpointError(f"{path}: {rel} does not match its checksum (corrupt)")
    return step


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``, newest first (complete or not)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def newest_valid(root: Path, run_id: str | None = None) -> Path | None:
    """The newest checkpoint (of run ``run_id`` when given) that passes :func:`verify`, logging why newer ones
    were refused."""
    for path in list_checkpoints(root):
        if run_id is not None and run_id_of(path) not in (run_id, None):
            logger.warning("ignoring checkpoint %s: it belongs to run %s, not %s", path, run_id_of(path), run_id)
            continue
        try:
            verify(path)
            return path
        except CheckpointError as e:
            logger.warning("refusing checkpoint: %s; trying the previous one", e)
    return None


def run_id_of(path: Path) -> str | None:
    """The run id in a checkpoint's manifest, or None when unreadable."""
    try:
        run_id = json.loads((path / MANIFEST).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) else None


def prune(root: Path, keep_last: int, run_id: str) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints of run ``run_id``, and stale temporary
    folders. Checkpoints of any other run (or unreadable ones) are never deleted."""
    own = [p for p in list_checkpoints(root) if run_id_of(p) == run_id]
    for old in own[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


RUN_CONFIG = "run_config.json"


def trainer_state_name(rank: int) -> str:
    return f"trainer_state_rank{rank}.json"


def save(
    accelerator, root: Path, step: int, trainer_state: dict, run_id: str, run_config: dict, keep_last: int
) -> Path:
    """Write checkpoint ``step`` of run ``run_id`` from every process (accelerate's state, each process's
    ``trainer_state``, the run config), finalize it atomically, then prune this run's older ones."""
    name = checkpoint_name(step)
    tmp = root / f".tmp-{name}"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    (tmp / trainer_state_name(accelerator.process_index)).write_text(json.dumps(trainer_state))
    if main:
        (tmp / RUN_CONFIG).write_text(json.dumps(run_config, indent=1))
    accelerator.wait_for_everyone()
    if main:
        finalize(tmp, root / name, step, {"run_id": run_id, "world_size": accelerator.num_processes})
        prune(root, keep_last, run_id)
    accelerator.wait_for_everyone()
    return root / name


def load_json(path: Path, name: str) -> dict:
    """A JSON file of a verified checkpoint (``trainer_state_rank{r}.json``, ``run_config.json``, the manifest)."""
    try:
        data = json.loads((path / name).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read {name}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {name} is not a JSON object")
    return data
