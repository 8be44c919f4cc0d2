"""``use_qk_l2norm_in_kernel`` on the Triton backends (fla's fused l2norm) against naive with the option, under the
interpreter: unnormalised q and k, beta in (0, 2), B 2, outputs, final states and every gradient.

fp16 chunk kernels at 5e-3 and fp32 (fla's fused recurrent op) at 1e-5 relative RMSE, the tolerances of
test_triton_delta_rule.py; bf16 is untestable under the interpreter (see there).
"""

from __future__ import annotations

import functools

import pytest
import torch

from .inputs import check_against_naive
from .test_qk_l2norm import OPS, _inputs, _positional
from .triton_interpreter import interpreter_only_marks

pytestmark = interpreter_only_marks(fla_shims=True)
pytest.importorskip("fla", reason="flash-linear-attention (fla) is not installed")


def _cast(inputs, dtype):
    return {
        n: (t.detach().to(dtype if n in ("q", "k", "v") else t.dtype).requires_grad_() if t is not None else None)
        for n, t in inputs.items()
    }


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("dtype, T, tol", [(torch.float16, 40, 5e-3), (torch.float32, 9, 1e-5)])
def test_triton_option_matches_naive(op, dtype, T, tol):
    if op != "delta_rule" and dtype == torch.float32:
        pytest.skip("fla's gated ops run the chunk kernel for training, which refuses fp32")
    inputs = _cast(_inputs(op, T=T, H=2, K=16, V=16), dtype)
    if op != "delta_rule":
        inputs["alpha"] = (inputs["alpha"].detach().abs() * 0.5 + 0.5).requires_grad_()  # away from the exact path
    fn = functools.partial(OPS[op], backend="triton", use_qk_l2norm_in_kernel=True)
    naive = functools.partial(OPS[op], backend="naive", use_qk_l2norm_in_kernel=True)
    check_against_naive(fn, naive, inputs, _positional(op), tol, "v")


@pytest.mark.parametrize("op", ["gated_delta_rule", "delta_product"])
def test_triton_option_with_edge_gates_takes_the_exact_gate_path(op):
    # Gates of exactly -1, 0 and 1: the exact gate gradient runs, and q and k are normalised before it.
    inputs = _cast(_inputs(op, T=40, H=2, K=16, V=16, alpha="edges"), torch.float16)
    fn = functools.partial(OPS[op], backend="triton", use_qk_l2norm_in_kernel=True)
    naive = functools.partial(OPS[op], backend="naive", use_qk_l2norm_in_kernel=True)
    check_against_naive(fn, naive, inputs, _positional(op), 5e-3, "v")
