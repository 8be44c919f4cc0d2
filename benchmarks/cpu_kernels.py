"""CPU forward+backward time of every kernel op: chunk backend against naive loop and fla's CPU references, signed
against unsigned, each op's figures from one run. Prints JSON.

    python benchmarks/cpu_kernels.py [--ops ssd,gated_delta_rule] [--batch 4] [--T 1024] [--repeats 3]
        [--naive-repeats 1] [--out file.json]

Inputs: the shared harness's (``make_inputs``: fp32, no initial state, shapes ``SHAPES``); gradients to every input
under a fixed dense cotangent. An op's functions are timed in turns (benchmarks/timing.py), the naive loop
``--naive-repeats`` times. Ratios: how many times faster (the slower one's time over ours), or signed over unsigned
time; best of runs against best of runs, and (equal run counts) the median over rounds of the ratio in a round.

fla's references, on the unsigned inputs against our unsigned chunk: ssd ``naive_chunk_simple_gla`` (``q = C``,
``k = B`` expanded to H heads, ``v = dt x``, ``g = dt A``, scale 1, plus ``D x``); delta_rule
``delta_rule_chunkwise`` (head-first, chunk 32 and 64); gated_delta_rule ``naive_chunk_gated_delta_rule`` (chunk 64,
``g = log alpha``). The scans' signed variant and the delta product have none.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from timing import fwd_bwd, ours, paired_ratio, time_all

from lrnn_lm.kernels import ops
from lrnn_lm.kernels.testing import POSITIONAL, make_inputs

SHAPES = {  # besides batch and T
    "selective_scan": dict(d=256, N=16),
    "ssd": dict(H=8, P=64, N=64, G=1),
    "delta_rule": dict(H=4, K=64, V=64),
    "gated_delta_rule": dict(H=4, K=64, V=64),
    "delta_product": dict(H=4, K=64, V=64, n_h=2),
}
# The wanted ratios, reported next to the measurements.
BARS = {"chunk_speedup_over_naive": 10.0, "chunk_speedup_over_fla": 1.5, "signed_time_over_unsigned": 1.05}


def fla_peers(op: str, x: dict) -> dict[str, Callable[[], None]]:
    """fla's CPU references of ``op`` on the inputs ``x`` (see the module docstring); raises ImportError without fla."""
    leaves = [t for t in x.values() if t is not None]
    if op == "ssd":
        from fla.ops.simple_gla.naive import naive_chunk_simple_gla

        def simple_gla() -> tuple:
            q, k = (x[n].repeat_interleave(x["x"].shape[2] // x[n].shape[2], dim=2) for n in ("C", "B"))
            o, _ = naive_chunk_simple_gla(q, k, x["dt"][..., None] * x["x"], x["dt"] * x["A"], chunk_size=64, scale=1)
            return (o + x["D"][:, None] * x["x"],)

        return {"fla_naive_chunk_simple_gla": fwd_bwd(simple_gla, leaves)}
    if op == "delta_rule":
        from fla.ops.delta_rule.naive import delta_rule_chunkwise

        def chunkwise(c: int) -> tuple:
            return delta_rule_chunkwise(*(x[n].transpose(1, 2) for n in POSITIONAL[op]), chunk_size=c)

        return {f"fla_delta_rule_chunkwise{c}": fwd_bwd(lambda c=c: chunkwise(c), leaves) for c in (32, 64)}
    if op == "gated_delta_rule":
        from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule

        q, k, v, beta, alpha = (x[n] for n in POSITIONAL[op])
        run = fwd_bwd(lambda: naive_chunk_gated_delta_rule(q, k, v, alpha.log(), beta, chunk_size=64), leaves)
        return {"fla_naive_chunk_gated_delta_rule": run}
    return {}


def bench(op: str, args: argparse.Namespace) -> dict:
    shape = dict(batch=args.batch, T=args.T, **SHAPES[op])
    x = {s: make_inputs(op, shape, signed=s == "signed", with_state=False) for s in ("unsigned", "signed")}
    fns = {f"{be}/{s}": ours(op, x[s], be, s == "signed") for be in ("naive", "chunk") for s in x}
    try:
        fns |= fla_peers(op, x["unsigned"])
        fla_missing = None
    except ImportError as e:  # fla is optional
        fla_missing = repr(e)
    reps = {n: args.naive_repeats if n.startswith("naive/") else args.repeats for n in fns}
    times = time_all(fns, reps)
    best = {n: min(ts) for n, ts in times.items()}
    pairs = {f"chunk_speedup_over_naive/{s}": (f"naive/{s}", f"chunk/{s}") for s in x}
    pairs |= {f"{be}/signed_time_over_unsigned": (f"{be}/signed", f"{be}/unsigned") for be in ("naive", "chunk")}
    pairs |= {f"chunk_speedup_over_{p}": (p, "chunk/unsigned") for p in fns if p.startswith("fla")}
    return {
        "shape": shape,
        "repeats": reps,
        "seconds": best,
        "tokens_per_s": {n: args.batch * args.T / s for n, s in best.items()},
        "ratios": {k: best[a] / best[b] for k, (a, b) in pairs.items()},
        "ratios_median_of_rounds": {
            k: paired_ratio(times[a], times[b]) for k, (a, b) in pairs.items() if reps[a] == reps[b]
        },
        **({"fla_unavailable": fla_missing} if fla_missing else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default=",".join(SHAPES), help="comma-separated ops (default: all)")
    for name, default in (("batch", 4), ("T", 1024), ("repeats", 3), ("naive-repeats", 1)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    unknown = set(args.ops.split(",")) - set(ops())
    if unknown:
        p.error(f"unknown ops {sorted(unknown)}; choose from {ops()}")
    warnings.filterwarnings("ignore", message=".*Triton is not supported.*")
    out = {
        "what": "forward+backward seconds, fp32, CPU",
        "threads": torch.get_num_threads(),
        "bars": BARS,
        "ops": {op: bench(op, args) for op in args.ops.split(",")},
    }
    print(text := json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
