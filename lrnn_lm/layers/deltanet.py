"""DeltaNet mixer (as in fla's DeltaNet layer): q/k/v with short conv, L2-normalised q and k, beta, delta rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import delta_rule
from .base import Mixer, boolean, positive_int
from .conv import ShortConv
from .gates import deltanet_beta
from .norm import RMSNorm
from .registry import register_mixer

QK_NORMS = ("l2", "none")


@register_mixer("deltanet")
class DeltaNetMixer(Mixer):
    """DeltaNet (Yang et al., 2024): one generalized Householder transition ``I - beta_t k_t k_t^T`` per head."""

    config_fields = {
        "num_heads": 4,
        "head_dim": None,
        "use_short_conv": True,
        "conv_size": 4,
        "use_output_gate": False,
        "qk_norm": "l2",
    }
    eigenvalues_are = (
        "1 - beta_t (1 - beta_t ||k_t||^2 without L2-normalised keys), the eigenvalue along k_t, one per "
        "head and token; the other head_dim - 1 eigenvalues are 1 and are not counted"
    )

    @classmethod
    def validate_config(cls, config, fail, in_use: bool) -> None:
        positive_int(config, "num_heads", fail)
        positive_int(config, "conv_size", fail)
        positive_int(config, "head_dim", fail, allow_none=True)
        boolean(config, "use_short_conv", fail)
        boolean(config, "use_output_gate", fail)
        if config.qk_norm not in QK_NORMS:
            fail("qk_norm", f"must be one of {QK_NORMS}")
        if not in_use:
            return
        if config.head_dim is None and config.hidden_size % config.num_heads:
            fail("num_heads", f"must divide hidden_size={config.hidden_size} when head_dim is not set")
        if config.eigval_range == "[-1,1]" and config.qk_norm != "l2":
            # beta in (0, 2) gives eigenvalue 1 - beta ||k||^2 in (-1, 1) only when ||k|| = 1.
            fail("qk_norm", "DeltaNet with eigval_range='[-1,1]' needs L2-normalised keys (qk_norm='l2')")

    @staticmethod
    def head_dim_of(config) -> int:
        return config.head_dim if config.head_dim is not None else config.hidden_size // config.num_heads

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        d, H, Dh = config.hidden_size, config.num_heads, self.head_dim_of(config)
        self.num_heads, self.head_dim = H, Dh
        self.q_proj = nn.Linear(d, H * Dh, bias=False)
        self.k_proj = nn.Linear(d, H * Dh, bias=False)
        self.v_proj = nn.Linear(d, H * Dh, bias=False)
        self.b_proj = nn.Linear(d, H, bias=False)
        # One depthwise conv over the concatenated q, k, v channels equals three separate ones.
        self.conv = ShortConv(3 * H * Dh, config.conv_size, bias=False) if config.use_short_conv else None
        self.g_proj = nn.Linear(d, H * Dh, bias=False) if config.use_output_gate else None
        self.o_norm = RMSNorm(Dh, eps=config.norm_eps)
        self.o_proj = nn.Linear(H * Dh, d, bias=False)

    def betas(self, hidden: torch.Tensor) -> torch.Tensor:
        """``beta: [batch, T, H]`` in (0, 1) or (0, 2); the eigenvalue along ``k`` is ``1 - beta``."""
        return deltanet_beta(self.b_proj(hidden), self.config.eigval_range)

    def projections(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """q, k, v (concatenated, ``"qkv"``), the beta logits (``"b"``) and the output gate (``"g"``, when the
        layer has one): one matmul reads ``hidden`` once (under autocast: one bf16 copy kept for the backward,
        not one per projection). The weights stay separate parameters."""
        layers = [self.q_proj, self.k_proj, self.v_proj, self.b_proj] + ([self.g_proj] if self.g_proj else [])
        out = F.linear(hidden, torch.cat([layer.weight for layer in layers]))
        HD = self.num_heads * self.head_dim
        parts = out.split([3 * HD, self.num_heads] + ([HD] if self.g_proj else []), dim=-1)
        return dict(zip(("qkv", "b", "g"), parts, strict=False))

    def transition_eigenvalues(self, hidden, mask, cu_seqlens) -> torch.Tensor:
        _, k, _, beta, _ = self.project(hidden, mask, None, cu_seqlens)
        if self.config.qk_norm == "l2":
            # ||k_t|| = 1 by construction; squaring a bf16-rounded k would only add noise around 1 (and could
            # show a [0,1] model tiny negative values it does not have).
            return 1 - beta
        return 1 - beta * k.float().pow(2).sum(-1)

    def project(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        conv_history,
        cu_seqlens,
        normalize_qk: bool = True,
        parts: dict | None = None,
    ):
        """Everything before the delta rule: returns ``q, k, v, beta`` and the conv input for the cache.

        ``normalize_qk=False`` leaves the L2 norm of q and k to the kernel (``forward`` does, so no normalised
        copies are kept for the backward); ``parts``: :meth:`projections` of ``hidden`` if already computed."""
        batch, T, _ = hidden.shape
        parts = self.projections(hidden) if parts is None else parts
        qkv = parts["qkv"]
        if mask is not None:
            qkv = qkv * mask
        conv_in = qkv
        qkv = self.conv(qkv, history=conv_history, cu_seqlens=cu_seqlens) if self.conv is not None else F.silu(qkv)
        q, k, v = (t.reshape(batch, T, self.num_heads, self.head_dim) for t in qkv.chunk(3, dim=-1))
        if self.config.qk_norm == "l2" and normalize_qk:
            q, k = (F.normalize(t.float(), dim=-1).to(t.dtype) for t in (q, k))
        beta = deltanet_beta(parts["b"], self.config.eigval_range)
        if mask is not None:
            # beta = 0 makes a padded step the identity with no input.
            beta = beta * mask
        return q, k, v, beta, conv_in

    def forward(self, hidden: torch.Tensor, cache=None, mask: torch.Tensor | None = None, cu_seqlens=None):
        conv_history, state = self.read_cache(cache, self.conv)
        parts = self.projections(hidden)
        q, k, v, beta, conv_in = self.project(hidden, mask, conv_history, cu_seqlens, normalize_qk=False, parts=parts)
        self.write_conv_input(cache, conv_in, self.conv)
        o, final = delta_rule(
            q,
            k,
            v,
            beta,
            use_qk_l2norm_in_kernel=self.config.qk_norm == "l2",
            initial_state=state,
            output_final_state=cache is not None,
            cu_seqlens=cu_seqlens,
            backend=self.config.kernel_backend,
        )
        self.write_state(cache, final)
        gate = parts["g"].reshape(*o.shape) if self.g_proj is not None else None
        o = self.o_norm(o, gate).reshape(*hidden.shape[:2], -1)
        return self.o_proj(o.to(hidden.dtype))
