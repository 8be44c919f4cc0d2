"""Gated MLP (SwiGLU with the default ``silu``), optionally placed after each mixer."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN


class SwiGLU(nn.Module):
    """``down(act(gate(x)) * up(x))``, Llama's MLP; ``act`` is ``hidden_act`` (``silu`` gives SwiGLU)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu") -> None:
        super().__init__()
        self.act = ACT2FN[hidden_act]
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
