"""The chunked linear cross entropy (lrnn_lm/linear_cross_entropy.py) against the plain head: logits, then
``F.cross_entropy``. Loss and every gradient, with label smoothing and ignored labels.

Tolerances (relative RMSE): fp32, 1e-5 (the same math, summed in another order); bf16 autocast, 1e-2 (both paths
round the matmuls to bf16, ours the weight gradient once per chunk where the plain head rounds it once).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.kernels.testing import assert_close
from lrnn_lm.linear_cross_entropy import linear_cross_entropy
from lrnn_lm.training.loss import causal_lm_loss

FP32_TOL, BF16_TOL = 1e-5, 1e-2


def _inputs(N=37, d=24, V=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, d, generator=g).requires_grad_()
    weight = (torch.randn(V, d, generator=g) * d**-0.5).requires_grad_()
    target = torch.randint(0, V, (N,), generator=g)
    target[[3, 10, 11, 30]] = -100
    return hidden, weight, target


def _plain(hidden, weight, target, eps):
    return F.cross_entropy((hidden @ weight.T).float(), target, ignore_index=-100, label_smoothing=eps)


def _grads(fn, hidden, weight):
    loss = fn()
    gh, gw = torch.autograd.grad(loss * 1.7, (hidden, weight))  # an upstream gradient other than 1
    return loss.detach(), gh, gw


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [5, 37, 4096])
def test_fp32_equals_the_plain_head_loss_and_gradients(eps, chunk):
    hidden, weight, target = _inputs()
    ours = _grads(lambda: linear_cross_entropy(hidden, weight, target, eps, chunk_tokens=chunk), hidden, weight)
    ref = _grads(lambda: _plain(hidden, weight, target, eps), hidden, weight)
    for name, a, b in zip(("loss", "d hidden", "d weight"), ours, ref, strict=True):
        assert_close(a, b, FP32_TOL, name)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_bf16_autocast_equals_the_plain_head(eps):
    hidden, weight, target = _inputs(N=64, d=32, V=100, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _grads(lambda: linear_cross_entropy(hidden, weight, target, eps, chunk_tokens=16), hidden, weight)
        ref = _grads(
            lambda: F.cross_entropy(F.linear(hidden, weight).float(), target, label_smoothing=eps), hidden, weight
        )
    for name, a, b in zip(("loss", "d hidden", "d weight"), ours, ref, strict=True):
        assert a.dtype == b.dtype, name
        assert_close(a, b, BF16_TOL, name)


def test_every_label_ignored_gives_nan_as_the_plain_loss():
    hidden, weight, target = _inputs()
    target[:] = -100
    assert torch.isnan(linear_cross_entropy(hidden, weight, target)) and torch.isnan(_plain(hidden, weight, target, 0))


def test_bad_shapes_are_refused():
    hidden, weight, target = _inputs()
    with pytest.raises(ValueError, match="target must be"):
        linear_cross_entropy(hidden, weight, target[:-1])
    with pytest.raises(ValueError, match="hidden must be"):
        linear_cross_entropy(hidden[None], weight, target)


@pytest.mark.parametrize("mixer", ["deltanet", "mamba"])
def test_model_loss_without_logits_equals_the_logits_loss_in_every_parameter_gradient(mixer):
    torch.manual_seed(0)
    cfg = LRNNConfig(mixer=mixer, vocab_size=41, hidden_size=32, num_hidden_layers=2, num_heads=2, intermediate_size=48)
    model = LRNNForCausalLM(cfg).train()
    ids = torch.randint(0, 41, (2, 13))
    labels = ids.clone()
    labels[1, 9:] = -100
    eps = 0.1
    loss = causal_lm_loss(model(input_ids=ids, use_cache=False).logits, labels, eps)
    ref = torch.autograd.grad(loss, list(model.parameters()))
    out = model(input_ids=ids, labels=labels, use_cache=False, loss_without_logits=True, label_smoothing=eps)
    assert out.logits is None
    assert_close(out.loss, loss, FP32_TOL, "loss")
    grads = torch.autograd.grad(out.loss, list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), grads, ref, strict=True):
        assert_close(a, b, FP32_TOL, name)


def test_label_smoothing_without_the_chunked_loss_is_refused():
    cfg = LRNNConfig(mixer="deltanet", vocab_size=11, hidden_size=16, num_hidden_layers=1, num_heads=2)
    ids = torch.randint(0, 11, (1, 5))
    with pytest.raises(ValueError, match="label_smoothing needs"):
        LRNNForCausalLM(cfg)(input_ids=ids, labels=ids, label_smoothing=0.1)
