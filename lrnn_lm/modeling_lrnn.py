"""LRNNModel and LRNNForCausalLM: one model family; each layer's mixer is chosen by the config."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput

from .configuration_lrnn import LRNNConfig
from .layers import Mixer, get_mixer
from .layers.mlp import SwiGLU
from .layers.norm import RMSNorm
from .linear_cross_entropy import linear_causal_lm_loss
from .param_tags import tag_biases, tag_no_weight_decay, tagged_names
from .remote_code import AUTO_MAP, write_remote_code


@dataclass
class LRNNOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class LRNNCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class LRNNBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: ``x + mixer(norm(x))``, then ``x + mlp(norm(x))`` when an MLP is configured."""

    def __init__(self, config: LRNNConfig, layer_idx: int) -> None:
        super().__init__()
        self.mixer_type = config.layer_mixers[layer_idx]
        self.mixer_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mixer = get_mixer(self.mixer_type)(config, layer_idx)
        if config.intermediate_size > 0:
            self.mlp_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
            self.mlp = SwiGLU(config.hidden_size, config.intermediate_size, config.hidden_act)
        else:
            self.mlp_norm = self.mlp = None

    def forward(self, hidden, cache=None, mask=None, cu_seqlens=None, attention_mask=None, position_ids=None):
        # Token positions and the full padding mask go only to mixers that ask for them (attention).
        extra = dict(attention_mask=attention_mask, position_ids=position_ids) if self.mixer.takes_positions else {}
        hidden = hidden + self.mixer(self.mixer_norm(hidden), cache=cache, mask=mask, cu_seqlens=cu_seqlens, **extra)
        if self.mlp is not None:
            hidden = hidden + self.mlp(self.mlp_norm(hidden))
        return hidden


class LRNNPreTrainedModel(PreTrainedModel):
    config_class = LRNNConfig
    config: LRNNConfig
    base_model_prefix = "model"
    _no_split_modules = ["LRNNBlock"]
    supports_gradient_checkpointing = True
    _is_stateful = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Mixer):
            module.init_weights()
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that take no weight decay, fixed when the model was built."""
        return set(self._no_weight_decay_names)

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """``PreTrainedModel.save_pretrained``, plus the remote-code entry points and ``auto_map``."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_code(save_directory)

    def post_init(self) -> None:
        super().post_init()
        tag_biases(self)
        # Record names now: loading weights may replace Parameter objects and drop attribute tags.
        self._no_weight_decay_names = tagged_names(self)


class LRNNModel(LRNNPreTrainedModel):
    def __init__(self, config: LRNNConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([LRNNBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm_f = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cu_seqlens: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> LRNNOutput | tuple:
        """Args beyond the usual HF ones: ``cu_seqlens`` (``[num_seqs + 1]`` offsets) for a packed batch of
        size 1, so the recurrent state and the convolutions restart at every sequence start (and attention stays
        inside each sequence).

        ``attention_mask`` (1 = token, 0 = padding) turns padded steps into identity transitions with no
        input, so left-padded rows give the same outputs as unpadded ones; attention layers hide padded keys.
        With a cache it covers the cached tokens too (``[batch, past + T]``), as ``generate`` passes it.
        ``position_ids`` (``[batch, T]``) are used by attention layers only (RoPE); by default they are
        ``cumsum(attention_mask) - 1``, or positions inside each packed sequence, or ``past + arange(T)``.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        hidden = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        if cu_seqlens is not None and cache is not None:
            raise ValueError("cu_seqlens (packed sequences) cannot be combined with a generation cache")
        mask = _padding_mask(attention_mask, hidden)
        all_hidden = [] if output_hidden_states else None
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden)
            hidden = layer(
                hidden,
                cache=cache,
                mask=mask,
                cu_seqlens=cu_seqlens,
                attention_mask=attention_mask,
                position_ids=position_ids,
            )
        hidden = self.norm_f(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        out = LRNNOutput(
            last_hidden_state=hidden, cache=cache, hidden_states=tuple(all_hidden) if all_hidden is not None else None
        )
        return out if return_dict is not False else out.to_tuple()


def _padding_mask(attention_mask: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor | None:
    """``[batch, T, 1]`` mask in the activations' dtype for the current tokens, or None when nothing is padded."""
    if attention_mask is None:
        return None
    mask = attention_mask[:, -hidden.shape[1] :]
    if bool(mask.all()):
        return None
    return mask.to(hidden.dtype).unsqueeze(-1)


class LRNNForCausalLM(LRNNPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: LRNNConfig) -> None:
        super().__init__(config)
        self.model = LRNNModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cu_seqlens: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        loss_without_logits: bool = False,
        label_smoothing: float = 0.0,
        **kwargs,
    ) -> LRNNCausalLMOutput | tuple:
        """Causal LM forward. ``labels`` are shifted inside (pass ``labels = input_ids``); ``-100`` is ignored.

        ``loss_without_logits`` (training): with ``labels``, the loss comes from the head's chunked linear cross
        entropy (:mod:`lrnn_lm.linear_cross_entropy`), which never keeps the ``[tokens, vocab]`` logits, and
        ``logits`` is None. ``label_smoothing`` applies to that loss only (the model's plain loss has none).
        """
        if label_smoothing and not loss_without_logits:
            raise ValueError("label_smoothing needs loss_without_logits=True (the plain loss has no smoothing)")
        if loss_without_logits and (labels is None or logits_to_keep != 0):
            raise ValueError("loss_without_logits needs labels and logits_to_keep=0")
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            cu_seqlens=cu_seqlens,
            position_ids=position_ids,
        )
        if loss_without_logits:
            loss = linear_causal_lm_loss(out.last_hidden_state, self.lm_head.weight, labels, label_smoothing)
            result = LRNNCausalLMOutput(loss=loss, cache=out.cache, hidden_states=out.hidden_states)
            return result if return_dict is not False else result.to_tuple()
        hidden = slice_logits_to_keep(out.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden).float()
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        result = LRNNCausalLMOutput(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states)
        return result if return_dict is not False else result.to_tuple()


__all__ = ["LRNNForCausalLM", "LRNNModel", "LRNNPreTrainedModel", "tag_no_weight_decay"]
