"""What a run read, by content: fingerprints of its data files and tokenizer files, saved with every checkpoint.

A config names data and tokenizer by path; the same path can hold other content on resume (a file regenerated, a
tokenizer retrained). The fingerprints catch that: each local file's size, modification time and SHA-256 (of the
whole file up to 16 MiB, else of its first and last MiB, so a glob of thousands of large shards costs 2 MiB of
reading each), and the revision of a Hub source when it can be asked.
A resume compares them with the checkpoint's (:func:`input_changes`); a change is refused unless named:
``--allow_changed=[data]`` (data files), ``--allow_changed=[tokenizer]`` (tokenizer files).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .config import RunConfig

logger = logging.getLogger(__name__)

KEY = "fingerprints"  # their key in a checkpoint's run_config.json
GROUPS = ("data", "tokenizer")  # the names --allow_changed takes for them
WHOLE_LIMIT = 16 << 20
EDGE = 1 << 20


def _sha256(path: Path, ranges: list[tuple[int, int]]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for start, length in ranges:
            f.seek(start)
            while length > 0:
                block = f.read(min(length, 1 << 22))
                if not block:
                    break
                h.update(block)
                length -= len(block)
    return h.hexdigest()


def file_fingerprint(path: str | Path) -> dict:
    """Size, mtime and SHA-256 of ``path`` (whole up to 16 MiB; else of the first and last MiB)."""
    st = os.stat(path)
    whole = st.st_size <= WHOLE_LIMIT
    ranges = [(0, st.st_size)] if whole else [(0, EDGE), (st.st_size - EDGE, EDGE)]
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": _sha256(Path(path), ranges),
        "hashed": "whole" if whole else "first and last MiB",
    }


def hub_revision(repo: str, repo_type: str) -> str | None:
    """The commit a Hub repo's main branch points at now, or None when the Hub cannot be asked (offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().repo_info(repo, repo_type=repo_type, timeout=10).sha
    except Exception:  # offline, private, renamed: the revision is unknown, which the check reports
        return None


def data_fingerprints(cfg: RunConfig) -> dict[str, dict]:
    """``{file: fingerprint}`` for every local training and validation file, ``{hub:name: {revision}}`` else."""
    from .data import local_files

    found = {}
    for src in cfg.data.sources + cfg.data.validation:
        files = local_files(src.path)
        if files is None:
            found[f"hub:{src.path}"] = {"revision": hub_revision(src.path, "dataset")}
        else:
            for f in files:
                found[os.path.abspath(f)] = file_fingerprint(f)
    return found


def tokenizer_fingerprints(tokenizer) -> dict[str, dict]:
    """The files of a tokenizer loaded from a folder (the built-in one is cached in a folder too), or a Hub
    tokenizer's revision and cached files."""
    if tokenizer is None:
        return {}
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    folder = Path(name)
    found = {}
    if not folder.is_dir():
        found[f"hub:{name}"] = {"revision": hub_revision(name, "model")}
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "tokenizer_config.json")
            folder = Path(cached).parent if isinstance(cached, str) else None
        except Exception:
            folder = None
        if folder is None:
            return found
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            found[str(f.resolve())] = file_fingerprint(f)
    return found


def run_fingerprints(cfg: RunConfig, tokenizer) -> dict[str, dict]:
    return {"data": data_fingerprints(cfg), "tokenizer": tokenizer_fingerprints(tokenizer)}


def _same(old: dict, new: dict) -> bool | None:
    """Whether two fingerprints show the same content (None: cannot tell, a Hub revision unknown)."""
    if "revision" in old or "revision" in new:
        if old.get("revision") is None or new.get("revision") is None:
            return None
        return old["revision"] == new["revision"]
    same = old.get("size") == new.get("size") and old.get("sha256") == new.get("sha256")
    if old.get("hashed") != "whole":  # the middle of a large file is not hashed: a new mtime counts as a change
        same = same and old.get("mtime_ns") == new.get("mtime_ns")
    return same


def _show(fp: dict | None) -> str:
    if fp is None:
        return "<absent>"
    if "revision" in fp:
        return f"revision {fp['revision'] or 'unknown'}"
    return f"{fp['size']} bytes, sha256 {fp['sha256'][:12]}"


def input_changes(saved: dict | None, now: dict) -> dict[str, dict[str, tuple[str, str]]]:
    """``{group: {file: (saved, now)}}`` for each data or tokenizer file whose content differs, or that was added
    or removed. ``saved`` None (a checkpoint from before fingerprints) compares as unchanged, with a warning."""
    if saved is None:
        logger.warning("the checkpoint records no data or tokenizer fingerprints (older train.py); not compared")
        return {}
    changes: dict[str, dict] = {}
    for group in GROUPS:
        old, new = saved.get(group, {}), now.get(group, {})
        for key in sorted(set(old) | set(new)):
            same = _same(old[key], new[key]) if key in old and key in new else False
            if same is None:
                logger.warning("%s %s: revision unknown now or then; not compared", group, key)
            elif not same:
                changes.setdefault(group, {})[key] = (_show(old.get(key)), _show(new.get(key)))
    return changes
