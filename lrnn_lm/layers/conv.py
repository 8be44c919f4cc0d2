"""Depthwise causal short convolution that respects packed-sequence boundaries and a decode cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fused


def positions_in_sequence(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Position of every packed token inside its own sequence: ``[total]`` int64."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    starts = torch.repeat_interleave(cu_seqlens[:-1], lengths, output_size=total)
    return torch.arange(total, device=cu_seqlens.device) - starts


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y_t = bias + sum_s weight[:, W-1-s] * x_{t-s}`` (zeros before the start): ``x: [batch, T, C]`` (any strides),
    ``weight: [C, W]``, ``bias: [C]`` or None -> ``y: [batch, T, C]``, contiguous.

    The same function as ``F.conv1d`` over the left-padded, transposed input, with no transposed copies: on CPU
    as a channels-last ``conv2d`` (:func:`conv2d_channels_last`), elsewhere as ``W`` shifted multiply-adds
    (:func:`shifted_multiply_add`). Under autocast both compute in the autocast dtype, as ``F.conv1d`` would.
    """
    if x.device.type == "cpu":
        return conv2d_channels_last(x, weight, bias)
    return shifted_multiply_add(x, weight, bias)


def conv2d_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`causal_depthwise_conv` as one ``F.conv2d`` on a ``[batch, C, 1, T + W - 1]`` channels-last view of the
    left-padded input, so oneDNN's depthwise kernel (forward and backward) reads the ``[batch, T, C]`` layout the
    mixers use, and its channels-last output is that layout again. The padding is the only copy.

    On CPU it beats the shifted multiply-adds, whose backward makes ~14 passes over the activations: forward +
    backward with the silu after it, B 4, T 256, 288 channels (the Mamba-2 benchmark's conv), 2 threads, median of
    100 interleaved rounds: 2.42 against 3.03 ms (``F.conv1d`` on transposed copies: 3.44 ms); the Mamba-2 model
    benchmark's training step: 0.981x the time (2026-11-30).
    """
    W = weight.shape[1]
    padded = F.pad(x, (0, 0, W - 1, 0))  # [batch, T + W - 1, C], contiguous
    y = F.conv2d(padded.transpose(1, 2).unsqueeze(2), weight[:, None, None, :], bias, groups=weight.shape[0])
    return y.squeeze(2).transpose(1, 2).contiguous()  # a no-op when oneDNN kept channels-last, as it does on CPU


def shifted_multiply_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`causal_depthwise_conv` as ``W`` shifted multiply-adds in the ``[batch, T, C]`` layout, with its
    backward written out (the path off CPU, where the GPU training runs measured it)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight, bias = x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
    with torch.autocast(device, enabled=False):
        return _CausalDepthwiseConv.apply(x, weight, bias)


class _CausalDepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        T, W = x.shape[1], weight.shape[1]
        x = x.contiguous()
        y = torch.mul(x, weight[:, W - 1]) if bias is None else torch.addcmul(bias, x, weight[:, W - 1])
        for s in range(1, min(W, T)):
            y[:, s:].addcmul_(x[:, : T - s], weight[:, W - 1 - s])
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        T, W = x.shape[1], weight.shape[1]
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mul(grad, weight[:, W - 1])
            for s in range(1, min(W, T)):
                grad_x[:, : T - s].addcmul_(grad[:, s:], weight[:, W - 1 - s])
        if ctx.needs_input_grad[1]:
            # Tap W-1-s saw x_{t-s}: its gradient pairs grad_t with x_{t-s} (nothing when s >= T).
            taps = [
                (grad[:, s:] * x[:, : T - s]).sum((0, 1)) if s < T else weight.new_zeros(weight.shape[0])
                for s in range(W - 1, -1, -1)
            ]
            grad_w = torch.stack(taps, dim=1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 1))
        return grad_x, grad_w, grad_b


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
        if history is None and fused.use_fla(x):
            return self._fla_forward(x, cu_seqlens)
        if cu_seqlens is not None:
            # Contiguous before the activation: silu's backward on a transposed view runs ~6x slower on CPU.
            y = self._varlen(x.transpose(1, 2), cu_seqlens).transpose(1, 2).contiguous()
        elif history is not None and W > 1:
            context = torch.cat([history[..., -(W - 1) :].to(x.dtype).transpose(1, 2), x], dim=1)
            y = causal_depthwise_conv(context, self.conv1d.weight[:, 0, :], self.conv1d.bias)[:, -T:]
        else:
            y = causal_depthwise_conv(x, self.conv1d.weight[:, 0, :], self.conv1d.bias)
        return F.silu(y) if self.activation == "silu" else y

    def _fla_forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
        """fla's ``causal_conv1d`` with the activation fused: it keeps only the input for the backward (the
        conv output, the activation's input, is recomputed there). Weights in the input's dtype, as autocast runs
        ``F.conv1d``."""
        from fla.modules.causal_conv1d import causal_conv1d

        bias = self.conv1d.bias.to(x.dtype) if self.conv1d.bias is not None else None
        y, _ = causal_conv1d(
            x,
            weight=self.conv1d.weight[:, 0, :].to(x.dtype),
            bias=bias,
            activation=self.activation,
            cu_seqlens=None if cu_seqlens is None else cu_seqlens.long(),
        )
        return y

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
