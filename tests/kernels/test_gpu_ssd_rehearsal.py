"""CPU rehearsal of benchmarks/gpu_ssd.py: its check and timing functions run end to end at tiny shapes with the
chunk backend and a fake timer, so the GPU run is not the first time they execute."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

TINY = {"batch": 2, "T": 70, "H": 2, "P": 4, "N": 3, "G": 1}


def _load():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_ssd.py"
    spec = importlib.util.spec_from_file_location("gpu_ssd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_ssd_runs_on_cpu_and_chunk_is_exact():
    gpu_ssd = _load()
    result = gpu_ssd.check_ssd(torch.device("cpu"), torch.float32, backend="chunk", shape=TINY)
    cases = [k for k in result if "/" in k]
    assert set(cases) == {
        *(f"{g}/{s}" for g in ("random", "edges", "varlen") for s in ("signed", "unsigned")),
        "edges_1e-6/signed",
        "zero_signed/signed",
    }
    for case in cases:
        errs = result[case]
        assert {"out", "state", "grad_x", "grad_dt", "grad_A", "grad_B", "grad_C", "grad_D"} <= set(errs)
        assert max(errs.values()) < 1e-5, (case, errs)


def test_time_ssd_runs_on_cpu_with_a_fake_timer():
    gpu_ssd = _load()
    calls = []

    def fake_timer(fn):
        fn()
        calls.append(fn)
        return 1.0

    result = gpu_ssd.time_ssd(torch.device("cpu"), fake_timer, backend="chunk", shape=TINY, dtype=torch.float32)
    assert len(calls) >= 2 and math.isclose(result["signed_time_over_unsigned"], 1.0)
    assert "mamba_ssm" in result or "ours_unsigned_time_over_mamba_ssm" in result
