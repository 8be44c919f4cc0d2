"""One-GPU check of the SSD op's Triton backend: correctness against naive at a real shape, and fwd+bwd timings.

    python benchmarks/gpu_ssd.py [--out gpu_ssd.json] [--dtypes bf16,fp16,fp32] [--repeats 20]

- :func:`check_ssd` (per dtype): ``backend`` (triton) vs the naive token loop (fp32 on the same rounded inputs) at
  batch 2, T 2048, H 8, P 64, N 64, G 1: output, final state and the gradients of x, dt, A, B, C, D and the initial
  state, as relative RMSE, for random gates in both ranges, edge gates (exactly -1/0 by exp underflow, exactly 1,
  ``|a|`` = 1e-3, random; both ranges; and signed with ``|a|`` = 1e-6, a known weak spot of the triton backend's
  dt and A gradients), every signed gate exactly 0 (gradients compared with no gradient through the gate, the
  documented behaviour) and packed sequences (cu_seqlens) in both ranges.
- :func:`time_ssd`: forward+backward seconds of the signed and the unsigned op, and of mamba_ssm's
  ``mamba_chunk_scan_combined`` (unsigned, same layout) when it is importable, at batch 4, T 2048, H 32, P 64,
  N 128, G 1, bf16. Targets: signed <= 1.05x unsigned; ours vs mamba_ssm reported as a ratio.

Both take ``backend`` and ``shape`` so that a CPU rehearsal (tests/kernels/test_gpu_ssd_rehearsal.py) can run them
at tiny shapes with ``backend="chunk"`` and a fake timer. The JSON is rewritten after every section.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lrnn_lm.kernels import ssd
from lrnn_lm.kernels.testing import rel_rmse

CHECK_SHAPE = {"batch": 2, "T": 2048, "H": 8, "P": 64, "N": 64, "G": 1}
TIME_SHAPE = {"batch": 4, "T": 2048, "H": 32, "P": 64, "N": 128, "G": 1}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
POS = ("x", "dt", "A", "B", "C")


def make_inputs(shape: dict, *, gate: str, negative: bool, dtype, device, seed: int = 0, n_states: int | None = None):
    """Leaves on ``device``: x, B, C in ``dtype``; dt, A, D (``[H, P]``) and the initial state in fp32.

    gate: ``random``; ``edges`` (A = -1, each token exp underflow, dt = 0, |a| = 1e-3 or random); ``edges_1e-6``
    (the same with |a| = 1e-6, where the triton backend's signed dt and A gradients are known to be inaccurate);
    ``zero_signed`` (every exp(dt A) = 0.5, so the signed gate is exactly 0)."""
    b, T, H, P, N, G = (shape[k] for k in ("batch", "T", "H", "P", "N", "G"))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g)
    dt = F.softplus(torch.randn(b, T, H, generator=g) - 1)
    A = -torch.exp(torch.randn(H, generator=g) * 0.5)
    if gate in ("edges", "edges_1e-6"):
        tiny = 1e-3 if gate == "edges" else 1e-6
        A = -torch.ones(H)
        sign = torch.where(torch.rand(b, T, H, generator=g) < 0.5, -1.0, 1.0)
        small = -torch.log(0.5 + 0.5 * tiny * sign) if negative else torch.full_like(dt, -math.log(tiny))
        pick = torch.randint(0, 4, (b, T, H), generator=g)
        dt = torch.where(pick == 0, 200.0, torch.where(pick == 1, 0.0, torch.where(pick == 2, small, dt)))
    elif gate == "zero_signed":
        A, dt = -torch.ones(H), torch.full_like(dt, math.log(2.0))
    B = torch.randn(b, T, G, N, generator=g) / N**0.5
    C = torch.randn(b, T, G, N, generator=g) / N**0.5
    D = torch.randn(H, P, generator=g)
    h0 = torch.randn(n_states or b, H, P, N, generator=g)
    out = {"x": x.to(dtype), "dt": dt, "A": A, "B": B.to(dtype), "C": C.to(dtype), "D": D, "initial_state": h0}
    return {k: v.to(device).requires_grad_() for k, v in out.items()}


def outputs_and_grads(inputs: dict, *, seed: int = 1, stop_gate: bool = False, **kw) -> dict:
    """Output, final state and every leaf's gradient under fixed random cotangents. ``stop_gate``: no gradient
    through the gate (dt keeps its input-path gradient via ``x dt / dt.detach()``; naive only)."""
    args = {k: v for k, v in inputs.items()}
    if stop_gate:
        dt = inputs["dt"]
        args.update(x=inputs["x"] * (dt / dt.detach())[..., None].to(inputs["x"].dtype), dt=dt.detach())
        args.update(A=inputs["A"].detach(), D=None)
    o, S = ssd(*[args[n] for n in POS], D=args["D"], initial_state=args["initial_state"], output_final_state=True, **kw)
    if stop_gate:
        o = (o.float() + inputs["D"] * inputs["x"].float()).to(o.dtype)
    g = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=g).to(o.device)
    dS = torch.randn(S.shape, generator=g).to(S.device)
    leaves = [n for n, t in inputs.items() if t.requires_grad]
    grads = torch.autograd.grad((o.float() * do).sum() + (S * dS).sum(), [inputs[n] for n in leaves], allow_unused=True)
    out = {"out": o.detach(), "state": S.detach()}
    for n, gr in zip(leaves, grads):
        out[f"grad_{n}"] = torch.zeros_like(inputs[n]) if gr is None else gr
    return out


def _errors(got: dict, ref: dict) -> dict:
    return {k: rel_rmse(got[k], ref[k]) for k in ref}


def check_ssd(device, dtype, *, backend: str = "triton", shape: dict | None = None) -> dict:
    """Relative RMSE of ``backend`` against naive for every case; ``{"case": {"out": e, ..., "grad_x": e}}``."""
    shape = dict(CHECK_SHAPE if shape is None else shape)
    results: dict = {"shape": shape, "dtype": str(dtype), "backend": backend}
    cases = [(gate, neg) for gate in ("random", "edges") for neg in (False, True)]
    cases += [("edges_1e-6", True), ("zero_signed", True)]
    for gate, neg in cases:
        inputs = make_inputs(shape, gate=gate, negative=neg, dtype=dtype, device=device)
        got = outputs_and_grads(inputs, negative_eigvals=neg, backend=backend)
        ref = outputs_and_grads(inputs, negative_eigvals=neg, backend="naive", stop_gate=gate == "zero_signed")
        results[f"{gate}/{'signed' if neg else 'unsigned'}"] = _errors(got, ref)
    # Packed sequences: batch 1, lengths cover 1, a chunk boundary and an odd rest; naive runs per sequence.
    T = shape["batch"] * shape["T"]
    cuts = sorted({0, 1, min(T, 65), T // 2 + 3, T})
    cu = torch.tensor(cuts, device=device)
    packed = dict(shape, batch=1, T=T)
    for neg in (False, True):
        inputs = make_inputs(packed, gate="random", negative=neg, dtype=dtype, device=device, n_states=len(cuts) - 1)
        got = outputs_and_grads(inputs, negative_eigvals=neg, backend=backend, cu_seqlens=cu)
        ref = outputs_and_grads(inputs, negative_eigvals=neg, backend="naive", cu_seqlens=cu)
        results[f"varlen/{'signed' if neg else 'unsigned'}"] = _errors(got, ref)
    return results


def time_ssd(device, timer: Callable[[Callable[[], None]], float], *, backend: str = "triton", shape=None, dtype=None):
    """Forward+backward seconds (as measured by ``timer``) of signed and unsigned ``ssd`` and, when importable,
    ``mamba_ssm``'s ``mamba_chunk_scan_combined`` (unsigned) on the same inputs."""
    shape = dict(TIME_SHAPE if shape is None else shape)
    dtype = torch.bfloat16 if dtype is None else dtype
    inputs = make_inputs(shape, gate="random", negative=True, dtype=dtype, device=device)
    inputs = {k: v for k, v in inputs.items() if k != "initial_state"}

    # A dense cotangent, as from a real loss (y.sum() would hand the backward a stride-0 gradient).
    dy = torch.randn(inputs["x"].shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)

    def ours(negative: bool) -> Callable[[], None]:
        def run() -> None:
            y, _ = ssd(*[inputs[n] for n in POS], D=inputs["D"], negative_eigvals=negative, backend=backend)
            y.backward(dy)

        return run

    secs = {"ssd/unsigned": timer(ours(False)), "ssd/signed": timer(ours(True))}
    out: dict = {"shape": shape, "dtype": str(dtype), "backend": backend, "seconds": secs}
    out["signed_time_over_unsigned"] = secs["ssd/signed"] / secs["ssd/unsigned"]
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError as e:
        out["mamba_ssm"] = f"unavailable: {e!r}"
        return out

    def peer() -> None:
        x, dt, A, B, C, D = (inputs[k] for k in ("x", "dt", "A", "B", "C", "D"))
        y = mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size=64, D=D)
        y.backward(dy)

    secs["mamba_ssm/unsigned"] = timer(peer)
    out["ours_unsigned_time_over_mamba_ssm"] = secs["ssd/unsigned"] / secs["mamba_ssm/unsigned"]
    out["ours_signed_time_over_mamba_ssm"] = secs["ssd/signed"] / secs["mamba_ssm/unsigned"]
    return out


def cuda_timer(repeats: int = 20, warmup: int = 3) -> Callable[[Callable[[], None]], float]:
    """Median seconds of ``fn`` over ``repeats`` CUDA-event-timed runs after ``warmup`` runs (gpu_check's loop)."""
    # Imported here: this runs only from main(), as a script beside gpu_check.py; the CPU rehearsals load this
    # file by path and pass their own timer.
    from gpu_check import cuda_median_ms

    def timer(fn) -> float:
        return cuda_median_ms(fn, repeats, warmup)["median_ms"] / 1e3

    return timer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_ssd.json")
    # fp32 shows whether fla's fp32 matmuls run in TF32 on this GPU (errors ~1e-3 rather than ~1e-6).
    p.add_argument("--dtypes", default="bf16,fp16,fp32", help=f"comma-separated, of {sorted(DTYPES)}")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_ssd.py needs a CUDA device", file=sys.stderr)
        sys.exit(2)
    device = torch.device("cuda")
    result: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }

    def section(name: str, fn: Callable[[], dict]) -> None:
        try:
            result[name] = fn()
        except Exception:  # record and carry on with the next section
            result[name] = {"error": traceback.format_exc()}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps({name: result[name]}, indent=2), flush=True)

    for name in args.dtypes.split(","):
        section(f"check/{name}", lambda name=name: check_ssd(device, DTYPES[name]))
    section("timing", lambda: time_ssd(device, cuda_timer(args.repeats)))


if __name__ == "__main__":
    main()
