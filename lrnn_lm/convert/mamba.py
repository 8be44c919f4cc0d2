"""transformers' ``MambaForCausalLM`` and ``Mamba2ForCausalLM`` as ``[0,1]`` ``mamba`` / ``mamba2`` models.

Both peers put a pre-norm and one mixer in each block, with no MLP (our ``intermediate_size = 0``), and keep the
backbone under ``backbone.``; ours is under ``model.`` with the conv inside ``mixer.conv``.
"""

from __future__ import annotations

import re

import torch

from . import register_converter


def _common(hf_config) -> dict:
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise ValueError(f"only hidden_act='silu' converts exactly, got {hf_config.hidden_act!r}")
    return dict(
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        num_hidden_layers=hf_config.num_hidden_layers,
        intermediate_size=0,
        eigval_range="[0,1]",
        norm_eps=hf_config.layer_norm_epsilon,
        tie_word_embeddings=hf_config.tie_word_embeddings,
        state_size=hf_config.state_size,
        conv_kernel=hf_config.conv_kernel,
        expand=hf_config.expand,
        use_conv_bias=hf_config.use_conv_bias,
        use_bias=hf_config.use_bias,
        pad_token_id=hf_config.pad_token_id,
        bos_token_id=hf_config.bos_token_id,
        eos_token_id=hf_config.eos_token_id,
    )


def _rename(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        name = name.replace("backbone.", "model.", 1)
        name = re.sub(r"^model\.layers\.(\d+)\.norm\.", r"model.layers.\1.mixer_norm.", name)
        name = re.sub(r"\.mixer\.conv1d\.", ".mixer.conv.conv1d.", name)
        name = name.replace("model.embedding.", "model.embeddings.")
        out[name] = tensor
    return out


@register_converter("mamba", "MambaForCausalLM")
def mamba(hf_config):
    kwargs = _common(hf_config) | dict(mixer="mamba", dt_rank=int(hf_config.time_step_rank))
    return kwargs, _rename


@register_converter("mamba2", "Mamba2ForCausalLM")
def mamba2(hf_config):
    limit = tuple(hf_config.time_step_limit)
    if limit != (0.0, float("inf")):
        raise ValueError(f"time_step_limit={limit} clamps dt, which our mamba2 mixer does not; only (0, inf) converts")
    kwargs = _common(hf_config) | dict(
        mixer="mamba2",
        ssd_num_heads=hf_config.num_heads,
        ssd_head_dim=hf_config.head_dim,
        ssd_groups=hf_config.n_groups,
    )
    return kwargs, _rename
