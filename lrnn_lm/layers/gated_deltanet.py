"""Gated DeltaNet mixer (Yang, Kautz & Hatamizadeh, 2025), the layer of fla's ``GatedDeltaNet``.

q/k/v projections with one short conv over their concatenated channels, L2-normalised q and k, ``beta`` from a
projection, the gate ``decay = exp(-exp(A_log) * softplus(a_proj(x) + dt_bias))``, the gated delta rule, and an
output gate with RMSNorm (``rmsnorm(o) * silu(g_proj(x))``, fla's ``FusedRMSNormGated``), then ``o_proj``.

Transition per head and token: ``alpha_t (I - beta_t k_t k_t^T)``, eigenvalue ``alpha_t (1 - beta_t)`` along
``k_t`` and ``alpha_t`` on the other ``head_dim - 1`` directions. The eigenvalue switch (read only in
``gates.py``):

- ``eigval_range="[-1,1]"`` gives ``beta`` in (0, 2) (fla's ``allow_neg_eigval``), so ``alpha (1 - beta)`` spans
  ``(-alpha, alpha)``; ``alpha`` itself stays in (0, 1]. ``"[0,1]"``: ``beta`` in (0, 1), all eigenvalues in [0, 1].
- ``negative_gate=True`` (``[-1,1]`` only; no other codebase has it) also maps the gate to ``alpha = 2 decay - 1``
  in (-1, 1]. Then the ``head_dim - 1`` eigenvalues off ``k_t`` can be negative too: one token can flip the
  sign of the whole state (a ``-I``-like step, as a signed Mamba gate does), not only its component along
  ``k_t``; and ``alpha = 0`` (forget everything) sits at ``decay = 1/2`` instead of at ``decay -> 0``. At init
  ``decay`` is close to 1 (small dt), so a signed-gate model starts near ``alpha = 1`` like an unsigned one.

The value heads are ``gdn_expand_v`` times wider than the key heads (fla's ``expand_v``, default 2); the
recurrent state per head is ``head_dim x head_dim * gdn_expand_v``, fp32 in the cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ..kernels import gated_delta_rule
from ..param_tags import tag_no_weight_decay
from .base import Mixer, boolean, positive_float, positive_int
from .conv import ShortConv
from .gates import deltanet_beta, gated_delta_alpha, negative_gate_error
from .norm import RMSNorm
from .registry import register_mixer


@register_mixer("gated_deltanet")
class GatedDeltaNetMixer(Mixer):
    """Gated DeltaNet: one gated generalized Householder transition ``alpha_t (I - beta_t k_t k_t^T)`` per head.

    Fields shared with ``deltanet``: ``num_heads``, ``head_dim`` (None: ``hidden_size // num_heads``),
    ``use_short_conv``, ``conv_size``; with ``mamba``/``mamba2``: ``dt_min``/``dt_max``/``dt_init_floor`` (the
    range of the initial ``softplus(dt_bias)``). q and k are always L2-normalised (as in fla), and the output gate
    is always on (fla's default ``use_gate=True``). :class:`~lrnn_lm.layers.deltaproduct.DeltaProductMixer`
    reuses all of it with ``num_householder`` keys, values and betas per token.
    """

    config_fields = {
        "num_heads": 4,
        "head_dim": None,
        "use_short_conv": True,
        "conv_size": 4,
        "dt_min": 0.001,
        "dt_max": 0.1,
        "dt_init_floor": 1e-4,
        "gdn_expand_v": 2,
        "negative_gate": False,
    }
    eigenvalues_are = (
        "alpha_t (1 - beta_t), the eigenvalue along k_t, one per head and token; the other head_dim - 1 "
        "eigenvalues are alpha_t itself (in (0,1], or in (-1,1] with negative_gate) and are not counted"
    )

    @classmethod
    def validate_config(cls, config, fail, in_use: bool) -> None:
        positive_int(config, "num_heads", fail)
        positive_int(config, "conv_size", fail)
        positive_int(config, "head_dim", fail, allow_none=True)
        boolean(config, "use_short_conv", fail)
        boolean(config, "negative_gate", fail)
        positive_float(config, "gdn_expand_v", fail)
        for field in ("dt_min", "dt_max", "dt_init_floor"):
            positive_float(config, field, fail)
        if not in_use:
            return
        if config.head_dim is None and config.hidden_size % config.num_heads:
            fail("num_heads", f"must divide hidden_size={config.hidden_size} when head_dim is not set")
        head_dim = cls.head_dim_of(config)
        if not float(head_dim * config.gdn_expand_v).is_integer():
            fail("gdn_expand_v", f"head_dim * gdn_expand_v must be an integer (head_dim={head_dim})")
        if not config.dt_min <= config.dt_max:
            fail("dt_min", f"need dt_min <= dt_max={config.dt_max}")
        error = negative_gate_error(config.eigval_range, config.negative_gate)
        if error is not None:
            fail("negative_gate", error)

    @staticmethod
    def head_dim_of(config) -> int:
        return config.head_dim if config.head_dim is not None else config.hidden_size // config.num_heads

    @classmethod
    def value_head_dim_of(cls, config) -> int:
        return int(cls.head_dim_of(config) * config.gdn_expand_v)

    @classmethod
    def num_householder_of(cls, config) -> int:
        """Householder steps (keys, values and betas) per token: 1 here, ``num_householder`` in DeltaProduct."""
        return 1

    @classmethod
    def has_gate(cls, config) -> bool:
        """Whether the layer has the gate ``alpha`` (DeltaProduct may run without it)."""
        return True

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        d, H = config.hidden_size, config.num_heads
        K, V, n = self.head_dim_of(config), self.value_head_dim_of(config), self.num_householder_of(config)
        self.num_heads, self.head_dim, self.value_head_dim, self.num_householder = H, K, V, n
        self.q_proj = nn.Linear(d, H * K, bias=False)
        # n keys / values / betas per token, laid out as (n, H, dim) like fla's gated_deltaproduct.
        self.k_proj = nn.Linear(d, n * H * K, bias=False)
        self.v_proj = nn.Linear(d, n * H * V, bias=False)
        self.b_proj = nn.Linear(d, n * H, bias=False)
        self.split = [H * K, n * H * K, n * H * V]
        if self.has_gate(config):
            self.a_proj = nn.Linear(d, H, bias=False)
            self.A_log = nn.Parameter(torch.empty(H))
            self.dt_bias = nn.Parameter(torch.empty(H))
            tag_no_weight_decay(self.A_log, self.dt_bias)
        else:
            self.a_proj = self.A_log = self.dt_bias = None
        # One depthwise conv over the concatenated q, k, v channels equals three separate ones.
        self.conv = ShortConv(sum(self.split), config.conv_size, bias=False) if config.use_short_conv else None
        self.g_proj = nn.Linear(d, H * V, bias=False)
        self.o_norm = RMSNorm(V, eps=config.norm_eps)
        self.o_proj = nn.Linear(H * V, d, bias=False)

    @torch.no_grad()
    def init_weights(self) -> None:
        """fla's init of the gate: ``A`` uniform in [1, 16] (fla draws from [0, 16]; 1 keeps ``log A`` finite and
        the decay rate of every head at least that of mamba2's first), dt bias = softplus^-1 of a log-uniform
        dt in [dt_min, dt_max], floored at dt_init_floor."""
        if self.A_log is None:
            return
        cfg = self.config
        A = 1.0 + 15.0 * torch.rand(self.num_heads, device=self.A_log.device)
        init.copy_(self.A_log, torch.log(A))
        u = torch.rand(self.num_heads, device=self.dt_bias.device)
        dt = torch.exp(u * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=cfg.dt_init_floor)
        init.copy_(self.dt_bias, dt + torch.log(-torch.expm1(-dt)))

    def gates(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """``alpha: [batch, T, H]`` fp32 (None without a gate); 1 on padded steps in every setting."""
        if self.a_proj is None:
            return None
        return self.gates_from_logits(self.a_proj(hidden), mask)

    def gates_from_logits(self, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """:meth:`gates` from ``a_proj``'s output ``[batch, T, H]``."""
        dt = F.softplus(logits.float() + self.dt_bias.float())
        if mask is not None:
            # dt = 0 gives decay = 1, hence alpha = 1 with or without the signed gate.
            dt = dt * mask
        decay = torch.exp(-torch.exp(self.A_log.float()) * dt)
        return gated_delta_alpha(decay, self.config.eigval_range, self.config.negative_gate)

    def projections(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """q, k, v (concatenated, ``"qkv"``), the beta logits (``"b"``), the gate logits (``"a"``, when the
        layer has the gate) and the output gate (``"g"``): one matmul reads ``hidden`` once (under autocast: one
        bf16 copy kept for the backward, not one per projection). The weights stay separate parameters."""
        layers = [self.q_proj, self.k_proj, self.v_proj, self.b_proj, self.g_proj]
        names = ["qkv", "b", "g"]
        if self.a_proj is not None:
            layers.insert(4, self.a_proj)
            names.insert(2, "a")
        out = F.linear(hidden, torch.cat([layer.weight for layer in layers]))
        n_out = [sum(self.split), self.b_proj.out_features] + [layer.out_features for layer in layers[4:]]
        return dict(zip(names, out.split(n_out, dim=-1), strict=True))

    def project(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        conv_history,
        cu_seqlens,
        normalize_qk: bool = True,
        parts: dict | None = None,
    ):
        """Everything before the kernel: ``q [B, T, H, K]``, ``k [B, T, n, H, K]``, ``v [B, T, n, H, V]``,
        ``beta [B, T, n, H]``, ``alpha [B, T, H]`` (or None) and the conv input for the cache.

        ``normalize_qk=False`` leaves the L2 norm of q and k to the kernel (``forward`` does, so no normalised
        copies are kept for the backward); ``parts``: :meth:`projections` of ``hidden`` if already computed."""
        batch, T, _ = hidden.shape
        H, K, V, n = self.num_heads, self.head_dim, self.value_head_dim, self.num_householder
        parts = self.projections(hidden) if parts is None else parts
        qkv = parts["qkv"]
        if mask is not None:
            qkv = qkv * mask
        conv_in = qkv
        qkv = self.conv(qkv, history=conv_history, cu_seqlens=cu_seqlens) if self.conv is not None else F.silu(qkv)
        q, k, v = qkv.split(self.split, dim=-1)
        q, k, v = q.reshape(batch, T, H, K), k.reshape(batch, T, n, H, K), v.reshape(batch, T, n, H, V)
        if normalize_qk:
            q, k = (F.normalize(t.float(), dim=-1).to(t.dtype) for t in (q, k))
        beta = deltanet_beta(parts["b"].reshape(batch, T, n, H), self.config.eigval_range)
        if mask is not None:
            # beta = 0 (with alpha = 1 from gates) makes a padded step the identity with no input.
            beta = beta * mask[..., None]
        alpha = self.gates_from_logits(parts["a"], mask) if self.a_proj is not None else None
        return q, k, v, beta, alpha, conv_in

    def transition_eigenvalues(self, hidden, mask, cu_seqlens) -> torch.Tensor:
        _, _, _, beta, alpha, _ = self.project(hidden, mask, None, cu_seqlens)
        # ||k_t|| = 1 by construction, so the eigenvalue along k_t is alpha_t (1 - beta_t) exactly.
        return alpha * (1 - beta[:, :, 0])

    def run_kernel(self, q, k, v, beta, alpha, state, output_final_state: bool, cu_seqlens):
        return gated_delta_rule(
            q,
            k[:, :, 0],
            v[:, :, 0],
            beta[:, :, 0],
            alpha,
            use_qk_l2norm_in_kernel=True,
            initial_state=state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
            backend=self.config.kernel_backend,
        )

    def forward(self, hidden: torch.Tensor, cache=None, mask: torch.Tensor | None = None, cu_seqlens=None):
        conv_history, state = self.read_cache(cache, self.conv)
        parts = self.projections(hidden)
        q, k, v, beta, alpha, conv_in = self.project(hidden, mask, conv_history, cu_seqlens, False, parts)
        self.write_conv_input(cache, conv_in, self.conv)
        o, final = self.run_kernel(q, k, v, beta, alpha, state, cache is not None, cu_seqlens)
        self.write_state(cache, final)
        gate = parts["g"].reshape(*o.shape)
        o = self.o_norm(o, gate).reshape(*hidden.shape[:2], -1)
        return self.o_proj(o.to(hidden.dtype))
