"""RMSNorm, plain and output-gated, computed in fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..param_tags import tag_no_weight_decay


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        tag_no_weight_decay(self.weight)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """``rmsnorm(x) * weight``, times ``silu(gate)`` when a gate is given."""
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        if gate is not None:
            y = y * F.silu(gate.float())
        return y.to(x.dtype)
