"""CPU forward+backward throughput of the kernels, naive vs chunk, signed vs unsigned. Prints JSON.

python benchmarks/cpu_kernels.py [--T 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from timing import time_all

from lrnn_lm.kernels import delta_rule, selective_scan


def scan_case(batch: int, T: int, d_inner: int, N: int, backend: str, negative: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, T, d_inner, generator=g, requires_grad=True)
    dt = F.softplus(torch.randn(batch, T, d_inner, generator=g) - 2).requires_grad_()
    A = (-torch.arange(1, N + 1, dtype=torch.float32).repeat(d_inner, 1)).requires_grad_()
    B = torch.randn(batch, T, N, generator=g, requires_grad=True)
    C = torch.randn(batch, T, N, generator=g, requires_grad=True)
    D = torch.ones(d_inner, requires_grad=True)
    z = torch.randn(batch, T, d_inner, generator=g, requires_grad=True)

    def run():
        y, _ = selective_scan(x, dt, A, B, C, D, z, negative_eigvals=negative, backend=backend)
        y.sum().backward()

    return run


def delta_case(batch: int, T: int, H: int, Dh: int, backend: str, negative: bool):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, T, H, Dh, generator=g, requires_grad=True)
    k = F.normalize(torch.randn(batch, T, H, Dh, generator=g), dim=-1).requires_grad_()
    v = torch.randn(batch, T, H, Dh, generator=g, requires_grad=True)
    beta = ((2.0 if negative else 1.0) * torch.rand(batch, T, H, generator=g)).requires_grad_()

    def run():
        o, _ = delta_rule(q, k, v, beta, backend=backend)
        o.sum().backward()

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
        "selective_scan": lambda be, neg: scan_case(args.batch, args.T, 256, 16, be, neg),
        "delta_rule": lambda be, neg: delta_case(args.batch, args.T, 4, 64, be, neg),
    }
    for op, make in cases.items():
        for be in ("naive", "chunk"):
            fns = {s: make(be, s == "signed") for s in ("unsigned", "signed")}
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
