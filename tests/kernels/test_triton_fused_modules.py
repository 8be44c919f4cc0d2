"""fla's fused modules, the CUDA path of our layers (lrnn_lm/layers/fused.py), against our torch path under the
Triton interpreter: RMSNorm (plain and output-gated), the short conv (with and without packed sequences) and
SwiGLU. Outputs and the gradients of the input and of every parameter, fp32, relative RMSE 1e-5 (the same math
in another order; bf16 is untestable under the interpreter, see test_triton_delta_rule.py)."""

from __future__ import annotations

import pytest
import torch

from lrnn_lm.kernels.testing import assert_close

from .triton_interpreter import interpreter_only_marks

pytestmark = interpreter_only_marks(fla_shims=True)
pytest.importorskip("fla", reason="flash-linear-attention (fla) is not installed")

TOL = 1e-5


def _both_paths(module, inputs: list[torch.Tensor], monkeypatch, **kwargs):
    """Outputs and gradients (inputs, then parameters) of ``module`` on the torch path and on fla's."""
    from lrnn_lm.layers import fused

    results = []
    for use in (False, True):
        monkeypatch.setattr(fused, "use_fla", lambda x, use=use: use)
        out = module(*inputs, **kwargs)
        g = torch.Generator().manual_seed(3)
        cot = torch.randn(out.shape, generator=g)
        leaves = [t for t in inputs if t is not None and t.requires_grad] + list(module.parameters())
        grads = torch.autograd.grad((out * cot).sum(), leaves)
        results.append((out.detach(), grads))
    return results


def _check(results, names):
    (ref, ref_grads), (got, got_grads) = results
    assert_close(got, ref, TOL, "output")
    for name, a, b in zip(names, got_grads, ref_grads, strict=True):
        assert_close(a, b, TOL, name)


@pytest.mark.parametrize("gated", [False, True])
def test_rms_norm(gated, monkeypatch):
    from lrnn_lm.layers.norm import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 7, 24, requires_grad=True)
    gate = torch.randn(2, 7, 24, requires_grad=True) if gated else None
    results = _both_paths(norm, [x, gate], monkeypatch)
    _check(results, ["x"] + (["gate"] if gated else []) + ["weight"])


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_short_conv(packed, bias, monkeypatch):
    from lrnn_lm.layers.conv import ShortConv

    torch.manual_seed(0)
    conv = ShortConv(20, 4, bias=bias)
    batch, T = (1, 23) if packed else (2, 13)
    x = torch.randn(batch, T, 20, requires_grad=True)
    cu = torch.tensor([0, 5, 6, 23]) if packed else None
    results = _both_paths(conv, [x], monkeypatch, cu_seqlens=cu)
    _check(results, ["x", "weight"] + (["bias"] if bias else []))


def test_swiglu(monkeypatch):
    from lrnn_lm.layers.mlp import SwiGLU

    torch.manual_seed(0)
    mlp = SwiGLU(16, 40)
    x = torch.randn(2, 9, 16, requires_grad=True)
    results = _both_paths(mlp, [x], monkeypatch)
    _check(results, ["x", "gate_proj", "up_proj", "down_proj"])


@pytest.mark.parametrize("groups", [1, 4])
def test_gated_group_rms_norm(groups, monkeypatch):
    from lrnn_lm.layers.norm import GatedGroupRMSNorm

    torch.manual_seed(0)
    norm = GatedGroupRMSNorm(32, groups=groups, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 7, 32, requires_grad=True)
    gate = torch.randn(2, 7, 32, requires_grad=True)
    results = _both_paths(norm, [x, gate], monkeypatch)
    _check(results, ["x", "gate", "weight"])
