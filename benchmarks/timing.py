"""What the CPU and GPU benchmarks share: interleaved timing, two statistics of a ratio, one forward+backward.

Functions are timed in turns, one run each per round. Best of rounds takes each function's fastest run, which on a
shared machine may come from two load levels; median of rounds takes the median over rounds of the ratio between
two functions timed in the same round (and its quartiles), steadier when the machine's speed drifts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from lrnn_lm import kernels
from lrnn_lm.kernels.testing import FLAGGED, POSITIONAL


def time_all(fns: dict[str, Callable[[], None]], repeats: dict[str, int]) -> dict[str, list[float]]:
    """Seconds of every run of each function (``repeats[name]`` runs after one warm-up each), alternating
    between the functions round by round, so that neighbours in a round saw the same machine load.

    Each round starts one function later than the one before (a rotation), so that no function always runs
    right after the same other one: a function that leaves the caches cold or the allocator's heap trimmed would
    otherwise always slow the same neighbour."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(max(repeats.values())):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            if r < repeats[name]:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median and quartiles over rounds of ``numerator[r] / denominator[r]`` (runs of the same round)."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    if len(ratios) < 2:
        return {"median": ratios[0], "q1": ratios[0], "q3": ratios[0], "rounds": len(ratios)}
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return {"median": statistics.median(ratios), "q1": q1, "q3": q3, "rounds": len(ratios)}


def fwd_bwd(fn: Callable[[], tuple], leaves: list[torch.Tensor]) -> Callable[[], None]:
    """One forward and backward of ``fn()[0]`` under a fixed dense cotangent, as from a real loss (``y.sum()``
    would hand the backward a stride-0 gradient, which sends CPU batched matmuls and some GPU kernels down a
    slower path)."""
    out = fn()[0]
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device, out.dtype)
    del out
    return lambda: torch.autograd.grad(fn()[0], leaves, cot, allow_unused=True)


def ours(op: str, x: dict, backend: str, signed: bool) -> Callable[[], None]:
    """:func:`fwd_bwd` of our public ``op`` on the harness's inputs ``x`` (``make_inputs``), gradients to all."""
    fn = getattr(kernels, op)
    args = [x.get(n) for n in POSITIONAL[op]]
    kw = {"negative_eigvals": signed} if op in FLAGGED else {}
    leaves = [t for t in x.values() if t is not None]
    return fwd_bwd(lambda: fn(*args, initial_state=x.get("initial_state"), backend=backend, **kw), leaves)
