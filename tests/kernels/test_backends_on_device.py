"""Every fast backend of every op against its ``naive`` reference on the test device (``--device``), through the
shared harness (:mod:`lrnn_lm.kernels.testing`): output, final state and every gradient, in both eigenvalue ranges,
with edge gates and with packed sequences, for fp32 and bf16 inputs (tolerances per dtype in ``tests/device.py``).

On the CPU the fast backend is ``chunk``; with ``--device cuda`` also ``triton`` and ``auto``. This is the GPU's
correctness check: ``python -m pytest --device cuda -m "not slow"``."""

from __future__ import annotations

import functools

import pytest
import torch

from lrnn_lm import kernels
from lrnn_lm.kernels.fla_compat import GATED_FLA_OPS, gated_backward_refusal
from lrnn_lm.kernels.testing import FLAGGED, POSITIONAL, clone_leaves, compare, make_inputs, outputs_and_grads

from ..device import device, fast_backends, on_cuda, resolved, tolerance

# Odd sizes, several chunks; the delta rules' K and V where fla's kernels accept them on a GPU (multiples of 16
# there; odd on the CPU, where chunk takes anything).
SHAPES = {
    "selective_scan": dict(batch=2, T=130, d=24, N=7),
    "ssd": dict(batch=2, T=130, H=3, P=16, N=16, G=1),
    "delta_rule": dict(batch=2, T=130, H=2, K=32, V=48),
    "gated_delta_rule": dict(batch=2, T=130, H=2, K=32, V=48),
    "delta_product": dict(batch=2, T=130, H=2, K=32, V=48, n_h=2),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _op(op: str, backend: str, signed: bool):
    fn = functools.partial(getattr(kernels, op), backend=backend)
    return functools.partial(fn, negative_eigvals=signed) if op in FLAGGED else fn


def _skip_if_refused(op: str, backend: str) -> None:
    if op in GATED_FLA_OPS and resolved(backend) == "triton":
        why = gated_backward_refusal(device())
        if why:
            pytest.skip(f"fla refuses this machine's gated backward: {why}")


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("gates", ["random", "edges"])
@pytest.mark.parametrize("signed", [False, True], ids=["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("backend", fast_backends())
@pytest.mark.parametrize("op", list(SHAPES))
def test_fast_backend_matches_naive(op, backend, signed, gates, dtype):
    _skip_if_refused(op, backend)
    dt = DTYPES[dtype]
    inputs = make_inputs(op, SHAPES[op], signed=signed, dtype=dt, device=device(), gates=gates)
    got = outputs_and_grads(_op(op, backend, signed), inputs, POSITIONAL[op])
    ref = outputs_and_grads(_op(op, "naive", signed), clone_leaves(inputs), POSITIONAL[op])
    assert got["out"].device.type == device().type and got["out"].dtype == dt
    assert got["state"].dtype == torch.float32, "the recurrent state stays fp32 whatever the inputs"
    compare(got, ref, tolerance(backend, dt))


@pytest.mark.parametrize("signed", [False, True], ids=["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("backend", fast_backends())
@pytest.mark.parametrize("op", list(SHAPES))
def test_packed_sequences_match_naive(op, backend, signed):
    """Three sequences of lengths 37, 1 and 70 packed into one row (``cu_seqlens``), each with its own initial
    state, against naive on the same packed call (naive itself is checked against separate calls elsewhere)."""
    _skip_if_refused(op, backend)
    shape = dict(SHAPES[op], batch=1, T=108)
    inputs = make_inputs(op, shape, signed=signed, device=device(), n_states=3)
    cu = torch.tensor([0, 37, 38, 108], device=device())
    got = outputs_and_grads(_op(op, backend, signed), inputs, POSITIONAL[op], cu_seqlens=cu)
    ref = outputs_and_grads(_op(op, "naive", signed), clone_leaves(inputs), POSITIONAL[op], cu_seqlens=cu)
    assert got["state"].shape[0] == 3
    compare(got, ref, tolerance(backend, torch.float32))


def test_the_device_is_the_one_asked_for():
    """``--device cuda`` must run on the GPU and test triton there; the default must stay on the CPU."""
    x = make_inputs("delta_rule", SHAPES["delta_rule"], signed=True, device=device())["q"]
    assert x.device.type == ("cuda" if on_cuda() else "cpu")
    assert ("triton" in fast_backends()) == on_cuda()
