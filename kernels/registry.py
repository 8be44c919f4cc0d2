"""The one table of (op, backend) -> implementation, and the dispatcher every public op goes through.

Adding a backend to an op is one line in :data:`KERNELS`. An implementation that cannot take packed
sequences itself (``native_varlen=False``) never sees ``cu_seqlens``: the dispatcher runs it once per
sequence and stitches the results (:func:`lrnn_lm.kernels.varlen.run_per_sequence`), so no backend
repeats that loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .backend import resolve_backend
from .varlen import run_per_sequence


@dataclass(frozen=True)
class Impl:
    """One backend of one op: ``target`` is ``"module:function"`` inside ``lrnn_lm.kernels``, imported on first
    use (Triton imports are slow and optional on CPU). ``native_varlen`` says whether it takes ``cu_seqlens``."""

    target: str
    native_varlen: bool = False

    def load(self) -> Callable:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)


KERNELS: dict[tuple[str, str], Impl] = {
    ("selective_scan", "naive"): Impl("selective_scan.naive:selective_scan_naive"),
    ("selective_scan", "chunk"): Impl("selective_scan.chunk:selective_scan_chunk"),
    ("selective_scan", "triton"): Impl("selective_scan.triton:selective_scan_triton", native_varlen=True),
    ("delta_rule", "naive"): Impl("delta_rule.naive:delta_rule_naive"),
    ("delta_rule", "chunk"): Impl("delta_rule.chunk:delta_rule_chunk"),
    ("delta_rule", "triton"): Impl("delta_rule.triton:delta_rule_triton", native_varlen=True),
    ("gated_delta_rule", "naive"): Impl("gated_delta_rule.naive:gated_delta_rule_naive"),
    ("gated_delta_rule", "chunk"): Impl("gated_delta_rule.chunk:gated_delta_rule_chunk"),
    ("gated_delta_rule", "triton"): Impl("gated_delta_rule.triton:gated_delta_rule_triton", native_varlen=True),
    ("delta_product", "naive"): Impl("delta_product.naive:delta_product_naive"),
    ("delta_product", "chunk"): Impl("delta_product.interleaved:delta_product_chunk", native_varlen=True),
    ("delta_product", "triton"): Impl("delta_product.interleaved:delta_product_triton", native_varlen=True),
    ("ssd", "naive"): Impl("ssd.naive:ssd_naive"),
    ("ssd", "chunk"): Impl("ssd.chunk:ssd_chunk"),
    ("ssd", "triton"): Impl("ssd.triton:ssd_triton", native_varlen=True),
}


def ops() -> list[str]:
    """Every op with at least one backend, in table order."""
    return list(dict.fromkeys(op for op, _ in KERNELS))


def backends_of(op: str) -> list[str]:
    """The concrete backends (``naive``, ``chunk``, ``triton``) that ``op`` has."""
    return [b for o, b in KERNELS if o == op]


def dispatch(
    op: str,
    backend: str,
    *,
    sequence: Mapping[str, torch.Tensor | None],
    static: Mapping[str, object],
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    state_shape: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resolve ``backend`` for ``op`` and run it.

    ``sequence`` holds the ``[batch, T, ...]`` tensors (split along time for packed sequences), ``static``
    everything else (parameters, flags), passed through as keyword arguments. ``state_shape`` is one
    sequence's state without the leading batch dimension (for empty packed sequences).
    """
    device = next(t for t in sequence.values() if t is not None).device
    chosen = resolve_backend(op, backend, device)
    impl = KERNELS.get((op, chosen))
    if impl is None:
        raise ValueError(f"{op} has no {chosen!r} backend; it has {backends_of(op)}")
    fn = impl.load()
    if cu_seqlens is None or impl.native_varlen:
        extra = {"cu_seqlens": cu_seqlens} if impl.native_varlen else {}
        return fn(**sequence, **static, initial_state=initial_state, output_final_state=output_final_state, **extra)
    o, state = run_per_sequence(fn, cu_seqlens, sequence, initial_state, state_shape, **static)
    return o, (state if output_final_state else None)
