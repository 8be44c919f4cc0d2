"""``--device``: the CPU is the default, and asking for a GPU where there is none stops pytest with a message
instead of quietly testing the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from . import device as test_device

ROOT = Path(__file__).resolve().parents[1]


def _collect(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "--collect-only", *args, "tests/kernels/test_backends_on_device.py"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_default_device_is_the_cpu():
    r = _collect()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "lrnn-lm test device: cpu (cpu); fast backends: chunk\n" in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda is valid here")
def test_cuda_without_a_gpu_is_an_error_not_a_cpu_run():
    r = _collect("--device", "cuda")
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]  # pytest's usage-error status
    assert "--device cuda: torch sees no CUDA device" in r.stderr
    assert "collected" not in r.stdout


def test_tolerances_are_stated_for_every_backend_and_dtype_tested():
    for backend in ("chunk", "triton", "auto"):
        for dtype in (torch.float32, torch.bfloat16):
            assert test_device.TOL[test_device.resolved(backend), dtype] > 0
    assert test_device.TOL["chunk", torch.float32] < test_device.TOL["chunk", torch.bfloat16]
