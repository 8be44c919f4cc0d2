"""The L2 normalisation of q and k that the delta-rule ops apply with ``use_qk_l2norm_in_kernel=True``.

fla's definition (``fla.modules.l2norm``), so every backend normalises alike: ``x / sqrt(sum(x^2) + eps)`` in fp32.
Inside the op the normalised q and k are the kernel's own: on the Triton backends fla's fused kernel keeps only the
bf16 result and a per-row ``rstd`` for the backward, where normalising before the call keeps an fp32 copy too.
"""

from __future__ import annotations

import torch

EPS = 1e-6


def l2norm(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``x / sqrt(sum(x^2, -1) + eps)`` in fp32 (any leading shape)."""
    xf = x.float()
    return xf * torch.rsqrt(xf.square().sum(-1, keepdim=True) + eps)


def maybe_l2norm(q: torch.Tensor, k: torch.Tensor, enabled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(l2norm(q), l2norm(k))`` when ``enabled``, else ``(q, k)`` unchanged."""
    return (l2norm(q), l2norm(k)) if enabled else (q, k)
