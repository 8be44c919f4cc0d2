"""RMSNorm, plain and output-gated, computed in fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..param_tags import tag_no_weight_decay
from . import fused


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        tag_no_weight_decay(self.weight)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """``rmsnorm(x) * weight``, times ``silu(gate)`` when a gate is given.

        On CUDA, fla's fused kernels (``rms_norm``, ``rms_norm_gated``): they compute in fp32 too but keep only
        ``x`` (and the gate) and a per-row ``rstd`` for the backward, not fp32 copies.
        """
        if fused.use_fla(x):
            if gate is None:
                from fla.modules.norm.layernorm import rms_norm

                return rms_norm(x, self.weight, None, eps=self.eps)
            from fla.modules.norm.fused_norm_gate import rms_norm_gated

            return rms_norm_gated(x, gate, self.weight, None, activation="swish", eps=self.eps)
        xf = x.float()
        y = F.rms_norm(xf, (xf.shape[-1],), self.weight.float(), self.eps)
        if gate is not None:
            y = y * F.silu(gate.float())
        return y.to(x.dtype)


class GatedGroupRMSNorm(nn.Module):
    """Mamba-2's gated norm: ``rmsnorm(x * silu(gate))`` over groups of ``dim // groups`` channels, times ``weight``.

    The gate comes before the norm (mamba_ssm's ``norm_before_gate=False``), unlike :class:`RMSNorm`'s.
    """

    def __init__(self, dim: int, groups: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.groups, self.eps = groups, eps
        tag_no_weight_decay(self.weight)

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """On CUDA, fla's fused gated norm (mamba_ssm's ``rmsnorm_fn``): it keeps ``x``, the gate and a per-row
        ``rstd`` for the backward instead of five fp32 intermediates."""
        if fused.use_fla(x):
            from fla.modules.norm.layernorm_gated import rmsnorm_fn

            group = x.shape[-1] // self.groups
            return rmsnorm_fn(x, self.weight, None, gate, eps=self.eps, group_size=group, norm_before_gate=False)
        y = x.float() * F.silu(gate.float())
        if self.groups == 1:  # torch's fused kernel takes the weight only when it spans the normalized channels
            return F.rms_norm(y, (y.shape[-1],), self.weight.float(), self.eps).to(x.dtype)
        grouped = F.rms_norm(y.unflatten(-1, (self.groups, -1)), (y.shape[-1] // self.groups,), eps=self.eps)
        return (grouped.flatten(-2) * self.weight.float()).to(x.dtype)
