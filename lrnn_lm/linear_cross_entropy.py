"""Cross entropy of a linear head that never holds ``[tokens, vocab]`` logits in fp32 for the backward.

The plain head keeps the bf16 logits, their fp32 copy and the log-softmax for the backward: with a 32000-token
vocabulary about 450 KB per token, more than four layers of activations. Here the loss and its gradients are
computed in the forward, a chunk of tokens at a time (as fla's and Liger's fused linear cross entropy do), and
only ``d loss / d hidden`` (``[tokens, d]``) and ``d loss / d weight`` (``[vocab, d]``) are kept.

- On CUDA with fla installed: fla's ``fused_linear_cross_entropy_loss`` (Triton).
- Elsewhere: :class:`_ChunkedLinearCrossEntropy`, the same algorithm in torch.

Numerics follow the plain head: the matmul runs in the autocast dtype when autocast is on (as ``nn.Linear`` would),
the softmax and the loss in fp32. Label smoothing and the ignored label follow ``F.cross_entropy``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import fused
from .tasks.base import IGNORE_INDEX

CHUNK_TOKENS = 2048  # tokens per chunk: a [2048, vocab] fp32 block at a time (250 MB at vocab 32000)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
    chunk_tokens: int = CHUNK_TOKENS,
    use_fla: bool | None = None,
) -> torch.Tensor:
    """Mean ``F.cross_entropy(hidden @ weight.T, target)`` over the targets that are not ``ignore_index``.

    Args:
        hidden: ``[N, d]``; weight: ``[V, d]``; target: ``[N]`` int.
        label_smoothing: ``F.cross_entropy``'s ``label_smoothing``.
        chunk_tokens: tokens per chunk on the torch path.
        use_fla: fla's Triton kernel (None: on CUDA when fla imports).

    Returns the fp32 scalar loss (NaN when every target is ignored, as ``F.cross_entropy``).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be [N, d] and weight [V, d], got {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"target must be [N]={hidden.shape[0]}, got {tuple(target.shape)}")
    device = hidden.device.type
    if torch.is_autocast_enabled(device):  # the matmul in the autocast dtype, as the plain nn.Linear head
        dtype = torch.get_autocast_dtype(device)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    if use_fla is None:
        use_fla = fused.use_fla(hidden)
    with torch.autocast(device, enabled=False):
        if use_fla:
            from fla.modules.fused_linear_cross_entropy import fused_linear_cross_entropy_loss

            return fused_linear_cross_entropy_loss(
                hidden, target, weight, ignore_index=ignore_index, label_smoothing=label_smoothing
            ).float()
        return _ChunkedLinearCrossEntropy.apply(hidden, weight, target, label_smoothing, ignore_index, chunk_tokens)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Loss and both gradients in the forward, ``chunk_tokens`` at a time; the backward only scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, target, eps: float, ignore_index: int, chunk_tokens: int):
        N, V = hidden.shape[0], weight.shape[0]
        valid = target != ignore_index
        count = valid.sum()
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # 1 / count (inf when nothing counts: the loss is then 0 * inf = NaN, as F.cross_entropy's).
        scale = 1.0 / count.float()
        for start in range(0, N, chunk_tokens):
            x = hidden[start : start + chunk_tokens]
            keep = valid[start : start + chunk_tokens]
            tgt = torch.where(keep, target[start : start + chunk_tokens], 0)
            logits = (x @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            per_token = lse - logits.gather(1, tgt[:, None])[:, 0]
            if eps:
                per_token = (1 - eps) * per_token + eps * (lse - logits.mean(-1))
            total += torch.where(keep, per_token, 0.0).sum()
            # d/dlogits of the summed loss: softmax - (1 - eps) onehot - eps / V, zero on ignored rows.
            grad = logits.sub_(lse[:, None]).exp_()
            grad.scatter_add_(1, tgt[:, None], torch.full_like(lse[:, None], -(1 - eps)))
            if eps:
                grad.sub_(eps / V)
            grad.mul_((keep.float() * scale)[:, None])
            grad = grad.to(hidden.dtype)
            torch.matmul(grad, weight, out=grad_hidden[start : start + chunk_tokens])
            grad_weight += (grad.T @ x).float()
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total * scale

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        grad_loss = grad_loss.float()
        return (
            (grad_hidden * grad_loss).to(grad_hidden.dtype),
            (grad_weight * grad_loss).to(grad_weight.dtype),
            *[None] * 4,
        )


def linear_causal_lm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0, **kwargs
) -> torch.Tensor:
    """The causal-LM loss of ``hidden [B, T, d] @ weight.T`` against ``labels [B, T]`` shifted by one
    (position ``t`` predicts ``labels[:, t + 1]``; ``-100`` is ignored), as the model's loss with logits."""
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match hidden {tuple(hidden.shape)} without d")
    shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].to(hidden.device)
    return linear_cross_entropy(hidden.flatten(0, -2), weight, shifted.flatten(), label_smoothing, **kwargs)
