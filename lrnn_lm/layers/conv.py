"""Depthwise causal short convolution that respects packed-sequence boundaries and a decode cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def positions_in_sequence(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Position of every packed token inside its own sequence: ``[total]`` int64."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    starts = torch.repeat_interleave(cu_seqlens[:-1], lengths, output_size=total)
    return torch.arange(total, device=cu_seqlens.device) - starts


class ShortConv(nn.Module):
    """Causal depthwise conv over time with kernel ``W``: ``y_t = sum_s w[W-1-s] * x_{t-s} + b``, then an activation.

    With ``cu_seqlens`` no window reaches across a sequence start. With ``history`` (the previous inputs
    from a decode cache, ``[batch, channels, >= W-1]``) windows reach into it instead of into zeros.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True, activation: str | None = "silu") -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv1d = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias, padding=0)
        self.activation = activation

    def forward(
        self,
        x: torch.Tensor,
        history: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x: [batch, T, channels]`` -> ``[batch, T, channels]``."""
        T, W = x.shape[1], self.kernel_size
        xt = x.transpose(1, 2)
        if cu_seqlens is not None:
            y = self._varlen(xt, cu_seqlens)
        else:
            if history is not None:
                xt = torch.cat([history[..., -(W - 1) :].to(xt.dtype), xt], dim=-1) if W > 1 else xt
            else:
                xt = F.pad(xt, (W - 1, 0))
            y = F.conv1d(xt, self.conv1d.weight, self.conv1d.bias, groups=xt.shape[1])[..., -T:]
        # Contiguous in [batch, T, channels] before the activation: silu's backward on the transposed view runs
        # about 6x slower on CPU, and the conv's own backward gets a strided gradient (2x the whole conv,
        # forward + backward, at B 4, T 256, 288 channels, 1 thread; benchmarks/train_throughput.py).
        y = y.transpose(1, 2).contiguous()
        return F.silu(y) if self.activation == "silu" else y

    def _varlen(self, xt: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        T, W = xt.shape[-1], self.kernel_size
        pos = positions_in_sequence(cu_seqlens, T)
        w = self.conv1d.weight[:, 0, :]  # [C, W]; tap W-1-s multiplies x_{t-s}
        y = xt * w[:, W - 1 : W]
        for s in range(1, W):
            shifted = F.pad(xt, (s, 0))[..., :T] * (pos >= s).to(xt.dtype)
            y = y + shifted * w[:, W - 1 - s : W - s]
        if self.conv1d.bias is not None:
            y = y + self.conv1d.bias[:, None]
        return y
