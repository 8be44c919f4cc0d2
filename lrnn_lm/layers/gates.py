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


def negative_gate_error(eigval_range: str, negative_gate: bool) -> str | None:
    """Why ``negative_gate`` cannot be used with ``eigval_range`` (None if it can): the signed gate is a
    ``[-1,1]`` option, so a ``[0,1]`` model with it would not be a ``[0,1]`` model."""
    if negative_gate and _check(eigval_range) != "[-1,1]":
        return "negative_gate=True needs eigval_range='[-1,1]' (a signed gate gives negative eigenvalues)"
    return None


def gated_delta_alpha(decay: torch.Tensor, eigval_range: str, negative_gate: bool) -> torch.Tensor:
    """Gated DeltaNet's gate ``alpha`` from ``decay = exp(-exp(A_log) * softplus(...))`` in (0, 1], in fp32.

    Off (the default, and fla's convention in both ranges): ``alpha = decay`` in (0, 1]; the range only moves
    ``beta`` (see :func:`deltanet_beta`). With ``negative_gate`` (``[-1,1]`` only): ``alpha = 2 decay - 1`` in
    (-1, 1], so the eigenvalues ``alpha`` off ``k`` may be negative too. ``decay = 1`` stays ``alpha = 1``, which
    keeps a padded step (``dt = 0``) the identity either way.
    """
    error = negative_gate_error(eigval_range, negative_gate)
    if error is not None:
        raise ValueError(error)
    decay = decay.float()
    return 2.0 * decay - 1.0 if negative_gate else decay


def _check(eigval_range: str) -> str:
    if eigval_range not in ("[0,1]", "[-1,1]"):
        raise ValueError(f"eigval_range must be '[0,1]' or '[-1,1]', got {eigval_range!r}")
    return eigval_range
