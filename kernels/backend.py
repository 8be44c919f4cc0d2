"""Backend resolution: explicit, validated, and logged once per (op, backend) per process."""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger("lrnn_lm.kernels")

BACKENDS = ("auto", "triton", "chunk", "naive")
_logged: set[tuple[str, str, str]] = set()


def triton_usable(device: torch.device) -> bool:
    """True when Triton can run kernels on ``device``: CUDA with triton installed, or the CPU interpreter."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(op: str, backend: str, device: torch.device) -> str:
    """Map ``backend`` to a concrete one for tensors on ``device``.

    ``auto`` is decided by the device only (Triton on CUDA, chunk elsewhere), never by the
    sequence length or by train versus eval, so a run uses one algorithm throughout.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for {op}; choose one of {BACKENDS}")
    if backend == "auto":
        chosen = "triton" if device.type == "cuda" and triton_usable(device) else "chunk"
    else:
        chosen = backend
    if chosen == "triton" and not triton_usable(device):
        raise RuntimeError(
            f"{op}: backend='triton' needs CUDA tensors or TRITON_INTERPRET=1 set before triton is imported "
            f"(tensors are on {device}); use backend='chunk' on CPU"
        )
    key = (op, backend, chosen)
    if key not in _logged:
        _logged.add(key)
        logger.info("%s: backend=%r resolved to %r on %s", op, backend, chosen, device.type)
    return chosen
