"""Backend selection and argument validation of the public kernel API."""

import logging
import os

import pytest
import torch

from lrnn_lm.kernels import backend as backend_mod
from lrnn_lm.kernels import delta_rule, selective_scan

from .inputs import delta_inputs, scan_inputs


def scan_args(T=5):
    i = scan_inputs(1, T, 3, 2)
    return [i[n] for n in ("x", "dt", "A", "B", "C")]


def delta_args(T=5):
    i = delta_inputs(1, T, 2, 4, 3)
    return [i[n] for n in ("q", "k", "v", "beta")]


@pytest.mark.parametrize("op,args", [(selective_scan, scan_args), (delta_rule, delta_args)])
def test_unknown_backend_is_value_error(op, args):
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        op(*args(), backend="fast")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter makes triton valid on CPU")
@pytest.mark.parametrize("op,args", [(selective_scan, scan_args), (delta_rule, delta_args)])
def test_triton_on_cpu_without_interpreter_is_a_clear_error(op, args):
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        op(*args(), backend="triton")


def test_auto_resolves_to_chunk_on_cpu_and_logs_once(caplog, monkeypatch):
    monkeypatch.setattr(backend_mod, "_logged", set())
    with caplog.at_level(logging.INFO, logger="lrnn_lm.kernels"):
        for T in (1, 7, 300):  # the choice never depends on the sequence length
            assert backend_mod.resolve_backend("delta_rule", "auto", torch.device("cpu")) == "chunk"
            delta_rule(*delta_args(T))
    msgs = [r.getMessage() for r in caplog.records if "delta_rule" in r.getMessage()]
    assert msgs == ["delta_rule: backend='auto' resolved to 'chunk' on cpu"]


def test_shape_errors_name_the_argument():
    x, dt, A, B, C = scan_args()
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(x, dt, A[:, :1].T, B, C)
    q, k, v, beta = delta_args()
    with pytest.raises(ValueError, match="beta must be"):
        delta_rule(q, k, v, beta[..., :1])
    with pytest.raises(ValueError, match="initial_state must be"):
        delta_rule(q, k, v, beta, initial_state=torch.zeros(1, 2, 4, 4))


def test_cu_seqlens_validation():
    q, k, v, beta = delta_args(6)
    with pytest.raises(ValueError, match="batch == 1"):
        delta_rule(*(torch.cat([t, t]) for t in (q, k, v, beta)), cu_seqlens=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="end at T=6"):
        delta_rule(q, k, v, beta, cu_seqlens=torch.tensor([0, 3, 5]))
    with pytest.raises(ValueError, match="2 rows but cu_seqlens holds 3"):
        delta_rule(q, k, v, beta, cu_seqlens=torch.tensor([0, 2, 3, 6]), initial_state=torch.zeros(2, 2, 4, 3))


@pytest.mark.parametrize("op,args", [(selective_scan, scan_args), (delta_rule, delta_args)])
def test_integer_tensors_are_refused(op, args):
    tensors = args()
    tensors[0] = tensors[0].detach().round().long()
    with pytest.raises(ValueError, match="must be a floating-point tensor, got torch.int64"):
        op(*tensors)


@pytest.mark.parametrize("op,args", [(selective_scan, scan_args), (delta_rule, delta_args)])
def test_non_finite_inputs_are_refused_on_cpu(op, args):
    tensors = [t.detach().clone() for t in args()]
    tensors[0][0, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite values"):
        op(*tensors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_check_tells_overflowing_sums_from_inf_and_nan(dtype):
    from lrnn_lm.kernels.checks import check_floats

    big = torch.full((4, 3), torch.finfo(dtype).max, dtype=dtype)  # finite, but its sum overflows to inf
    check_floats("op", x=big)
    for bad in (float("inf"), float("-inf"), float("nan")):
        t = big.clone()
        t[2, 1] = bad
        with pytest.raises(ValueError, match="op: x has non-finite values"):
            check_floats("op", x=t)


@pytest.mark.parametrize("bad", [-0.1, 2.5])
def test_beta_outside_zero_two_is_refused(bad):
    q, k, v, beta = (t.detach().clone() for t in delta_args())
    beta[0, 2, 1] = bad
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 2\]"):
        delta_rule(q, k, v, beta)


def test_value_checks_are_opt_in_on_cuda(monkeypatch):
    from lrnn_lm.kernels import checks

    monkeypatch.delenv("LRNN_KERNEL_CHECKS", raising=False)
    assert checks.value_checks_enabled(torch.device("cpu"))
    assert not checks.value_checks_enabled(torch.device("cuda"))  # no host sync on the fast path
    monkeypatch.setenv("LRNN_KERNEL_CHECKS", "1")
    assert checks.value_checks_enabled(torch.device("cuda"))


def test_every_op_has_a_naive_reference_and_a_public_function():
    import lrnn_lm.kernels as kernels

    for op in kernels.ops():
        assert "naive" in kernels.backends_of(op), op
        assert callable(getattr(kernels, op)), f"lrnn_lm.kernels.{op} is not exported"


# fla refuses its gated chunk backward on Hopper with Triton 3.4.0 to 3.7.0 (seen on the lent H200, triton 3.6.0)
@pytest.mark.parametrize(
    "triton_version,capability,tilelang,refused",
    [
        ("3.6.0", (9, 0), False, True),
        ("3.4.0", (9, 0), False, True),
        ("3.7.0+git1234", (9, 0), False, True),
        ("3.7.1", (9, 0), False, False),
        ("3.9.0", (9, 0), False, False),
        ("3.3.1", (9, 0), False, False),
        ("3.6.0", (8, 0), False, False),  # A100: not affected
        ("3.6.0", (9, 0), True, False),  # tilelang installed: fla runs that kernel in TileLang
    ],
)
def test_fla_gated_backward_refusal(triton_version, capability, tilelang, refused):
    from lrnn_lm.kernels.fla_compat import gated_backward_refusal

    why = gated_backward_refusal(
        torch.device("cuda", 0), triton_version=triton_version, capability=capability, tilelang=tilelang
    )
    assert (why is not None) == refused
    if refused:
        assert triton_version in why and "#640" in why and "requirements.txt" in why
    assert gated_backward_refusal(torch.device("cpu")) is None


def test_auto_avoids_a_refused_fla_backward_and_says_why(caplog, monkeypatch):
    reason = "fla's gated chunk backward refuses Triton 3.6.0 (test)"
    monkeypatch.setattr(backend_mod, "_gated_backward_refusal", lambda device: reason)
    monkeypatch.setattr(backend_mod, "triton_usable", lambda device: True)
    monkeypatch.setattr(backend_mod, "_logged", set())
    cuda = torch.device("cuda", 0)
    with caplog.at_level(logging.INFO, logger="lrnn_lm.kernels"):
        for op in ("gated_delta_rule", "delta_product"):
            assert backend_mod.resolve_backend(op, "auto", cuda) == "chunk"
            assert backend_mod.resolve_backend(op, "auto", cuda) == "chunk"  # the same choice every call
            assert backend_mod.resolve_backend(op, "triton", cuda) == "triton"  # explicit stays explicit
        # ungated ops, and ssd (our own kernels, no fla), keep Triton
        assert backend_mod.resolve_backend("ssd", "auto", cuda) == "triton"
        assert backend_mod.resolve_backend("delta_rule", "auto", cuda) == "triton"
        assert backend_mod.resolve_backend("selective_scan", "auto", cuda) == "triton"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(reason in w for w in warnings)
