"""Full-sequence logits must equal prefill followed by token-by-token decoding (recurrent state in fp32)."""

import pytest
import torch

from lrnn_lm.kernels.testing import rel_rmse

from .models import MIXERS, RANGES, RECURRENT_MIXERS, tiny_model

# Models and inputs on the --device device (tests/conftest.py).
pytestmark = pytest.mark.on_device

TOL = 1e-5


def stepwise_logits(model, ids, prefill: int, chunk: int = 1) -> torch.Tensor:
    """Logits from a prefill of ``prefill`` tokens, then decoding ``chunk`` tokens at a time with the cache."""
    with torch.no_grad():
        out = model(ids[:, :prefill], use_cache=True)
        logits, cache = [out.logits], out.cache
        for t in range(prefill, ids.shape[1], chunk):
            out = model(ids[:, t : t + chunk], cache=cache, use_cache=True)
            logits.append(out.logits)
            cache = out.cache
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("eigval_range", RANGES)
@pytest.mark.parametrize("prefill,chunk", [(1, 1), (9, 1), (6, 5)])
def test_full_forward_equals_prefill_plus_decode(mixer, eigval_range, prefill, chunk):
    model = tiny_model(mixer=mixer, eigval_range=eigval_range)
    ids = torch.randint(0, 61, (3, 23))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    steps = stepwise_logits(model, ids, prefill, chunk)
    assert rel_rmse(steps, full) <= TOL


@pytest.mark.parametrize("mixer,no_conv", [("deltanet", {"use_short_conv": False}), ("mamba", {"conv_kernel": 1})])
@pytest.mark.parametrize("eigval_range", RANGES)
def test_prefill_plus_decode_without_a_short_conv(mixer, no_conv, eigval_range):
    """The CPU state-tracking configs drop the short conv; their cache must still carry the recurrent state."""
    model = tiny_model(mixer=mixer, eigval_range=eigval_range, **no_conv)
    ids = torch.randint(0, 61, (3, 17))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    for prefill, chunk in [(1, 1), (6, 5)]:
        assert rel_rmse(stepwise_logits(model, ids, prefill, chunk), full) <= TOL


# Attention holds keys and values (in the activations' dtype), not a recurrent state: not tested here.
@pytest.mark.parametrize("mixer", RECURRENT_MIXERS)
def test_recurrent_state_is_fp32(mixer):
    model = tiny_model(mixer=mixer).to(torch.bfloat16)
    with torch.no_grad():
        cache = model(torch.randint(0, 61, (2, 5)), use_cache=True).cache
    for i in range(model.config.num_hidden_layers):
        assert cache.get_recurrent_state(i).dtype == torch.float32


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("eigval_range", RANGES)
def test_left_padding_matches_unpadded(mixer, eigval_range):
    model = tiny_model(mixer=mixer, eigval_range=eigval_range)
    short, long = torch.randint(1, 61, (1, 6)), torch.randint(1, 61, (1, 10))
    ids = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, 4), torch.ones(1, 6)], 1), torch.ones(1, 10)]).long()
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, use_cache=False).logits
        ref_short = model(short, use_cache=False).logits
        ref_long = model(long, use_cache=False).logits
    assert rel_rmse(padded[0:1, 4:], ref_short) <= TOL
    assert rel_rmse(padded[1:2], ref_long) <= TOL


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("eigval_range", RANGES)
def test_batched_left_padded_generate_equals_single(mixer, eigval_range):
    model = tiny_model(mixer=mixer, eigval_range=eigval_range)
    model.generation_config.pad_token_id = 0
    prompts = [torch.randint(1, 61, (1, n)) for n in (3, 8)]
    width = max(p.shape[1] for p in prompts)
    ids = torch.cat([torch.nn.functional.pad(p, (width - p.shape[1], 0)) for p in prompts])
    mask = torch.cat([torch.nn.functional.pad(torch.ones_like(p), (width - p.shape[1], 0)) for p in prompts])
    with torch.no_grad():
        batched = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
        for row, p in enumerate(prompts):
            single = model.generate(p, max_new_tokens=12, do_sample=False)
            assert torch.equal(batched[row, width:], single[0, p.shape[1] :])


@pytest.mark.parametrize("mixer", MIXERS)
def test_greedy_generate_equals_argmax_of_full_forwards(mixer):
    model = tiny_model(mixer=mixer)
    ids = torch.randint(1, 61, (1, 5))
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=10, do_sample=False)
        seq = ids
        for _ in range(10):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("mixer", MIXERS)
def test_bf16_left_padded_generate_runs_and_matches_single(mixer):
    model = tiny_model(mixer=mixer).to(torch.bfloat16)
    model.generation_config.pad_token_id = 0
    prompts = [torch.randint(1, 61, (1, n)) for n in (2, 6)]
    ids = torch.cat([torch.nn.functional.pad(p, (6 - p.shape[1], 0)) for p in prompts])
    mask = torch.cat([torch.nn.functional.pad(torch.ones_like(p), (6 - p.shape[1], 0)) for p in prompts])
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, use_cache=False).logits
        single = model(prompts[0], use_cache=False).logits
        out = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, 10)
    assert rel_rmse(padded[0:1, 4:], single) <= 1e-2  # bf16 activations
