"""lrnn_lm.analysis.activation_memory, which benchmarks/memory.py tabulates: the saved-bytes count predicts a whole
model's, and block checkpointing (train.py's ``train.activation_checkpointing: blocks``) keeps the gradients and cuts
the saved activations."""

from __future__ import annotations

import pytest
import torch

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.analysis import activation_memory as memory
from lrnn_lm.kernels.testing import assert_close


def _config(mixer: str, layers: int = 2) -> LRNNConfig:
    return LRNNConfig(
        mixer=mixer, vocab_size=256, hidden_size=128, num_hidden_layers=layers, num_heads=2, intermediate_size=256
    )


@pytest.mark.parametrize("mixer", ["deltanet", "mamba"])
def test_prediction_is_within_15_percent_of_a_2_layer_models_measured_saved_bytes(mixer):
    torch.manual_seed(0)
    config = _config(mixer)
    T = 512
    predicted = memory.predicted_model_bytes(config, T)["total"]
    measured = memory.model_bytes(config, T)
    print(f"{mixer}: predicted {predicted} measured {measured} ({predicted / measured - 1:+.1%})")
    assert abs(predicted - measured) <= 0.15 * measured, (predicted, measured)


def test_saved_bytes_counts_each_storage_once_and_skips_excluded_tensors():
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    # x @ w saves x and w; x * 2 saves nothing; x.sin() saves x again (same storage).
    assert memory.saved_bytes(lambda: (x @ w).sum() + x.sin().sum()) == (32 + 64) * 4
    assert memory.saved_bytes(lambda: (x @ w).sum(), exclude=(w,)) == 32 * 4


def _grads_and_saved(model, ids, checkpointing: bool):
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()

    def loss():
        return model(input_ids=ids, labels=ids, use_cache=False, loss_without_logits=True).loss

    saved = memory.saved_bytes(loss, exclude=tuple(model.parameters()))
    grads = torch.autograd.grad(loss(), list(model.parameters()))
    return grads, saved


@pytest.mark.parametrize("mixer", ["deltanet", "mamba", "gated_deltanet"])
def test_block_checkpointing_gives_the_same_gradients_and_saves_at_least_4x_less(mixer):
    torch.manual_seed(0)
    model = LRNNForCausalLM(_config(mixer, layers=4)).train()
    ids = torch.randint(0, 256, (2, 64))
    plain, saved_plain = _grads_and_saved(model, ids, False)
    ckpt, saved_ckpt = _grads_and_saved(model, ids, True)
    for (name, _), a, b in zip(model.named_parameters(), ckpt, plain, strict=True):
        assert_close(a, b, 1e-6, name)  # the same forward recomputed: equal up to summation order
    print(
        f"{mixer}: saved {saved_plain} plain, {saved_ckpt} with blocks checkpointing ({saved_plain / saved_ckpt:.1f}x)"
    )
    assert saved_plain >= 4 * saved_ckpt, (saved_plain, saved_ckpt)


@pytest.mark.parametrize("packed, blocks", [(False, False), (True, False), (False, True)])
def test_mamba_recompute_gives_the_same_gradients_and_keeps_less(monkeypatch, packed, blocks):
    """The GPU path of the Mamba mixer recomputes the conv, dt, B, C and the scan's forward in the backward
    (lrnn_lm/layers/fused.py: recompute_in_backward); switched on here on CPU."""
    from lrnn_lm.layers import fused

    torch.manual_seed(0)
    model = LRNNForCausalLM(_config("mamba")).train()
    if blocks:  # the recomputation nested inside block checkpointing
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, 256, (1, 48) if packed else (2, 24))
    cu = torch.tensor([0, 17, 30, 48]) if packed else None
    results = {}
    for recompute in (False, True):
        monkeypatch.setattr(fused, "recompute_in_backward", lambda x, r=recompute: r)

        def loss():
            return model(input_ids=ids, labels=ids, cu_seqlens=cu, use_cache=False, loss_without_logits=True).loss

        saved = memory.saved_bytes(loss, exclude=tuple(model.parameters()))
        results[recompute] = saved, torch.autograd.grad(loss(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), results[True][1], results[False][1], strict=True):
        assert_close(a, b, 1e-6, name)
    if not blocks:  # with blocks checkpointing both keep only the blocks' inputs
        assert results[True][0] < 0.7 * results[False][0], (results[True][0], results[False][0])
