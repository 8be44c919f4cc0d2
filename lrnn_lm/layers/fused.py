"""Whether a layer runs fla's fused Triton modules (norms, short conv, SwiGLU, the head's linear cross entropy):
on CUDA, when fla imports.

One decision for all of them, so lrnn_lm.analysis.activation_memory can switch the GPU code path on for CPU
tensors, and the interpreter tests can run fla's modules against our torch ones. Elsewhere (CPU) the torch
implementations run.
"""

from __future__ import annotations

import functools

import torch


def use_fla(x: torch.Tensor) -> bool:
    """True when ``x`` is on a CUDA device and fla's fused modules import."""
    return x.is_cuda and fla_available()


def recompute_in_backward(x: torch.Tensor) -> bool:
    """True where a layer recomputes parts of its forward in the backward instead of keeping them (GPU memory):
    on CUDA. On CPU memory is rarely the limit and the extra forward would cost time."""
    return x.is_cuda


@functools.cache
def fla_available() -> bool:
    try:
        import fla.modules.activations  # noqa: F401
        import fla.modules.causal_conv1d  # noqa: F401
        import fla.modules.fused_linear_cross_entropy  # noqa: F401
        import fla.modules.norm.fused_norm_gate  # noqa: F401
        import fla.modules.norm.layernorm  # noqa: F401
    except ImportError:
        return False
    return True


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul on ``x`` in (``x.dtype`` without autocast)."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
