"""Model-free linear-RNN scan kernels (installed as ``lrnn_lm.kernels``).

Each op has a ``naive`` token-loop reference (the specification) and faster backends, listed in one table,
:data:`lrnn_lm.kernels.registry.KERNELS`:

- :func:`selective_scan`: Mamba-1's diagonal scan, optionally with the signed gate ``2 exp(dt A) - 1``.
- :func:`delta_rule`: DeltaNet's generalized-Householder recurrence, ``beta`` in [0, 2].
- :func:`ssd`: Mamba-2's SSD scan (a scalar gate per head), optionally with the signed gate ``2 exp(dt A) - 1``.
- :func:`gated_delta_rule`: Gated DeltaNet's delta rule with a scalar gate ``alpha`` in [-1, 1].
- :func:`delta_product`: DeltaProduct, ``n_h`` Householder steps per token, optionally gated.

Tensors are batch-first, then time. Every op returns ``(output, final_state)``. How to add an op or a
backend: ``kernels/README.md``.
"""

from __future__ import annotations

from .backend import BACKENDS
from .delta_product import delta_product
from .delta_rule import delta_rule
from .gated_delta_rule import gated_delta_rule
from .registry import KERNELS, backends_of, ops
from .selective_scan import selective_scan
from .ssd import ssd

__all__ = [
    "BACKENDS",
    "KERNELS",
    "backends_of",
    "delta_product",
    "delta_rule",
    "gated_delta_rule",
    "ops",
    "selective_scan",
    "ssd",
]
