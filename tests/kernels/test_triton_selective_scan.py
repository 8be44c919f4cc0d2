"""Triton selective scan against the naive reference, on CPU under the Triton interpreter.

Run with ``TRITON_INTERPRET=1 python -m pytest -m triton_interpret tests/kernels`` (the variable must be set
before triton is imported). Every comparison is against :func:`selective_scan_naive`, never the chunk backend:
outputs, final states and the gradients of every input (x, dt, A, B, C, D, z, initial_state).

Tolerances (relative RMSE, :func:`lrnn_lm.kernels.testing.rel_rmse`):

- fp32: 1e-5. Both sides compute in fp32; only the summation order differs (a tree scan against a loop).
  Gates within about 1e-6 of 1 (``near_one``) are the worst conditioned: each step's gate carries one fp32
  rounding (and numpy's ``exp`` is not torch's), so the state drifts by about T ulps; at T = 70 that measured
  6.2e-6, within the bound.
- bf16 / fp16: 1e-2. Both sides get the same half-precision inputs and compute in fp32; they differ only where
  outputs and gradients are rounded back to the input dtype. One bf16 ulp is 2**-8 = 3.9e-3 relative, and the
  interpreter converts fp32 to bf16 by truncation where torch and the GPU round to nearest, so results there
  differ by up to one ulp (measured up to 7.5e-3 relative RMSE; with a round-to-nearest cast patched in for an
  experiment, up to 5e-4).

These kernels need none of the interpreter shims that fla's kernels need (see ``triton_interpreter.py``).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm.kernels.testing import assert_close

from .inputs import check_against_naive, scan_inputs
from .triton_interpreter import interpreter_only_marks

pytestmark = interpreter_only_marks(fla_shims=False)

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
POS = ("x", "dt", "A", "B", "C", "D", "z")


def _inputs(batch, T, d, N, *, dtype, seed=0, dt_bias=-1.0, A=None, dt=None, with_dz=True, with_h0=True, n_seq=None):
    """Leaf tensors: activations in ``dtype``; parameters ``A``, ``D`` and the state in fp32, as in a model."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, d, generator=g)
    if dt is None:
        dt = F.softplus(torch.randn(batch, T, d, generator=g) + dt_bias)
    if A is None:
        A = -torch.rand(d, N, generator=g) * 3 - 0.2
    B = torch.randn(batch, T, N, generator=g)
    C = torch.randn(batch, T, N, generator=g)
    D = torch.randn(d, generator=g) if with_dz else None
    z = torch.randn(batch, T, d, generator=g) if with_dz else None
    h0 = torch.randn(n_seq or batch, d, N, generator=g) if with_h0 else None
    acts = {"x": x, "dt": dt, "B": B, "C": C, "z": z}
    out = {k: (v.to(dtype) if v is not None else None) for k, v in acts.items()}
    out.update(A=A, D=D, initial_state=h0)
    return {k: (v.requires_grad_() if v is not None else None) for k, v in out.items()}


def _check(inputs, *, negative, cu_seqlens=None, tol=None, **kw):
    from lrnn_lm.kernels import selective_scan
    from lrnn_lm.kernels.selective_scan.triton import selective_scan_triton

    tol = TOL[inputs["x"].dtype] if tol is None else tol
    # The reference is the public op with backend="naive": the dispatcher runs packed sequences one by one.
    check_against_naive(
        selective_scan_triton,
        functools.partial(selective_scan, backend="naive"),
        inputs,
        POS,
        tol,
        "x",
        negative_eigvals=negative,
        cu_seqlens=cu_seqlens,
        **kw,
    )


@pytest.mark.parametrize("T", [1, 17, 64, 100])
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0=0", "h0"])
@pytest.mark.parametrize("negative", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_matches_naive(dtype, negative, with_h0, T):
    _check(_inputs(2, T, 7, 4, dtype=dtype, with_h0=with_h0, seed=T), negative=negative)


@pytest.mark.parametrize("negative", [False, True], ids=["unsigned", "signed"])
def test_without_D_and_z(negative):
    _check(_inputs(2, 33, 5, 4, dtype=torch.float32, with_dz=False), negative=negative)


def test_fp16():
    _check(_inputs(2, 40, 5, 4, dtype=torch.float16), negative=True)


@pytest.mark.parametrize("gate", ["near_zero", "exact_zero", "half", "near_one", "exact_one"])
@pytest.mark.parametrize("negative", [False, True], ids=["unsigned", "signed"])
def test_edge_gates(gate, negative):
    """exp(dt A) ~ 1e-30 or exactly 0 (signed gate ~ or exactly -1), exactly 1/2 (signed gate 0), ~1 or exactly 1."""
    inputs = scan_inputs(2, 70, 5, 4, gate=gate, dtype=torch.float32)
    _check(inputs, negative=negative)


# Lengths 5, 0 (an empty sequence), 70 and 80: sequences cross tile and checkpoint boundaries at odd offsets.
CU_SEQLENS = [0, 5, 5, 75, 155]


@pytest.mark.parametrize("with_h0", [False, True], ids=["h0=0", "h0"])
@pytest.mark.parametrize("negative", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cu_seqlens(dtype, negative, with_h0):
    cu = torch.tensor(CU_SEQLENS, dtype=torch.int32)
    inputs = _inputs(1, CU_SEQLENS[-1], 5, 4, dtype=dtype, with_h0=with_h0, n_seq=len(CU_SEQLENS) - 1)
    _check(inputs, negative=negative, cu_seqlens=cu)


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _force_small_blocks(monkeypatch, *, block_t: int, block_t_bwd: int, block_d_bwd: int) -> None:
    """Launch the scan with fixed small blocks: 4 channels per forward program, ``block_d_bwd`` per backward
    program, N padded to a power of two, and dB/dC summed over pairs of lanes before their atomics."""
    from lrnn_lm.kernels.selective_scan import triton as scan_triton

    def small_blocks(d, n, device):
        return dict(
            BLOCK_T=block_t,
            BLOCK_T_BWD=block_t_bwd,
            BLOCK_N=_next_pow2(n),
            BLOCK_D=4,
            num_warps=4,
            BLOCK_D_BWD=block_d_bwd,
            num_warps_bwd=8,
            RED_LANES=2,
        )

    monkeypatch.setattr(scan_triton, "_config", small_blocks)


@pytest.mark.parametrize("negative", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("varlen", [False, True], ids=["batch", "varlen"])
def test_several_channel_blocks(monkeypatch, negative, varlen):
    """Force 4 channels per forward program and 2 per backward program, so d_inner = 7 needs 2 and 4 programs
    (the last part-masked) and N = 3 is padded to 4; forward tiles of 16 steps, backward tiles of 4.

    On CPU the default block covers all channels of these small tests, so this is what exercises the
    cross-program atomics for dB and dC and the per-program scratch rows.
    """
    _force_small_blocks(monkeypatch, block_t=16, block_t_bwd=4, block_d_bwd=2)
    if varlen:
        cu = torch.tensor(CU_SEQLENS, dtype=torch.int64)
        inputs = _inputs(1, CU_SEQLENS[-1], 7, 3, dtype=torch.float32, n_seq=len(CU_SEQLENS) - 1)
        _check(inputs, negative=negative, cu_seqlens=cu)
    else:
        _check(_inputs(2, 100, 7, 3, dtype=torch.float32), negative=negative)


@pytest.mark.parametrize("negative", [False, True], ids=["unsigned", "signed"])
def test_gpu_tiling_n16(monkeypatch, negative):
    """The tiling the GPU runs at N = 16 (forward tiles of 4 steps, backward tiles of 1 step: every row is both the
    first and the last of its tile), with 4 lanes summed before the dB/dC atomics, over 2 channel programs."""
    from lrnn_lm.kernels.selective_scan import triton as scan_triton

    gpu_config = scan_triton._config

    def gpu_like(d, n, device):
        cfg = gpu_config(d, n, torch.device("cuda"))
        return cfg | {"BLOCK_D": 8, "BLOCK_D_BWD": 8}

    monkeypatch.setattr(scan_triton, "_config", gpu_like)
    assert gpu_like(9, 16, None)["BLOCK_T_BWD"] == 1 and gpu_like(9, 16, None)["RED_LANES"] == 4
    _check(_inputs(2, 23, 9, 16, dtype=torch.float32, seed=5), negative=negative)


def _raw_dt_inputs(batch, T, d, N, *, dtype, seed=0, n_seq=None, with_bias=True):
    """Inputs where ``dt`` is the raw projection (any sign, in ``dtype``) and ``dt_bias`` an fp32 parameter.

    A few raw values sit past softplus's threshold (25: softplus is the identity there) and far below 0 (-30:
    softplus(v) = exp(v) ~ 1e-13, where ``log(1 + exp(v))`` in fp32 would round to 0).
    """
    inputs = _inputs(batch, T, d, N, dtype=dtype, seed=seed, n_seq=n_seq)
    g = torch.Generator().manual_seed(seed + 100)
    raw = torch.randn(batch, T, d, generator=g) * 2
    raw[:, ::7, 0] = 25.0
    raw[:, 3::7, 1] = -30.0
    inputs["dt"] = raw.to(dtype).requires_grad_()
    inputs["dt_bias"] = (torch.randn(d, generator=g) - 1).requires_grad_() if with_bias else None
    return inputs


@pytest.mark.parametrize("softplus", [False, True], ids=["bias", "softplus"])
@pytest.mark.parametrize("negative", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_dt_bias_and_softplus(dtype, negative, softplus):
    """Bias and softplus inside the kernel, gradients of the raw ``dt`` and of ``dt_bias`` included."""
    inputs = _raw_dt_inputs(2, 40, 5, 4, dtype=dtype, seed=3)
    if not softplus:  # without softplus the step must stay >= 0: keep raw + bias positive
        with torch.no_grad():
            inputs["dt"].copy_(inputs["dt"].abs().clamp(max=3.0))
            inputs["dt_bias"].copy_(inputs["dt_bias"].abs())
    _check(inputs, negative=negative, dt_softplus=softplus)


def test_dt_softplus_without_bias():
    inputs = _raw_dt_inputs(2, 20, 5, 4, dtype=torch.float32, with_bias=False)
    _check(inputs, negative=True, dt_softplus=True)


@pytest.mark.parametrize("negative", [False, True], ids=["unsigned", "signed"])
def test_dt_softplus_cu_seqlens(monkeypatch, negative):
    """Packed sequences with bias and softplus: rows past a sequence's end inside a tile must keep gate 1 although
    softplus(0 + bias) is not 0. Several channel blocks, so dt_bias's gradient sums over programs too, and dB/dC
    summed over pairs of lanes before their atomics (two atomics per (t, n) and program)."""
    _force_small_blocks(monkeypatch, block_t=8, block_t_bwd=2, block_d_bwd=4)
    cu = torch.tensor(CU_SEQLENS, dtype=torch.int32)
    inputs = _raw_dt_inputs(1, CU_SEQLENS[-1], 7, 3, dtype=torch.float32, n_seq=len(CU_SEQLENS) - 1)
    _check(inputs, negative=negative, cu_seqlens=cu, dt_softplus=True)


def test_no_final_state_and_no_grad():
    from lrnn_lm.kernels.selective_scan.naive import selective_scan_naive
    from lrnn_lm.kernels.selective_scan.triton import selective_scan_triton

    inputs = {k: (v.detach() if v is not None else None) for k, v in _inputs(2, 20, 5, 4, dtype=torch.float32).items()}
    args = [inputs[k] for k in ("x", "dt", "A", "B", "C", "D", "z")]
    y, h = selective_scan_triton(*args, negative_eigvals=True, initial_state=inputs["initial_state"])
    y_ref, _ = selective_scan_naive(*args, negative_eigvals=True, initial_state=inputs["initial_state"])
    assert h is None
    assert_close(y, y_ref, TOL[torch.float32], "y")


def test_public_api_dispatches_to_triton():
    from lrnn_lm.kernels import selective_scan

    inputs = {k: (v.detach() if v is not None else None) for k, v in _inputs(2, 20, 5, 4, dtype=torch.float32).items()}
    args = [inputs[k] for k in ("x", "dt", "A", "B", "C", "D", "z")]
    kw = dict(negative_eigvals=True, initial_state=inputs["initial_state"], output_final_state=True)
    y, h = selective_scan(*args, backend="triton", **kw)
    y_ref, h_ref = selective_scan(*args, backend="naive", **kw)
    assert_close(y, y_ref, TOL[torch.float32], "y")
    assert_close(h, h_ref, TOL[torch.float32], "final_state")
