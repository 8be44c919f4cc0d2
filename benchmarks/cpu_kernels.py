"""CPU forward+backward throughput of the kernels, naive vs chunk, signed vs unsigned. Prints JSON.

python benchmarks/cpu_kernels.py [--T 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import time_all

from lrnn_lm import kernels
from lrnn_lm.kernels.testing import FLAGGED, POSITIONAL, make_inputs


def case(op: str, shape: dict, backend: str, negative: bool):
    """Forward and ``y.sum().backward()`` of ``op`` on the shared harness's inputs (fp32, no initial state)."""
    x = make_inputs(op, shape, signed=negative, with_state=False)
    args = [x.get(name) for name in POSITIONAL[op]]
    kw = {"negative_eigvals": negative} if op in FLAGGED else {}
    fn = getattr(kernels, op)

    def run():
        y, _ = fn(*args, backend=backend, **kw)
        y.sum().backward()

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    tokens = args.batch * args.T
    out: dict = {"threads": torch.get_num_threads(), "batch": args.batch, "T": args.T, "tokens_per_s": {}}
    cases = {
        "selective_scan": dict(batch=args.batch, T=args.T, d=256, N=16),
        "delta_rule": dict(batch=args.batch, T=args.T, H=4, K=64, V=64),
    }
    for op, shape in cases.items():
        for be in ("naive", "chunk"):
            fns = {s: case(op, shape, be, s == "signed") for s in ("unsigned", "signed")}
            for s, times in time_all(fns, dict.fromkeys(fns, args.repeats)).items():
                out["tokens_per_s"][f"{op}/{be}/{s}"] = tokens / min(times)  # best of repeats
    tps = out["tokens_per_s"]
    out["ratios"] = {
        f"{op}/chunk_over_naive/{s}": tps[f"{op}/chunk/{s}"] / tps[f"{op}/naive/{s}"]
        for op in cases
        for s in ("unsigned", "signed")
    }
    out["ratios"].update(
        {
            f"{op}/{be}/signed_time_over_unsigned": tps[f"{op}/{be}/unsigned"] / tps[f"{op}/{be}/signed"]
            for op in cases
            for be in ("naive", "chunk")
        }
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
