"""Gated MLP (SwiGLU with the default ``silu``), optionally placed after each mixer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from . import fused


class SwiGLU(nn.Module):
    """``down(act(gate(x)) * up(x))``, Llama's MLP; ``act`` is ``hidden_act`` (``silu`` gives SwiGLU)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu") -> None:
        super().__init__()
        self.act = ACT2FN[hidden_act]
        self.is_silu = hidden_act == "silu"
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_silu and fused.use_fla(x):
            return self._fla_forward(x)
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))

    def _fla_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One matmul reads ``x`` for both projections; fla's ``swiglu_linear`` keeps only their outputs for the
        backward and recomputes ``silu(gate) * up`` there, instead of keeping it and ``silu(gate)``."""
        from fla.modules.activations import swiglu_linear

        dtype = fused.autocast_dtype(x)
        gate_up = F.linear(x, torch.cat([self.gate_proj.weight, self.up_proj.weight]))
        gate, up = gate_up.chunk(2, dim=-1)
        return swiglu_linear(gate, up, self.down_proj.weight.to(dtype), None)
