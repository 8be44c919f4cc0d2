"""Backend resolution: explicit, validated, and logged once per (op, backend) per process."""

from __future__ import annotations

import functools
import logging
import os

import torch

from .fla_compat import GATED_FLA_OPS, gated_backward_refusal

logger = logging.getLogger("lrnn_lm.kernels")

BACKENDS = ("auto", "triton", "chunk", "naive")
_logged: set[tuple[str, str, str, bool]] = set()


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

    ``auto`` is decided by the device and the installed software only (Triton on CUDA, chunk elsewhere, and
    chunk for fla's gated ops where fla refuses their backward: :mod:`.fla_compat`), never by the sequence length
    or by train versus eval, so a run uses one algorithm throughout. An explicit ``triton`` is kept there: its
    forward runs, and fla's own error names the fault at the first backward.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for {op}; choose one of {BACKENDS}")
    refusal = None
    if backend == "auto":
        chosen = "triton" if device.type == "cuda" and triton_usable(device) else "chunk"
        if chosen == "triton" and op in GATED_FLA_OPS:
            # decided by the installed software and the device, as above: the run still uses one algorithm
            refusal = _gated_backward_refusal(device)
            chosen = "chunk" if refusal else chosen
    else:
        chosen = backend
    if chosen == "triton" and not triton_usable(device):
        raise RuntimeError(
            f"{op}: backend='triton' needs CUDA tensors or TRITON_INTERPRET=1 set before triton is imported "
            f"(tensors are on {device}); use backend='chunk' on CPU"
        )
    key = (op, backend, chosen, refusal is not None)
    if key not in _logged:
        _logged.add(key)
        if refusal:
            logger.warning("%s: backend='auto' uses 'chunk', not 'triton': %s", op, refusal)
        else:
            logger.info("%s: backend=%r resolved to %r on %s", op, backend, chosen, device.type)
    return chosen


@functools.cache
def _gated_backward_refusal(device: torch.device) -> str | None:
    # Once per device: resolve_backend runs on every kernel call, and the answer (the installed Triton, the
    # device's compute capability, whether tilelang imports) cannot change within a process.
    return gated_backward_refusal(device)
