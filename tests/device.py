"""The device the kernel, model and generation tests run on (``python -m pytest --device cuda``; CPU by default),
the backends tested there, and the tolerances per dtype. ``conftest.py`` sets the device once, before collection.

Tolerances are relative RMSE (:func:`lrnn_lm.kernels.testing.rel_rmse`) of a fast backend against ``naive`` run
on the same inputs and the same device:

- fp32 inputs, ``chunk``: 1e-5. Both sides compute in fp32 and differ only in summation order.
- fp32 inputs, ``triton`` on a GPU: 5e-3. Triton's ``tl.dot`` multiplies fp32 in TF32 on NVIDIA GPUs (10-bit
  mantissa, one ulp ~1e-3 relative), and fla's kernels keep it that way.
- bf16 inputs, ``chunk``: 1e-2. Outputs and input gradients are rounded once to bf16 (one ulp is 2**-8 = 3.9e-3
  relative); both sides compute in fp32 in between.
- bf16 inputs, ``triton``: 2e-2. fla's kernels also keep intermediates (WY factors, chunk states) in bf16 between
  kernels, one more rounding.
"""

from __future__ import annotations

import torch

_DEVICE = torch.device("cpu")

TOL = {
    ("chunk", torch.float32): 1e-5,
    ("triton", torch.float32): 5e-3,
    ("chunk", torch.bfloat16): 1e-2,
    ("triton", torch.bfloat16): 2e-2,
}


def set_device(name: str) -> None:
    global _DEVICE
    _DEVICE = torch.device(name)


def device() -> torch.device:
    """The device chosen with ``--device`` (``cpu`` unless told otherwise)."""
    return _DEVICE


def on_cuda() -> bool:
    return _DEVICE.type == "cuda"


def fast_backends() -> list[str]:
    """The backends tested against ``naive``: ``chunk`` everywhere; ``triton`` and ``auto`` on a GPU too (on the
    CPU triton runs only under the interpreter, a separate CI step, and ``auto`` resolves to ``chunk``)."""
    return ["chunk", "triton", "auto"] if on_cuda() else ["chunk"]


def resolved(backend: str) -> str:
    """What ``auto`` runs on this device (the tolerance follows it)."""
    return ("triton" if on_cuda() else "chunk") if backend == "auto" else backend


def tolerance(backend: str, dtype: torch.dtype) -> float:
    return TOL[resolved(backend), dtype]
