"""What a clone of the repository must not depend on: no tracked file points outside the repository (a path of
one machine or a sibling folder a clone does not have), configs and benchmarks cite no issue tracker users cannot
see, and a config's comments stay a short note (the reasoning behind the CPU recipes is in
docs/state_tracking.md)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Built from parts so this file does not match itself.
OUTSIDE = re.compile("|".join(["\\.\\./" + "shared", "shared/" + "notes", "/" + "work/", "/" + "root/", "/" + "home/"]))
# Raw outputs of past GPU runs: their tracebacks name the paths of the machine they ran on. They are records,
# kept as they came back, and nothing in them is a reference a reader follows.
RECORDS = ("docs/gpu_runs/",)


def _tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an installed copy): the tracked files are unknown")
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


def _text(path: str) -> str | None:
    data = (ROOT / path).read_bytes()
    return None if b"\0" in data[:4096] else data.decode("utf-8", errors="replace")


def test_no_tracked_file_names_a_path_outside_the_repository():
    hits = []
    for path in _tracked():
        text = None if path.startswith(RECORDS) else _text(path)
        for n, line in enumerate((text or "").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path}:{n}: {line.strip()[:100]}")
    assert not hits, "paths outside the repository:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_is_for():
    for bad in ("see ../" + "shared/x.md", "shared/" + "notes/a.md", "/" + "work/main/x", "/" + "root/out"):
        assert OUTSIDE.search(bad), bad
    assert not OUTSIDE.search("docs/signed_chunking.md and /tmp/scratch")


def test_configs_and_benchmarks_cite_no_issue_tracker():
    hits = [
        f"{p}:{n}"
        for p in _tracked()
        if p.startswith(("configs/", "benchmarks/")) and not p.endswith(".jsonl")
        for n, line in enumerate((_text(p) or "").splitlines(), 1)
        if re.search(r"\bissue\b(?! #\d)|\bissues? \d", line, flags=re.IGNORECASE) and "fla issue" not in line
    ]
    assert not hits, hits


@pytest.mark.parametrize("folder", ["train", "state_tracking", "sweeps", "accelerate"])
def test_config_comments_are_at_most_three_lines(folder):
    long = {}
    for path in sorted((ROOT / "configs" / folder).glob("*.yaml")):
        n = sum(line.lstrip().startswith("#") for line in path.read_text().splitlines())
        if n > 3:
            long[path.name] = n
    assert not long, f"configs/{folder}: comment lines per file {long} (move the reasoning to docs/)"


def test_the_package_never_climbs_out_of_itself():
    """An installed ``lrnn_lm`` has no repository around it: the library finds train.py, configs and task folders
    from the working directory or from arguments, never from ``Path(__file__).parents``."""
    climbing = re.compile(r"__file__\)?(\.resolve\(\))?\.parents?\b")
    hits = [
        f"{p}:{n}"
        for p in _tracked()
        if p.startswith(("lrnn_lm/", "kernels/")) and p.endswith(".py")
        for n, line in enumerate((_text(p) or "").splitlines(), 1)
        if climbing.search(line)
    ]
    assert not hits, hits
