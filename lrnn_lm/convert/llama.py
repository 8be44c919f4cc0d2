"""transformers' ``LlamaForCausalLM`` as an all-``attention`` model with the SwiGLU MLP.

The blocks match one to one: pre-norm RMSNorm (weight times the normalised fp32 input, ``rms_norm_eps``),
attention with grouped-query heads and RoPE in the same half-split (``rotate_half``) layout, so q and k weights
need no permutation, then RMSNorm and the gated MLP. Only names change. Llama's ``padding_idx`` on the
embedding affects training only (its row gets no gradient), not the function.
"""

from __future__ import annotations

import re

import torch

from . import register_converter

RENAMES = [
    (r"^model\.embed_tokens\.", "model.embeddings."),
    (r"^model\.norm\.", "model.norm_f."),
    (r"\.self_attn\.", ".mixer."),
    (r"\.input_layernorm\.", ".mixer_norm."),
    (r"\.post_attention_layernorm\.", ".mlp_norm."),
]


def _rename(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        for pattern, replacement in RENAMES:
            name = re.sub(pattern, replacement, name)
        out[name] = tensor
    return out


@register_converter("llama", "LlamaForCausalLM")
def llama(hf_config):
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"only the default RoPE converts exactly, got rope_type={rope['rope_type']!r}")
    if getattr(hf_config, "mlp_bias", False):
        raise ValueError("mlp_bias=True: our MLP has no biases")
    if getattr(hf_config, "pretraining_tp", 1) != 1:
        raise ValueError(f"pretraining_tp={hf_config.pretraining_tp} is not supported")
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    kwargs = dict(
        mixer="attention",
        eigval_range="[0,1]",  # no state transitions: the range does not change an attention model's function
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        num_hidden_layers=hf_config.num_hidden_layers,
        intermediate_size=hf_config.intermediate_size,
        hidden_act=hf_config.hidden_act,
        norm_eps=hf_config.rms_norm_eps,
        tie_word_embeddings=hf_config.tie_word_embeddings,
        num_heads=hf_config.num_attention_heads,
        num_key_value_heads=hf_config.num_key_value_heads,
        head_dim=head_dim,
        rope_theta=float(rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))),
        attention_bias=bool(hf_config.attention_bias),
        pad_token_id=hf_config.pad_token_id,
        bos_token_id=hf_config.bos_token_id,
        eos_token_id=hf_config.eos_token_id,
    )
    return kwargs, _rename
