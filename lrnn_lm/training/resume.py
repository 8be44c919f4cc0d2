"""How a run starts: fresh in an unused folder, or resumed from a verified checkpoint of the same run.

Every process decides the same way from the same files; only the main process then changes the folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint as ckpt
from . import fingerprint, run_dir
from .config import completed_with_defaults
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
        ckpt.remove_temporary(out / "checkpoints")  # a write cut short (kill, full disk) gives its space back
        run_dir.claim(out, start.run_id)
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- what may change on resume
# Fields that may change freely on resume: how long to run, how often to log, evaluate and checkpoint, where to
# log. (A new max_steps also stretches the lr schedule from the resumed step on.)
SAFE_TO_CHANGE = (
    "out_dir",
    "resume",
    "overwrite",
    "allow_changed",
    "resume_inexact",
    "train.max_steps",
    "train.max_minutes",
    "train.eval_every",
    "train.eval_batches",
    "train.log_every",
    "train.threads",
    "train.max_consecutive_nonfinite",
    "data.task.val_lengths",  # the long-length validation stream is scored, never trained on
    "data.task.val_seed",
    "data.task.val_num",
    "checkpoint.every",
    "checkpoint.keep_last",
    "logging",
)
# Fields that are never changed on resume, flag or not: they define the model, the data stream and its position,
# the tokens, and the optimizer state's shape (its parameter groups follow the model). A changed one is a new run.
NEVER_CHANGE = (
    "model",
    "tokenizer",
    "data.sources",
    "data.task",
    "data.seq_len",
    "data.reset_state_at_doc_boundary",
    "data.shuffle_buffer",
    "train.micro_batch_size",
    "train.tokens_per_step",
    "train.seed",
)
# Everything else (optim.lr and the other AdamW and schedule settings, train.precision, data.validation) may
# change only when named in --allow_changed=[key,...]; the change is recorded in metrics.jsonl.


class ResumeError(RuntimeError):
    """The checkpoint cannot continue this run as configured; the message says what differs and what to do."""


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_changes(saved: dict, new: dict) -> dict[str, tuple]:
    """``{dotted key: (saved value, new value)}`` for every field that differs (lists compared whole)."""
    a, b = _flatten(saved), _flatten(new)
    missing = "<absent>"
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def defining_changes(saved: dict, new: dict) -> dict[str, tuple]:
    """The changes of :func:`config_changes` outside :data:`SAFE_TO_CHANGE`: those that make ``new`` another run.

    ``saved`` may come from an older version: fields added since count at their defaults."""
    changes = config_changes(completed_with_defaults(saved), new)
    return {k: v for k, v in changes.items() if not _under(k, SAFE_TO_CHANGE)}


def check_changes(saved: dict, new: dict, allowed: list[str]) -> dict[str, tuple]:
    """Refuse a resume whose config differs in a field that may not change; return the allowed changes."""
    changes = defining_changes(saved, new)
    never = {k: v for k, v in changes.items() if _under(k, NEVER_CHANGE)}
    unnamed = {k: v for k, v in changes.items() if k not in never and not _under(k, tuple(allowed))}

    def diff(items: dict) -> str:
        return "\n".join(f"  {k}: {old!r} -> {new_!r}" for k, (old, new_) in items.items())

    if never:
        raise ResumeError(
            "the checkpoint's run had a different model, data, tokenizer or batch; resuming would silently "
            f"train another run on its weights:\n{diff(never)}\nStart a new run (a new --out_dir), or resume with "
            "the saved values (they are in the checkpoint's run_config.json and in config.yaml)."
        )
    if unnamed:
        keys = ",".join(unnamed)
        raise ResumeError(
            f"the config differs from the checkpoint's:\n{diff(unnamed)}\nIf that is intended, name the fields: "
            f"--allow_changed=[{keys}] (the change is recorded in metrics.jsonl). Fields that may change freely: "
            f"{', '.join(SAFE_TO_CHANGE)}."
        )
    return changes


def check_world_size(saved: int, world: int) -> None:
    if saved != world:
        raise ResumeError(
            f"the checkpoint was written by {saved} processes and this run has {world}. Each process saved its own "
            f"data position (trainer_state_rank*.json), and re-sharding would repeat or skip documents, so resume "
            f"with {saved} processes."
        )


def load_random_states(path: Path) -> dict:
    """The random states accelerate saved in ``path``, unpickled with ``weights_only=True``: only tensors, numbers,
    containers and the numpy types a generator state needs (the allow-list accelerate itself loads them with) are
    rebuilt, so a planted pickle cannot run code. A file that asks for anything else raises
    :class:`~lrnn_lm.training.checkpoint.CheckpointError` naming it; an unreadable one raises as torch does."""
    import pickle

    import torch
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    try:
        with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):
            states = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e.__context__ or e)
        if "GLOBAL" in reason:  # the pickle names a function or class outside the allow-list: it wants to run code
            raise ckpt.CheckpointError(
                f"{path}: refusing to unpickle it: it holds more than random states ({reason.strip()}); a "
                "checkpoint never runs code on resume. Delete this checkpoint or resume from another one."
            ) from None
        raise
    if not isinstance(states, dict):
        raise ckpt.CheckpointError(f"{path}: not a dict of random states")
    return states


def _dcp_metadata_global(module: str, name: str):
    """What a sharded (FSDP/DCP) checkpoint's ``.metadata`` pickle may name: DCP's own metadata classes, torch
    dtypes and ``Size``, a path; anything else (a function such as ``os.system``) is refused."""
    import importlib

    import torch

    if module in ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem"):
        obj = getattr(importlib.import_module(module), name, None)
        if isinstance(obj, type) and obj.__module__ == module:
            return obj
    if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
        return getattr(torch, name)
    if (module, name) == ("torch.serialization", "_get_layout"):
        return torch.serialization._get_layout
    if module == "pathlib" and name in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"):
        return getattr(importlib.import_module(module), name)
    return None


def check_dcp_metadata(path: Path) -> None:
    """Read a DCP ``.metadata`` file (torch reads it with plain ``pickle.load``) with only the globals it needs,
    so that a planted one is refused, naming the file, before torch unpickles it."""
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            found = _dcp_metadata_global(module, name)
            if found is None:
                raise ckpt.CheckpointError(
                    f"{path}: refusing to unpickle it: it names {module}.{name}, which a sharded checkpoint's "
                    "metadata never holds; a checkpoint never runs code on resume"
                )
            return found

    with open(path, "rb") as f:
        try:
            Restricted(f).load()
        except ckpt.CheckpointError:
            raise
        except Exception as e:
            raise ckpt.CheckpointError(f"{path}: unreadable sharded-checkpoint metadata: {e}") from None


def check_pickles(checkpoint: Path, world: int) -> None:
    """Refuse a checkpoint whose pickles ask to run code, before accelerate or torch read any of them: the
    random states of every process, and the metadata of a sharded (FSDP) layout."""
    for meta in sorted(checkpoint.rglob(".metadata")):
        check_dcp_metadata(meta)
    for rank in range(world):
        try:
            load_random_states(checkpoint / f"random_states_{rank}.pkl")
        except ckpt.CheckpointError:
            raise
        except Exception:  # unreadable states: load() reports them as a resume that cannot be exact
            pass


def random_states_restored(checkpoint: Path, rank: int) -> bool:
    """Whether ``accelerator.load_state`` really restored this process's random states (it only logs a failure):
    the current torch and Python generator states must equal the saved ones."""
    import random

    import torch

    try:
        saved = load_random_states(checkpoint / f"random_states_{rank}.pkl")
        torch_ok = torch.equal(torch.get_rng_state(), saved["torch_manual_seed"])
        return bool(torch_ok and random.getstate() == saved["random_state"])
    except Exception:  # unreadable or missing states all mean the same: no exact resume
        return False


def check_resume(checkpoint: Path, cfg_dict: dict, world: int, allowed: list[str]) -> dict[str, tuple]:
    """All checks a verified checkpoint must pass before it continues this run; returns the allowed changes."""
    check_world_size(ckpt.read_manifest(checkpoint)["world_size"], world)
    check_pickles(checkpoint, world)
    saved = ckpt.load_json(checkpoint, ckpt.RUN_CONFIG)
    saved.pop(fingerprint.KEY, None)  # compared by check_inputs, once the tokenizer is loaded
    # "data" and "tokenizer" in --allow_changed name changed file content, not config sections.
    return check_changes(saved, cfg_dict, [a for a in allowed if a not in fingerprint.GROUPS])


def check_inputs(checkpoint: Path, now: dict, allowed: list[str]) -> dict[str, tuple]:
    """Refuse a resume whose data or tokenizer files changed content since the checkpoint, unless the group is
    named in ``--allow_changed``; return the allowed changes as ``{"data:<file>": (then, now)}``."""
    saved = ckpt.load_json(checkpoint, ckpt.RUN_CONFIG).get(fingerprint.KEY)
    changes = fingerprint.input_changes(saved, now)
    refused = {g: files for g, files in changes.items() if g not in allowed}
    if refused:
        lines = [f"  {g} file {f}: {old} -> {new}" for g, files in refused.items() for f, (old, new) in files.items()]
        raise ResumeError(
            "the content of files this run reads changed since the checkpoint (same paths, other bytes):\n"
            + "\n".join(lines)
            + f"\nRestore them, or, if the change is intended, name it: --allow_changed=[{','.join(refused)}] "
            "(recorded in metrics.jsonl; the resume is then not exact)."
        )
    return {f"{g}:{f}": pair for g, files in changes.items() for f, pair in files.items()}


@dataclass
class Counters:
    """The loop's position: saved with every checkpoint (``trainer_state_rank{r}.json``) with the data position."""

    step: int = 0
    tokens_seen: int = 0
    skipped_nonfinite: int = 0
    train_seconds: float = 0.0  # wall time of the training loop up to the checkpoint, over every process


def load(accelerator, checkpoint: Path, train_data, inexact_ok: bool) -> tuple[Counters, bool]:
    """Load a checked checkpoint into the prepared model and optimizer and ``train_data``; refuse (unless
    ``inexact_ok``) when the random states were not restored. Returns the counters and whether it was exact."""
    from accelerate.utils import gather_object

    accelerator.load_state(str(checkpoint))
    exact = all(gather_object([random_states_restored(checkpoint, accelerator.process_index)]))
    if not exact and not inexact_ok:
        raise ResumeError(
            f"{checkpoint}: accelerate could not restore the random states, so this resume would not be exact. "
            "Pass --resume_inexact=true to continue anyway (recorded in metrics.jsonl)."
        )
    state = ckpt.load_json(checkpoint, ckpt.trainer_state_name(accelerator.process_index))
    train_data.load_state_dict(state["data"])
    # Checkpoints written before train_seconds was recorded resume with 0 (their earlier time is unknown).
    counters = Counters(
        state["step"], state["tokens_seen"], state["skipped_nonfinite"], state.get("train_seconds", 0.0)
    )
    logger.info("resumed from %s at step %d%s", checkpoint, counters.step, "" if exact else " (NOT exact)")
    return counters, exact
