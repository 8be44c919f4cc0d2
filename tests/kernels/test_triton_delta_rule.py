"""Triton delta rule (fla's kernels behind our API) against the naive reference, under the Triton interpreter.

Run with ``TRITON_INTERPRET=1 python -m pytest -m triton_interpret tests/kernels``. fla's kernels are autotuned
and index with loop variables, so these tests use the ``triton_interpreter_shims`` fixture (``conftest.py``),
which patches the interpreter only for the duration of each test.

Every comparison is against :func:`delta_rule_naive` (fp32 on the same rounded inputs): outputs, final states
and the gradients of q, k, v, beta and the initial state, with ``beta`` in (0, 2) (the signed variant).

What is checked, and with which relative-RMSE tolerance:

- fp16, ``T > 1`` (fla's ``chunk_delta_rule``): 5e-3, about 10 fp16 unit roundoffs (2**-11); fla keeps
  intermediates (WY factors, per-chunk states, corrected values) in the input dtype. fla's own tests
  compare this op with 6e-3 (outputs) and 8e-3 (gradients) in the same metric.
- fp16 and bf16, ``T == 1`` (a decode step, ``fused_recurrent_delta_rule``): 5e-3 and 1e-2. The kernel computes
  in fp32 but rounds its results, and the corrected values it saves for the backward, to the input dtype
  (one bf16 ulp is 3.9e-3 relative). The interpreter converts fp32 to bf16 by truncation where the GPU
  rounds to nearest, which adds up to one more ulp: bf16 dk measured 8.4e-3 here (4.0e-3 with a
  round-to-nearest cast patched in for an experiment).
- fp32 at any ``T`` (``fused_recurrent_delta_rule``, the documented fp32 policy): 1e-5.

Not checkable here: **bf16 with T > 1** (``chunk_delta_rule`` in bf16). The interpreter stores bf16 as raw
uint16 and runs numpy arithmetic, including ``tl.dot``, on the bit patterns, so the results are garbage
(relative errors around 1e10) whatever the kernel does. That path is checked on a GPU by
``python -m pytest --device cuda`` (``test_backends_on_device.py``).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm.kernels.testing import assert_close

from .inputs import check_against_naive
from .triton_interpreter import interpreter_only_marks

pytestmark = interpreter_only_marks(fla_shims=True)
pytest.importorskip("fla", reason="flash-linear-attention (fla) is not installed")

CHUNK_TOL = {torch.float16: 5e-3}
DECODE_TOL = {torch.float16: 5e-3, torch.bfloat16: 1e-2}
FP32_TOL = 1e-5
POS = ("q", "k", "v", "beta")


def _inputs(batch, T, H, K, V, *, dtype, seed=0, with_h0=True, n_seq=None):
    """Leaf tensors in ``dtype`` (unit-norm ``k``, ``beta`` in (0, 2)); the state in fp32."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, T, H, K, generator=g)
    k = F.normalize(torch.randn(batch, T, H, K, generator=g), dim=-1)
    v = torch.randn(batch, T, H, V, generator=g)
    beta = 2 * torch.rand(batch, T, H, generator=g)
    h0 = torch.randn(n_seq or batch, H, K, V, generator=g) if with_h0 else None
    out = {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype), "beta": beta.to(dtype), "initial_state": h0}
    return {name: (t.requires_grad_() if t is not None else None) for name, t in out.items()}


def _check(inputs, tol, *, cu_seqlens=None):
    from lrnn_lm.kernels import delta_rule
    from lrnn_lm.kernels.delta_rule.triton import delta_rule_triton

    # The reference is the public op with backend="naive": the dispatcher runs packed sequences one by one.
    naive = functools.partial(delta_rule, backend="naive")
    check_against_naive(delta_rule_triton, naive, inputs, POS, tol, "v", cu_seqlens=cu_seqlens)


# K != V so that a transposed state layout would fail.
@pytest.mark.parametrize("T", [17, 100])
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0=0", "h0"])
def test_chunk_fp16(with_h0, T):
    _check(_inputs(2, T, 2, 32, 16, dtype=torch.float16, with_h0=with_h0, seed=T), CHUNK_TOL[torch.float16])


def test_chunk_fp16_cu_seqlens():
    cu = torch.tensor([0, 30, 100, 130], dtype=torch.int32)
    inputs = _inputs(1, 130, 2, 32, 16, dtype=torch.float16, n_seq=3)
    _check(inputs, CHUNK_TOL[torch.float16], cu_seqlens=cu)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_decode_step(dtype):
    _check(_inputs(3, 1, 2, 32, 16, dtype=dtype), DECODE_TOL[dtype])


def test_chunk_fp16_single_token_sequences():
    # Three length-1 sequences packed: T == 3, so this runs the chunk op (the decode op is chosen by T == 1 only).
    cu = torch.tensor([0, 1, 2, 3], dtype=torch.int64)
    inputs = _inputs(1, 3, 2, 32, 16, dtype=torch.float16, n_seq=3)
    _check(inputs, CHUNK_TOL[torch.float16], cu_seqlens=cu)


@pytest.mark.parametrize("T", [1, 37])
def test_fp32_runs_fused_recurrent(T):
    _check(_inputs(2, T, 2, 32, 16, dtype=torch.float32), FP32_TOL)


def test_fp32_cu_seqlens():
    cu = torch.tensor([0, 9, 9, 40], dtype=torch.int32)
    _check(_inputs(1, 40, 2, 32, 16, dtype=torch.float32, n_seq=3), FP32_TOL, cu_seqlens=cu)


def test_public_api_dispatches_to_triton():
    from lrnn_lm.kernels import delta_rule

    inputs = {k: v.detach() for k, v in _inputs(2, 40, 2, 32, 16, dtype=torch.float16).items()}
    args = [inputs[k] for k in ("q", "k", "v", "beta")]
    kw = dict(initial_state=inputs["initial_state"], output_final_state=True)
    o, S = delta_rule(*args, backend="triton", **kw)
    o_ref, S_ref = delta_rule(*args, backend="naive", **kw)
    assert_close(o, o_ref, CHUNK_TOL[torch.float16], "o")
    assert_close(S, S_ref, CHUNK_TOL[torch.float16], "final_state")
