"""Known faults of fla's Triton kernels with the installed Triton, found when a backend is resolved.

fla 0.6 refuses the backward of its *gated* chunk kernels (``chunk_bwd_dqkwg`` with ``g``: ``chunk_simple_gla``,
``chunk_gated_delta_rule``) on Hopper GPUs (sm_90: H100, H200) with Triton >= 3.4.0 and < 3.7.1, because that
Triton gives wrong results there (fla issue #640), unless ``tilelang`` is installed (fla then runs that kernel in
TileLang). Our pins (requirements.txt: torch 2.13, triton 3.9) are not affected; an image with an older torch is:
the H200 lent to this project on 2026-11-30 had torch 2.11 with triton 3.6, and the first backward of the ``ssd``
Triton backend (then fla's ``chunk_simple_gla``; now our own kernels) stopped there with fla's RuntimeError.
Knowing it at resolution lets ``auto`` pick ``chunk`` at the start of a run and say why, instead of a failure at
the first backward.
"""

from __future__ import annotations

import importlib.util

import torch
from packaging.version import Version

# The ops whose Triton backend runs fla's gated chunk kernels (delta_product: when it has a forget gate). ``ssd``
# is not one: its Triton backend is our own kernels (kernels/ssd/triton_kernels.py), so ``auto`` keeps Triton there.
GATED_FLA_OPS = ("gated_delta_rule", "delta_product")
BROKEN_TRITON = (Version("3.4.0"), Version("3.7.1"))  # [from, to): fla's TRITON_ABOVE_3_4_0 and not _3_7_1


def gated_backward_refusal(
    device: torch.device,
    triton_version: str | None = None,
    capability: tuple[int, int] | None = None,
    tilelang: bool | None = None,
) -> str | None:
    """Why fla's gated chunk backward will refuse to run on ``device``, or None when it will run.

    The keyword arguments stand in for the installed Triton, the device's compute capability and whether
    ``tilelang`` imports (for tests; each is read from the machine when None)."""
    if device.type != "cuda":
        return None
    if triton_version is None:
        try:
            import triton
        except ImportError:
            return None
        triton_version = triton.__version__
    if capability is None:
        index = device.index if device.index is not None else torch.cuda.current_device()
        capability = torch.cuda.get_device_capability(index)
    if tilelang is None:
        tilelang = importlib.util.find_spec("tilelang") is not None
    low, high = BROKEN_TRITON
    if capability[0] != 9 or tilelang or not (low <= Version(triton_version) < high):
        return None
    return (
        f"fla's gated chunk backward refuses Triton {triton_version} on this Hopper GPU (sm_{capability[0]}"
        f"{capability[1]}): Triton >= 3.4.0 and < 3.7.1 gives wrong gradients there (fla issue #640). Install the "
        "pinned torch/triton of requirements.txt (triton 3.9.0) or tilelang"
    )
