"""The one place where ``eigval_range`` becomes a gate: everything else asks these functions."""

from __future__ import annotations

import torch


def mamba_negative_eigvals(eigval_range: str) -> bool:
    """Mamba's gate ``a = exp(dt A)`` in (0, 1) becomes ``2 a - 1`` in (-1, 1) when the range is ``[-1,1]``.

    The same for Mamba-1 (a ``[d_inner, N]`` gate per token) and Mamba-2 (a scalar gate per head and token).
    """
    return _check(eigval_range) == "[-1,1]"


def deltanet_beta(logits: torch.Tensor, eigval_range: str) -> torch.Tensor:
    """DeltaNet's ``beta``: ``sigmoid`` in (0, 1), or ``2 * sigmoid`` in (0, 2) so ``1 - beta`` spans (-1, 1)."""
    beta = torch.sigmoid(logits.float())
    return 2.0 * beta if _check(eigval_range) == "[-1,1]" else beta


def _check(eigval_range: str) -> str:
    if eigval_range not in ("[0,1]", "[-1,1]"):
        raise ValueError(f"eigval_range must be '[0,1]' or '[-1,1]', got {eigval_range!r}")
    return eigval_range
