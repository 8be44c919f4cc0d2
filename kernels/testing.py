"""Error metrics for comparing a fast path with its naive reference."""

from __future__ import annotations

import torch


def rel_rmse(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Root-mean-square error of ``actual`` relative to the RMS of ``expected`` (both upcast to fp64)."""
    a, e = actual.detach().double(), expected.detach().double()
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        return float("inf")
    err = (a - e).pow(2).mean().sqrt()
    scale = e.pow(2).mean().sqrt()
    return float(err / scale.clamp_min(1e-12))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, name: str = "tensor") -> None:
    """Fail with a readable message when ``rel_rmse(actual, expected) > tol``."""
    r = rel_rmse(actual, expected)
    assert r <= tol, f"{name}: relative RMSE {r:.3e} exceeds {tol:.1e}"
