"""transformers' Llama as the oracle of the attention mixer: a converted all-attention model computes its logits."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from lrnn_lm.convert import convert_model

VOCAB = 67


def tiny_llama(tied: bool, **kw) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        tie_word_embeddings=tied, pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="sdpa", **kw,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    # Move every weight off its init value (norms = 1, zero biases) so the match cannot be an accident.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("tied,bias", [(False, False), (True, False), (False, True)])
def test_converted_llama_logits_and_greedy_generate_match(tied, bias):
    hf = tiny_llama(tied, attention_bias=bias)
    ours = convert_model(hf)
    cfg = ours.config
    assert cfg.layer_mixers == ["attention"] * 2 and cfg.num_key_value_heads == 2 and cfg.intermediate_size == 48
    assert cfg.tie_word_embeddings == tied and cfg.norm_eps == 1e-6 and cfg.rope_theta == 500.0
    ids = torch.randint(3, VOCAB, (2, 41))
    with torch.no_grad():
        ref, got = hf(ids).logits, ours(ids).logits
    err = (got - ref).abs().max().item()
    assert err <= 1e-4, f"max |logit difference| {err:.2e}"
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    prompt = ids[:, :9]
    assert torch.equal(ours.generate(prompt, **kw), hf.generate(prompt, **kw))


def test_converted_llama_left_padded_generate_matches():
    hf = tiny_llama(False)
    ours = convert_model(hf)
    prompts = [torch.randint(3, VOCAB, (1, n)) for n in (4, 11)]
    ids = torch.cat([F.pad(p, (11 - p.shape[1], 0)) for p in prompts])
    mask = torch.cat([F.pad(torch.ones_like(p), (11 - p.shape[1], 0)) for p in prompts])
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ref, got = hf(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits
    real = mask.bool()
    assert (got[real] - ref[real]).abs().max().item() <= 1e-4
    assert torch.equal(ours.generate(ids, **kw), hf.generate(ids, **kw))


def test_unsupported_llama_variants_are_refused():
    with pytest.raises(ValueError, match="mlp_bias"):
        convert_model(tiny_llama(False, mlp_bias=True))
    hf = tiny_llama(False)
    hf.config.rope_parameters = {"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}
    with pytest.raises(ValueError, match="rope_type"):
        convert_model(hf)
