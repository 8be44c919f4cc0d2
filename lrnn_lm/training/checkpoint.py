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


def finalize(tmp: Path, final: Path, step: int) -> None:
    """Fsync and hash every file of ``tmp``, write the manifest, then atomically rename it to ``final``."""
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[str(path.relative_to(tmp))] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = tmp / MANIFEST
    with open(manifest, "w") as f:
        json.dump({"step": step, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for d in sorted({p.parent for p in tmp.rglob("*")} | {tmp}, key=lambda p: -len(p.parts)):
        _fsync_dir(d)
    if final.exists():
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


def newest_valid(root: Path) -> Path | None:
    """The newest checkpoint that passes :func:`verify`, logging why newer ones were refused."""
    for path in list_checkpoints(root):
        try:
            verify(path)
            return path
        except CheckpointError as e:
            logger.warning("refusing checkpoint: %s; trying the previous one", e)
    return None


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, and any stale temporary folders."""
    complete = [p for p in list_checkpoints(root) if (p / MANIFEST).is_file()]
    for old in complete[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
