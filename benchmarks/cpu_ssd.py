"""CPU forward+backward time of the SSD op: chunk vs naive, vs fla's ``naive_chunk_simple_gla``, signed vs unsigned.

    OMP_NUM_THREADS=2 python benchmarks/cpu_ssd.py [--batch 4 --T 1024 --H 8 --P 64 --N 64 --G 1] [--repeats 3]
        [--out cpu_ssd.json]

All timings come from one run, alternating between the functions so that drift hits them alike. Ratios are given
as best of ``--repeats`` against best of ``--repeats`` and as the median over rounds of the ratio within a round
(the naive token loop, far slower, runs ``--naive-repeats`` times and has only the first). Every case computes
``y`` (and nothing else) from fp32 leaves that require grad and backpropagates a fixed dense random ``dL/dy``.

The peer is fla's pure-PyTorch chunked simple GLA (``fla.ops.simple_gla.naive.naive_chunk_simple_gla``), the
same recurrence with ``q = C`` and ``k = B`` expanded to H heads, ``v = dt x``, ``g = dt A``, ``scale = 1``; it has
no signed variant, so it is compared with our unsigned chunk. Prints JSON; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from timing import paired_ratio, time_all

from lrnn_lm.kernels import ssd
from lrnn_lm.kernels.testing import make_inputs

# Wanted ratios (the task's bars), reported next to the measurements.
BARS = {"chunk_speedup_over_naive": 10.0, "chunk_speedup_over_fla_naive_chunk": 1.5, "signed_time_over_unsigned": 1.05}


def _cotangent(like: torch.Tensor) -> torch.Tensor:
    # A dense random gradient of y, as from a real loss: y.sum() would hand the backward a stride-0 tensor, which
    # sends CPU batched matmuls down a slow per-matrix path and distorts the comparison.
    return torch.randn(like.shape, generator=torch.Generator().manual_seed(1))


def ssd_case(inputs: dict[str, torch.Tensor], backend: str, negative: bool) -> Callable[[], None]:
    dy = _cotangent(inputs["x"])

    def run() -> None:
        y, _ = ssd(**inputs, negative_eigvals=negative, backend=backend)
        y.backward(dy)

    return run


def fla_case(inputs: dict[str, torch.Tensor]) -> Callable[[], None]:
    from fla.ops.simple_gla.naive import naive_chunk_simple_gla

    x, dt, A, B, C, D = (inputs[k] for k in ("x", "dt", "A", "B", "C", "D"))
    H = x.shape[2]

    dy = _cotangent(x)

    def run() -> None:
        q, k = (t.repeat_interleave(H // t.shape[2], dim=2) for t in (C, B))
        o, _ = naive_chunk_simple_gla(q, k, dt[..., None] * x, dt * A, chunk_size=64, scale=1.0)
        y = o + D[:, None] * x
        y.backward(dy)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("batch", 4), ("T", 1024), ("H", 8), ("P", 64), ("N", 64), ("G", 1)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-repeats", type=int, default=1)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    shape = {k: getattr(args, k) for k in ("batch", "T", "H", "P", "N", "G")}
    inputs = make_inputs("ssd", shape, signed=False, with_state=False)
    fns = {
        "ssd/naive/unsigned": ssd_case(inputs, "naive", False),
        "ssd/chunk/unsigned": ssd_case(inputs, "chunk", False),
        "ssd/chunk/signed": ssd_case(inputs, "chunk", True),
    }
    try:
        fns["fla/naive_chunk_simple_gla/unsigned"] = fla_case(inputs)
    except ImportError as e:  # fla is optional
        fla_missing = repr(e)
    else:
        fla_missing = None
    reps = {name: (args.naive_repeats if "/naive/" in name else args.repeats) for name in fns}
    times = time_all(fns, reps)
    secs = {name: min(ts) for name, ts in times.items()}
    ratios = {
        "chunk_speedup_over_naive": secs["ssd/naive/unsigned"] / secs["ssd/chunk/unsigned"],
        "signed_time_over_unsigned": secs["ssd/chunk/signed"] / secs["ssd/chunk/unsigned"],
    }
    # The same ratios as medians over rounds of the ratio within a round (benchmarks/timing.py).
    paired = {"signed_time_over_unsigned": paired_ratio(times["ssd/chunk/signed"], times["ssd/chunk/unsigned"])}
    if fla_missing is None:
        fla = times["fla/naive_chunk_simple_gla/unsigned"]
        ratios["chunk_speedup_over_fla_naive_chunk"] = min(fla) / secs["ssd/chunk/unsigned"]
        paired["chunk_speedup_over_fla_naive_chunk"] = paired_ratio(fla, times["ssd/chunk/unsigned"])
    out = {
        "what": "forward+backward seconds (best of repeats), fp32, CPU",
        "threads": torch.get_num_threads(),
        "shape": shape,
        "repeats": reps,
        "seconds": secs,
        "ratios": ratios,
        "ratios_median_of_rounds": paired,
        "bars": BARS,
        "fla_unavailable": fla_missing,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
