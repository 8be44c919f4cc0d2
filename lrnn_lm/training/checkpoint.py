"""Atomic, verifiable checkpoints on top of ``accelerator.save_state``.

A checkpoint is written into a temporary folder, every file is fsynced and listed with its size and
SHA-256 in ``manifest.json``, and only then is the folder renamed to ``step-NNNNNNNN``. A folder without a
valid manifest, or whose files do not match it (truncated or corrupt), is refused on resume and the
previous checkpoint is used instead.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PREFIX = "step-"
RUN_CONFIG = "run_config.json"


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


def trainer_state_name(rank: int) -> str:
    return f"trainer_state_rank{rank}.json"


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


# Files every checkpoint must hold besides those per process: the weights and the optimizer state in any of
# the layouts accelerate writes (one file, shards, or an FSDP folder), and the run config.
WEIGHTS = re.compile(r"^(model|pytorch_model)[^/]*\.(safetensors|bin)$|^pytorch_model_fsdp_\d+/")
OPTIMIZER = re.compile(r"^optimizer[^/]*\.(bin|pt)$|^optimizer_\d+/")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def required_files(world_size: int) -> set[str]:
    """Per-process files every checkpoint of a ``world_size``-process run holds (plus weights and optimizer)."""
    per_rank = {f"random_states_{r}.pkl" for r in range(world_size)}
    return per_rank | {trainer_state_name(r) for r in range(world_size)} | {RUN_CONFIG}


def _safe_relative(rel: object) -> bool:
    """A plain relative path inside the checkpoint: no absolute path, no ``..``, no empty or ``.`` part."""
    if not isinstance(rel, str) or not rel or "\\" in rel or rel.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def read_manifest(path: Path) -> dict:
    """The manifest of ``path``, checked for shape only; a malformed one raises :class:`CheckpointError`."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST} (the write never finished)")
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable {MANIFEST}: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: malformed {MANIFEST}: not a JSON object")
    step, world, files = meta.get("step"), meta.get("world_size"), meta.get("files")
    if type(step) is not int or step < 0:
        raise CheckpointError(f"{path}: malformed {MANIFEST}: step {step!r}")
    if type(world) is not int or world < 1:
        raise CheckpointError(f"{path}: malformed {MANIFEST}: world_size {world!r} (written by an older train.py?)")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path}: malformed {MANIFEST}: no file list")
    for rel, info in files.items():
        if not _safe_relative(rel) or rel == MANIFEST:
            raise CheckpointError(f"{path}: {MANIFEST} lists {rel!r}, a path outside the checkpoint")
        ok = isinstance(info, dict) and type(info.get("size")) is int and info["size"] >= 0
        if not ok or not isinstance(info.get("sha256"), str) or not SHA256.match(info["sha256"]):
            raise CheckpointError(f"{path}: malformed {MANIFEST} entry for {rel}: {info!r}")
    return meta


def verify(path: Path) -> int:
    """Return the step of a complete, intact checkpoint, or raise :class:`CheckpointError` saying why not.

    The manifest is not trusted on its own: the folder must hold exactly the files it lists (no unlisted or
    missing file, no link, nothing outside the folder), the required set must be there, and each file must
    match its size and SHA-256.
    """
    meta = read_manifest(path)
    step, files = meta["step"], meta["files"]
    if path.name.startswith(PREFIX) and path.name != checkpoint_name(step):
        raise CheckpointError(f"{path}: the manifest says step {step}, the folder name disagrees")
    root = path.resolve()
    on_disk = set()
    for p in path.rglob("*"):
        if p.is_symlink():
            raise CheckpointError(f"{path}: {p.relative_to(path)} is a link; a checkpoint holds plain files only")
        if p.is_file() and p != path / MANIFEST:
            on_disk.add(p.relative_to(path).as_posix())
    unlisted, missing = sorted(on_disk - set(files)), sorted(set(files) - on_disk)
    if unlisted:
        raise CheckpointError(f"{path}: file {unlisted[0]} is not in the manifest (added or replaced later)")
    if missing:
        raise CheckpointError(f"{path}: missing file {missing[0]}")
    absent = sorted(required_files(meta["world_size"]) - set(files))
    if not any(WEIGHTS.match(f) for f in files):
        absent.append("model weights")
    if not any(OPTIMIZER.match(f) for f in files):
        absent.append("optimizer state")
    if absent:
        raise CheckpointError(f"{path}: incomplete checkpoint, no {', '.join(absent)}")
    for rel, info in files.items():
        f = path / rel
        if root not in f.resolve().parents:
            raise CheckpointError(f"{path}: {rel} resolves outside the checkpoint")
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
    remove_temporary(root)


def remove_temporary(root: Path) -> None:
    """Delete unfinished ``.tmp-*`` checkpoint folders (a kill or a full disk mid-write); resume never reads them."""
    for tmp in root.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or its cause) is a full disk or quota: ``ENOSPC``/``EDQUOT``, or torch's zip writer's
    ``unexpected pos`` (its report of a short write)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "unexpected pos" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


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
    try:
        accelerator.save_state(str(tmp))
        (tmp / trainer_state_name(accelerator.process_index)).write_text(json.dumps(trainer_state))
        if main:
            (tmp / RUN_CONFIG).write_text(json.dumps(run_config, indent=1))
        accelerator.wait_for_everyone()
        if main:
            finalize(tmp, root / name, step, {"run_id": run_id, "world_size": accelerator.num_processes})
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)  # the space goes back; resume never reads a .tmp-* folder anyway
        if not disk_full(e):
            raise
        previous = newest_valid(root, run_id)
        intact = (
            f"the previous checkpoint step {verify(previous)} ({previous}) is intact"
            if previous
            else ("there is no earlier checkpoint of this run")
        )
        raise CheckpointError(
            f"disk full while writing checkpoint step {step} in {root}; {intact}. The partial folder was removed. "
            f"Free space, then continue with --resume auto. ({type(e).__name__}: {e})"
        ) from e
    if main:
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
