"""Argument checks shared by the public ops: shapes, dtypes and value ranges, each error naming the argument.

Shape and dtype checks are free (metadata only) and always run. Value checks (finite inputs, ``beta`` in
[0, 2]) read the data, which on CUDA means a host sync per call; they always run on CPU and run on CUDA only
when ``LRNN_KERNEL_CHECKS=1`` is set (a debug switch, off by default so the fast path never syncs).
"""

from __future__ import annotations

import math
import os

import torch


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def value_checks_enabled(device: torch.device) -> bool:
    """Whether the data-reading checks run for tensors on ``device`` (always on CPU; opt-in on CUDA)."""
    return device.type != "cuda" or os.environ.get("LRNN_KERNEL_CHECKS") == "1"


def check_floats(op: str, **tensors: torch.Tensor | None) -> None:
    """Every given tensor is floating point, and (where value checks run) finite."""
    for name, t in tensors.items():
        if t is None:
            continue
        expect(t.is_floating_point(), f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
        if value_checks_enabled(t.device) and t.numel() and not _all_finite(t.detach()):
            raise ValueError(f"{op}: {name} has non-finite values (NaN or Inf)")


def _all_finite(t: torch.Tensor) -> bool:
    # One reduction in the tensor's own dtype, with no copy (an fp64 sum would first copy the whole tensor to fp64):
    # any NaN or Inf makes the sum non-finite. A sum of large finite values can overflow too, so a non-finite sum
    # is only a suspicion, confirmed or cleared elementwise.
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def check_range(op: str, name: str, t: torch.Tensor, low: float, high: float) -> None:
    """``low <= t <= high`` elementwise, where value checks run."""
    if value_checks_enabled(t.device) and t.numel():
        lo, hi = (float(v) for v in torch.aminmax(t.detach()))
        expect(
            low <= lo and hi <= high, f"{op}: {name} must lie in [{low:g}, {high:g}], got values in [{lo:g}, {hi:g}]"
        )


def check_state(op: str, initial_state: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    if initial_state is not None:
        expect(
            tuple(initial_state.shape) == shape,
            f"{op}: initial_state must be {shape}, got {tuple(initial_state.shape)}",
        )
        check_floats(op, initial_state=initial_state)
