"""Causal softmax attention (Llama's): grouped-query heads, RoPE, optional sliding window, SDPA.

The one mixer without state transitions: a hybrid model interleaves it with the recurrent mixers, and a model
made of it alone (with the SwiGLU MLP) is a Llama (``lrnn_lm/convert/llama.py`` loads one). ``eigval_range`` and
``kernel_backend`` do not apply to it; the spectrum and the probes skip its layers.

Masks. Query ``i`` may attend to key ``j`` (both absolute indices in the row, padding included) when ``j <= i``,
``i - j < sliding_window`` (when set), key ``j`` is not padding (``attention_mask``) and, with ``cu_seqlens``, both
lie in the same packed sequence. Left padding is contiguous, so index distances between real tokens equal
their position distances and the window means the same with or without padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Mixer, boolean, positive_float, positive_int
from .conv import positions_in_sequence
from .registry import register_mixer


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dim: the half-split RoPE layout of Llama / transformers."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """``cos, sin: [batch, T, head_dim]`` for integer ``positions [batch, T]``, computed in fp32 then cast.

    Frequencies ``theta^(-2i/head_dim)``, each used for dims ``i`` and ``i + head_dim/2`` (Llama's default RoPE).
    Computed per call (``head_dim/2`` values) rather than kept as a buffer, so nothing has to be re-created
    when a checkpoint is loaded onto the meta device.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


#: Packed sequences are attended in spans of whole sequences of about this many tokens, each with its own
#: block-diagonal mask: the cost grows as ``total * span`` instead of ``total^2`` for a whole packed batch
#: (train.py packs micro-batch x seq_len tokens into one row).
PACKED_SPAN = 2048


def packed_spans(cu_seqlens: torch.Tensor, span: int = PACKED_SPAN) -> list[tuple[int, int, torch.Tensor | None]]:
    """Consecutive packed sequences grouped into ``(start, end, local cu_seqlens)`` spans of at most ``span``
    tokens (or one longer sequence); the local offsets are None for a span of one sequence (plain causal)."""
    cu = cu_seqlens.tolist()
    spans, start, bounds = [], cu[0], [cu[0]]
    for end in cu[1:]:
        if end - start > span and bounds[-1] > start:
            spans.append((start, bounds[-1], bounds))
            start, bounds = bounds[-1], [bounds[-1]]
        bounds.append(end)
    if bounds[-1] > start:
        spans.append((start, bounds[-1], bounds))
    return [(a, b, torch.tensor(bs, device=cu_seqlens.device) - a if len(bs) > 2 else None) for a, b, bs in spans]


@register_mixer("attention")
class AttentionMixer(Mixer):
    """Multi-head causal attention with ``num_key_value_heads`` shared key/value heads (GQA) and RoPE."""

    config_fields = {
        "num_heads": 4,
        "head_dim": None,
        "num_key_value_heads": None,
        "rope_theta": 10000.0,
        "sliding_window": None,
        "attention_bias": False,
    }
    # A full key/value cache also for a sliding window (the window is applied by the mask): LRNNConfig.layer_types
    # takes the cache layer type per mixer class, not per config. The mixer also runs exactly on transformers'
    # windowed layer ("sliding_attention", the last window - 1 keys; tests/test_attention.py patches it in).
    cache_layer_type = "full_attention"
    eigenvalues_are = None
    #: Ask LRNNBlock for the full ``attention_mask`` (past + current tokens) and ``position_ids``.
    takes_positions = True

    @classmethod
    def validate_config(cls, config, fail, in_use: bool) -> None:
        positive_int(config, "num_heads", fail)
        positive_int(config, "head_dim", fail, allow_none=True)
        positive_int(config, "num_key_value_heads", fail, allow_none=True)
        positive_int(config, "sliding_window", fail, allow_none=True)
        positive_float(config, "rope_theta", fail)
        boolean(config, "attention_bias", fail)
        if not in_use:
            return
        if config.head_dim is None and config.hidden_size % config.num_heads:
            fail("num_heads", f"must divide hidden_size={config.hidden_size} when head_dim is not set")
        if cls.head_dim_of(config) % 2:
            fail("head_dim", "RoPE needs an even head_dim")
        kv = cls.kv_heads_of(config)
        if config.num_heads % kv:
            fail("num_key_value_heads", f"must divide num_heads={config.num_heads}")

    @staticmethod
    def head_dim_of(config) -> int:
        return config.head_dim if config.head_dim is not None else config.hidden_size // config.num_heads

    @staticmethod
    def kv_heads_of(config) -> int:
        return config.num_key_value_heads if config.num_key_value_heads is not None else config.num_heads

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        d, H, Hkv, Dh = config.hidden_size, config.num_heads, self.kv_heads_of(config), self.head_dim_of(config)
        self.num_heads, self.num_kv_heads, self.head_dim = H, Hkv, Dh
        bias = config.attention_bias
        self.q_proj = nn.Linear(d, H * Dh, bias=bias)
        self.k_proj = nn.Linear(d, Hkv * Dh, bias=bias)
        self.v_proj = nn.Linear(d, Hkv * Dh, bias=bias)
        self.o_proj = nn.Linear(H * Dh, d, bias=bias)

    def forward(
        self,
        hidden: torch.Tensor,
        cache=None,
        mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``mask`` (the current tokens' padding) is not needed: ``attention_mask`` ``[batch, past + T]`` covers
        the cached keys too. ``position_ids [batch, T]`` default to ``cumsum(attention_mask) - 1``, else to
        positions within each packed sequence, else to ``past + arange(T)``."""
        batch, T, _ = hidden.shape
        past = cache.get_seq_length(self.layer_idx) if cache is not None else 0
        if attention_mask is not None:
            if attention_mask.shape[-1] != past + T:
                raise ValueError(
                    f"attention layer {self.layer_idx}: attention_mask covers {attention_mask.shape[-1]} tokens, but "
                    f"the cache holds {past} and {T} are new; pass the mask of all tokens so far"
                )
            if bool(attention_mask.all()):
                attention_mask = None
        positions = self.positions(batch, T, past, attention_mask, cu_seqlens, position_ids, hidden.device)

        q = self.q_proj(hidden).view(batch, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(batch, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(batch, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.config.rope_theta, q.dtype)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)

        if cu_seqlens is None:
            o = self.attend(q, k, v, self.allowed(T, k.shape[2], attention_mask, None, hidden.device))
        else:
            outputs = []
            for a, b, local_cu in packed_spans(cu_seqlens, PACKED_SPAN):
                span_mask = attention_mask[:, a:b] if attention_mask is not None else None
                allowed = self.allowed(b - a, b - a, span_mask, local_cu, hidden.device)
                outputs.append(self.attend(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], allowed))
            o = torch.cat(outputs, dim=2)
        return self.o_proj(o.transpose(1, 2).reshape(batch, T, -1))

    def attend(self, q, k, v, allowed: torch.Tensor | None) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=allowed,
            is_causal=allowed is None and q.shape[2] > 1,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )

    @staticmethod
    def positions(batch, T, past, attention_mask, cu_seqlens, position_ids, device) -> torch.Tensor:
        """``[batch or 1, T]`` integer RoPE positions of the current tokens."""
        if position_ids is not None:
            return position_ids
        if attention_mask is not None:
            # Left padding: real tokens count from 0; padded slots get 0 (their outputs are never used).
            return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, -T:]
        if cu_seqlens is not None:
            return positions_in_sequence(cu_seqlens, T)[None]
        return torch.arange(past, past + T, device=device)[None]

    def allowed(self, T: int, S: int, attention_mask, cu_seqlens, device) -> torch.Tensor | None:
        """Boolean ``[batch or 1, 1, T, S]`` mask (True = may attend) of ``T`` queries over ``S`` keys, the queries
        being the last ``T`` of them; None when plain causal attention (``is_causal``, or all keys for one query)
        is exactly right, so SDPA may pick its fastest kernel."""
        window = self.config.sliding_window
        windowed = window is not None and window < S
        if attention_mask is None and cu_seqlens is None and not windowed and (T == S or T == 1):
            return None
        i = torch.arange(S - T, S, device=device)[:, None]  # absolute index of each query
        j = torch.arange(S, device=device)[None, :]
        allowed = j <= i
        if windowed:
            allowed = allowed & (i - j < window)
        if cu_seqlens is not None:
            lengths = cu_seqlens.long().diff()
            seq = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths, output_size=S)
            allowed = allowed & (seq[S - T :, None] == seq[None, :])
        allowed = allowed[None, None]
        if attention_mask is not None:
            # Padded keys are hidden; a padded query still sees itself, so no row is empty (an all-masked row
            # is 0/0 in some SDPA kernels, and its gradient NaN).
            allowed = (allowed & attention_mask[:, -S:].bool()[:, None, None, :]) | (i == j)
        return allowed
