"""CPU rehearsal of benchmarks/gpu_gated_delta.py: its check and timing functions run end to end at tiny shapes
with the chunk backend and a fake timer, so the GPU run is not the first time they execute."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

TINY = {"batch": 2, "T": 70, "H": 2, "K": 9, "V": 11}
CASES = ("unsigned", "signed", "edges", "varlen", "delta_product")


def _load():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_gated_delta.py"
    spec = importlib.util.spec_from_file_location("gpu_gated_delta", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_runs_on_cpu_and_chunk_is_exact():
    result = _load().check_gated_delta(torch.device("cpu"), torch.float32, backend="chunk", shape=TINY)
    assert result["ok"], result
    for case in CASES:
        errs = result[case]["rel_rmse"]
        expected = {"out", "final_state", "d_q", "d_k", "d_v", "d_beta", "d_initial_state", "d_alpha"}
        assert set(errs) == expected, (case, errs)
        assert max(errs.values()) < 1e-5, (case, result[case])


def test_check_bf16_inputs_on_cpu():
    result = _load().check_gated_delta("cpu", torch.bfloat16, backend="chunk", shape=dict(TINY, T=20))
    assert result["ok"], result


def test_time_runs_on_cpu_with_a_fake_timer():
    calls = []

    def fake_timer(fn):
        fn()
        calls.append(fn)
        return 0.5 if len(calls) % 2 else 0.25

    result = _load().time_gated_delta("cpu", fake_timer, backend="chunk", shape=TINY, dtype=torch.float32)
    assert len(calls) == 4  # ours signed and unsigned, gated delta rule and DeltaProduct; fla skipped on CPU
    assert result["seconds"]["gated_delta_rule/fla_direct/unsigned"].startswith("skipped")
    assert set(result["ratios"]) == {
        f"{op}/signed_over_unsigned (want <= 1.05)" for op in ("gated_delta_rule", "delta_product")
    }


@pytest.mark.triton_interpret
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 before triton import")
@pytest.mark.usefixtures("triton_interpreter_shims")
def test_check_runs_the_triton_path_under_the_interpreter():
    """The GPU script's triton path (fla's kernels, fp16) end to end at a tiny shape on CPU."""
    pytest.importorskip("fla")
    shape = {"batch": 2, "T": 70, "H": 2, "K": 32, "V": 16}
    result = _load().check_gated_delta(torch.device("cpu"), torch.float16, backend="triton", shape=shape)
    assert result["ok"], result
