"""The short conv against torch's own depthwise conv1d, an independent oracle: both implementations (the CPU's
channels-last conv2d and the shifted multiply-adds with their hand-written backward, the path off CPU), each run
here on CPU, and the dispatching function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm.layers.conv import ShortConv, causal_depthwise_conv, conv2d_channels_last, shifted_multiply_add

IMPLEMENTATIONS = [causal_depthwise_conv, conv2d_channels_last, shifted_multiply_add]


def conv1d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv1d`` over the left-padded, transposed input: ``[batch, T, C]`` -> ``[batch, T, C]``."""
    W = weight.shape[1]
    return F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), weight[:, None, :], bias, groups=x.shape[-1]).transpose(1, 2)


def rel_rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30))


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 37])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("strided", [True, False])
@pytest.mark.parametrize("conv", IMPLEMENTATIONS, ids=lambda f: f.__name__)
def test_matches_conv1d_forward_and_every_gradient(T, with_bias, strided, conv):
    g = torch.Generator().manual_seed(T)
    C, W = 7, 4
    wide = torch.randn(3, T, 2 * C + 1, generator=g, requires_grad=True)
    weight = torch.randn(C, W, generator=g, requires_grad=True)
    bias = torch.randn(C, generator=g, requires_grad=True) if with_bias else None
    grad_out = torch.randn(3, T, C, generator=g)

    def run(fn):
        x = wide[..., 3 : 3 + C] if strided else wide[..., :C].contiguous()  # a slice of a projection, as in the mixers
        y = fn(x, weight, bias)
        leaves = [wide, weight] + ([bias] if with_bias else [])
        return y, torch.autograd.grad(y, leaves, grad_out)

    y, grads = run(conv)
    y_ref, grads_ref = run(conv1d_reference)
    assert y.is_contiguous()
    assert rel_rmse(y, y_ref) < 1e-6
    for got, want in zip(grads, grads_ref):
        assert rel_rmse(got, want) < 1e-6


@pytest.mark.parametrize("conv", IMPLEMENTATIONS, ids=lambda f: f.__name__)
def test_gradcheck_in_double(conv):
    g = torch.Generator().manual_seed(0)
    for T in (2, 6):
        x = torch.randn(2, T, 3, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(conv, (x, w, b))
        assert torch.autograd.gradcheck(conv, (x, w, None))


def test_history_continues_the_sequence():
    """Prefill then one step with the cached inputs equals the conv over the whole sequence."""
    torch.manual_seed(0)
    conv = ShortConv(5, 4)
    x = torch.randn(2, 9, 5)
    full = conv(x)
    history = x[:, :8].transpose(1, 2)  # the decode cache keeps [batch, channels, >= W-1] past inputs
    step = conv(x[:, 8:], history=history)
    assert torch.allclose(step, full[:, 8:], atol=1e-6)


@pytest.mark.parametrize("conv", IMPLEMENTATIONS, ids=lambda f: f.__name__)
def test_autocast_computes_in_the_autocast_dtype_like_conv1d(conv):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 6, generator=g, requires_grad=True)
    weight = torch.randn(6, 4, generator=g, requires_grad=True)
    bias = torch.randn(6, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x, weight, bias)
        y_ref = conv1d_reference(x, weight, bias)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    assert rel_rmse(y.float(), y_ref.float()) < 1e-2  # bf16 rounding, summed in another order
    y.float().sum().backward()
    assert x.grad.dtype == weight.grad.dtype == torch.float32
