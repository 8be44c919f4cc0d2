"""One-GPU check of the Triton kernels: correctness against naive at real shapes, timings, bandwidth. Writes JSON.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--repeats 20]

Sections (each recorded even if another fails; the JSON is rewritten after every section):

1. ``scan_correctness``: ``selective_scan`` triton vs naive at batch 8, T 2048, d_inner 2048, N 16, bf16 inputs,
   both signs, with D, z and an initial state: output, final state and every gradient (relative RMSE). The naive
   reference is a Python loop of T steps in fp32 on the same bf16 inputs (a few seconds; about 10 GB for
   autograd at the full width; ``--ref-channels`` narrows it).
2. ``delta_correctness``: ``delta_rule`` triton (fla's chunk kernels) vs naive at H 16, K = V 128, bf16, beta in
   (0, 2) and, for reference, fla's ``chunk_delta_rule`` called directly with beta in (0, 1). Batch 2, T 2048
   (the naive reference keeps every step's [B, H, K, V] state for autograd, about 16 GB at batch 2).
3. ``scan_timing``: forward+backward medians (CUDA events, warm-up, ``--repeats`` runs) of the signed and the
   unsigned scan, and of ``mamba_ssm.selective_scan_fn`` (unsigned; its native [B, D, L] layout, transposed
   outside the timed region) when it is importable.
4. ``delta_timing``: forward+backward medians, ours with beta in (0, 2) vs fla's ``chunk_delta_rule`` directly
   with beta in (0, 1), batch 8, T 2048, H 16, K = V 128, bf16.
5. ``scan_bandwidth``: forward-only (inference: no gradient, so no state checkpoints) achieved GB/s, counting
   the bytes of the inputs read once (x, dt, z, B, C, A, D) and of y written, against the device's peak memory
   bandwidth from a small table by device name.

Targets (issue 3, for an H100/H200): signed <= 1.05x unsigned; ours >= 0.9x mamba_ssm's speed; scan forward
>= 50% of peak bandwidth. Exits with a message (status 2) when no CUDA device is present.

The section bodies are plain functions (``check_scan``, ``check_delta``, ``time_scan``, ``time_delta``,
``bandwidth_scan``) taking a device, a backend, a shape and a timer, so that ``benchmarks/gpu_validate.py`` reuses
them and rehearses them on CPU at tiny shapes (``chunk`` backend, fake CUDA events).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F

# Peak memory bandwidth in GB/s (vendor figures), matched by substring of torch.cuda.get_device_name(),
# most specific first.
PEAK_BANDWIDTH_GBS = [
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # SXM
    ("GH200", 4000.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-PCIE-40GB", 1555.0),
    ("A100-SXM4-40GB", 1555.0),
    ("A100", 2000.0),
    ("L40S", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("V100", 900.0),
]

SCAN_SHAPE = dict(batch=8, T=2048, d=2048, N=16)
DELTA_REF_SHAPE = dict(batch=2, T=2048, H=16, K=128, V=128)
DELTA_TIME_SHAPE = dict(batch=8, T=2048, H=16, K=128, V=128)
SCAN_TOL_BF16 = 1e-2  # bf16 outputs/gradients rounded once from fp32 (one ulp is 3.9e-3)
DELTA_TOL_BF16 = 2e-2  # fla keeps WY factors and chunk states in bf16 between its kernels


def rel_rmse(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.detach().double(), expected.detach().double()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt().clamp_min(1e-12))


def peak_bandwidth(name: str) -> tuple[float | None, str | None]:
    for key, gbs in PEAK_BANDWIDTH_GBS:
        if key in name:
            return gbs, key
    return None, None


def cuda_median_ms(
    fn: Callable[[], object],
    repeats: int,
    warmup: int = 3,
    *,
    event: Callable[..., object] | None = None,
    synchronize: Callable[[], None] | None = None,
) -> dict:
    """Median (and spread) in ms of ``fn`` over ``repeats`` runs, each timed with CUDA events.

    ``event`` and ``synchronize`` default to ``torch.cuda.Event`` and ``torch.cuda.synchronize``; a CPU rehearsal
    passes stand-ins so that this loop still runs."""
    event = event or torch.cuda.Event
    synchronize = synchronize or torch.cuda.synchronize
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start, end = event(enable_timing=True), event(enable_timing=True)
        start.record()
        fn()
        end.record()
        synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": repeats}


# ----------------------------------------------------------------------------------------------------------
# inputs


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def scan_inputs(batch: int, T: int, d: int, N: int, *, seed: int = 0, dtype=torch.bfloat16, device="cuda") -> dict:
    g = torch.Generator(device=device).manual_seed(seed)
    dev = device
    x = torch.randn(batch, T, d, device=dev, generator=g)
    dt = F.softplus(torch.randn(batch, T, d, device=dev, generator=g) - 2.0)
    A = -torch.exp(0.5 * torch.randn(d, N, device=dev, generator=g))
    B = torch.randn(batch, T, N, device=dev, generator=g)
    C = torch.randn(batch, T, N, device=dev, generator=g)
    D = torch.randn(d, device=dev, generator=g)
    z = torch.randn(batch, T, d, device=dev, generator=g)
    h0 = torch.randn(batch, d, N, device=dev, generator=g)
    out = {"x": x.to(dtype), "dt": dt.to(dtype), "A": A, "B": B.to(dtype), "C": C.to(dtype), "D": D}
    out.update(z=z.to(dtype), initial_state=h0)
    return {k: v.requires_grad_() for k, v in out.items()}


def delta_inputs(
    batch: int, T: int, H: int, K: int, V: int, *, beta_max: float, seed: int = 0, dtype=torch.bfloat16, device="cuda"
):
    g = torch.Generator(device=device).manual_seed(seed)
    dev = device
    q = torch.randn(batch, T, H, K, device=dev, generator=g)
    k = F.normalize(torch.randn(batch, T, H, K, device=dev, generator=g), dim=-1)
    v = torch.randn(batch, T, H, V, device=dev, generator=g)
    beta = beta_max * torch.rand(batch, T, H, device=dev, generator=g)
    h0 = torch.randn(batch, H, K, V, device=dev, generator=g)
    out = {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype), "beta": beta.to(dtype), "initial_state": h0}
    return {k_: t.requires_grad_() for k_, t in out.items()}


def clone_leaves(inputs: dict) -> dict:
    return {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}


def outputs_and_grads(fn: Callable, inputs: dict, positional: tuple[str, ...], seed: int = 1, **kw) -> dict:
    """Run ``fn``, backprop fixed cotangents through output and final state; return every tensor to compare."""
    args = [inputs[n] for n in positional]
    rest = {k: v for k, v in inputs.items() if k not in positional}
    out, state = fn(*args, **rest, output_final_state=True, **kw)
    g = torch.Generator(device=out.device).manual_seed(seed)
    d_out = torch.randn(out.shape, device=out.device, generator=g)
    d_state = torch.randn(state.shape, device=out.device, generator=g)
    leaves = list(inputs.values())
    grads = torch.autograd.grad((out.float() * d_out).sum() + (state * d_state).sum(), leaves)
    res = {"out": out.detach(), "final_state": state.detach()}
    res.update({f"d_{name}": gr for name, gr in zip(inputs, grads)})
    return res


def compare(got: dict, ref: dict, tol: float) -> dict:
    errs = {k: rel_rmse(got[k], ref[k]) for k in ref}
    return {"rel_rmse": errs, "max": max(errs.values()), "tol": tol, "ok": all(e <= tol for e in errs.values())}


# ----------------------------------------------------------------------------------------------------------
# sections: plain functions of (device, backend, shape, timer), wrapped for this script's CLI in SECTIONS below


def _scan_op(backend: str) -> Callable:
    from lrnn_lm.kernels import selective_scan

    return lambda *a, **kw: selective_scan(*a, backend=backend, **kw)


def _delta_op(backend: str) -> Callable:
    from lrnn_lm.kernels import delta_rule

    return lambda *a, **kw: delta_rule(*a, backend=backend, **kw)


def check_scan(
    device: torch.device | str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    *,
    backend: str = "triton",
    shape: dict | None = None,
    tol: float = SCAN_TOL_BF16,
) -> dict:
    """``selective_scan`` on ``backend`` vs naive (fp32 on the same inputs), both signs, with D, z and an initial
    state: output, final state and every gradient."""
    shape = dict(SCAN_SHAPE if shape is None else shape)
    positional = ("x", "dt", "A", "B", "C", "D", "z")
    result = {"shape": shape, "dtype": str(dtype), "backend": backend, "reference": "naive fp32 on the same inputs"}
    for negative in (False, True):
        inputs = scan_inputs(**shape, dtype=dtype, device=device)
        t0 = time.perf_counter()
        got = outputs_and_grads(_scan_op(backend), inputs, positional, negative_eigvals=negative)
        _sync(device)
        t1 = time.perf_counter()
        ref = outputs_and_grads(_scan_op("naive"), clone_leaves(inputs), positional, negative_eigvals=negative)
        _sync(device)
        entry = compare(got, ref, tol)
        entry["seconds"] = {f"{backend}_incl_compile": t1 - t0, "naive": time.perf_counter() - t1}
        result["signed" if negative else "unsigned"] = entry
        del got, ref, inputs
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return result


def check_delta(
    device: torch.device | str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    *,
    backend: str = "triton",
    shape: dict | None = None,
    tol: float = DELTA_TOL_BF16,
) -> dict:
    """``delta_rule`` on ``backend`` with beta in (0, 2) vs naive and, on CUDA, fla's ``chunk_delta_rule`` called
    directly with beta in (0, 1) vs naive (for reference)."""
    shape = dict(DELTA_REF_SHAPE if shape is None else shape)
    positional = ("q", "k", "v", "beta")
    result = {"shape": shape, "dtype": str(dtype), "backend": backend, "reference": "naive fp32 on the same inputs"}
    cases: list[tuple[str, Callable | None, float]] = [("ours_beta_0_2", _delta_op(backend), 2.0)]
    if torch.device(device).type == "cuda":
        from fla.ops.delta_rule import chunk_delta_rule

        cases.append(("fla_direct_beta_0_1", lambda q, k, v, beta, **kw: chunk_delta_rule(q, k, v, beta, **kw), 1.0))
    else:
        result["fla_direct_beta_0_1"] = {"skipped": "fla's Triton kernels need CUDA"}
    for label, fn, beta_max in cases:
        inputs = delta_inputs(**shape, beta_max=beta_max, dtype=dtype, device=device)
        got = outputs_and_grads(fn, inputs, positional)
        ref = outputs_and_grads(_delta_op("naive"), clone_leaves(inputs), positional)
        result[label] = compare(got, ref, tol)
        del got, ref, inputs
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return result


def _fwd_bwd(fn: Callable[[], tuple[torch.Tensor, ...]], leaves: list[torch.Tensor]) -> Callable[[], None]:
    out = fn()[0]
    cotangent = torch.randn_like(out)
    del out

    def run():
        y = fn()[0]
        torch.autograd.grad(y, leaves, cotangent)

    return run


def time_scan(
    device: torch.device | str,
    timer: Callable[[Callable[[], object]], dict],
    *,
    backend: str = "triton",
    shape: dict | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> dict:
    """Forward+backward ``timer`` results (dicts with ``median_ms``) of the signed and the unsigned scan, and of
    ``mamba_ssm.selective_scan_fn`` (unsigned) when it is importable and the device is CUDA."""
    shape = dict(SCAN_SHAPE if shape is None else shape)
    scan = _scan_op(backend)
    inputs = scan_inputs(**shape, dtype=dtype, device=device)
    leaves = [inputs[k] for k in ("x", "dt", "A", "B", "C", "D", "z")]
    result = {"shape": shape, "dtype": str(dtype), "backend": backend, "what": "forward+backward with D and z"}
    for negative in (False, True):

        def ours(negative=negative):
            return scan(*leaves, negative_eigvals=negative)

        result["ours_signed" if negative else "ours_unsigned"] = timer(_fwd_bwd(ours, leaves))
    result["signed_over_unsigned"] = result["ours_signed"]["median_ms"] / result["ours_unsigned"]["median_ms"]
    result["target_signed_over_unsigned_max"] = 1.05

    if torch.device(device).type != "cuda":
        result["mamba_ssm"] = {"skipped": "mamba_ssm's CUDA kernels need a CUDA device"}
        return result
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # any import failure means "not available here"
        result["mamba_ssm"] = {"skipped": f"mamba_ssm not importable: {type(exc).__name__}: {exc}"}
        return result
    # mamba_ssm's native layout: u, delta, z [B, D, L]; B, C [B, N, L]. Transposed once, outside the timing.
    m = {k: inputs[k].detach().transpose(1, 2).contiguous().requires_grad_() for k in ("x", "dt", "B", "C", "z")}
    A, D = inputs["A"].detach().clone().requires_grad_(), inputs["D"].detach().clone().requires_grad_()
    m_leaves = [m["x"], m["dt"], A, m["B"], m["C"], D, m["z"]]

    def mamba():
        return (selective_scan_fn(m["x"], m["dt"], A, m["B"], m["C"], D, m["z"], delta_softplus=False),)

    y_mamba = mamba()[0].detach().transpose(1, 2)
    y_ours = scan(*[t.detach() for t in leaves])[0]
    result["mamba_ssm"] = {
        "unsigned": timer(_fwd_bwd(mamba, m_leaves)),
        "rel_rmse_ours_unsigned_vs_mamba_output": rel_rmse(y_ours, y_mamba),
    }
    mamba_ms = result["mamba_ssm"]["unsigned"]["median_ms"]
    result["ours_unsigned_speed_vs_mamba"] = mamba_ms / result["ours_unsigned"]["median_ms"]
    result["ours_signed_speed_vs_mamba"] = mamba_ms / result["ours_signed"]["median_ms"]
    result["target_speed_vs_mamba_min"] = 0.9
    return result


def time_delta(
    device: torch.device | str,
    timer: Callable[[Callable[[], object]], dict],
    *,
    backend: str = "triton",
    shape: dict | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> dict:
    """Forward+backward: ours with beta in (0, 2) and in (0, 1), and fla's ``chunk_delta_rule`` called directly
    with beta in (0, 1) (CUDA only)."""
    shape = dict(DELTA_TIME_SHAPE if shape is None else shape)
    result: dict = {"shape": shape, "dtype": str(dtype), "backend": backend, "what": "forward+backward"}
    cases = [("ours_beta_0_2", _delta_op(backend), 2.0), ("ours_beta_0_1", _delta_op(backend), 1.0)]
    if torch.device(device).type == "cuda":
        from fla.ops.delta_rule import chunk_delta_rule

        cases.append(("fla_chunk_beta_0_1", chunk_delta_rule, 1.0))
    else:
        result["fla_chunk_beta_0_1"] = {"skipped": "fla's Triton kernels need CUDA"}
    for label, fn, beta_max in cases:
        inputs = delta_inputs(**shape, beta_max=beta_max, dtype=dtype, device=device)
        leaves = [inputs[k] for k in ("q", "k", "v", "beta")]

        def call(fn=fn, leaves=leaves):
            return fn(*leaves)

        result[label] = timer(_fwd_bwd(call, leaves))
        del inputs, leaves
    result["signed_over_unsigned"] = result["ours_beta_0_2"]["median_ms"] / result["ours_beta_0_1"]["median_ms"]
    if "median_ms" in result["fla_chunk_beta_0_1"]:
        result["ours_over_fla"] = result["ours_beta_0_2"]["median_ms"] / result["fla_chunk_beta_0_1"]["median_ms"]
    return result


def bandwidth_scan(
    device: torch.device | str,
    timer: Callable[[Callable[[], object]], dict],
    *,
    backend: str = "triton",
    shape: dict | None = None,
    device_name: str | None = None,
) -> dict:
    """Forward-only (no gradient) achieved GB/s of the scan against the device's peak from the table."""
    s = dict(SCAN_SHAPE if shape is None else shape)
    scan = _scan_op(backend)
    inputs = {k: v.detach() for k, v in scan_inputs(**s, device=device).items()}
    elt = inputs["x"].element_size()
    n_act = s["batch"] * s["T"] * s["d"]
    n_bc = s["batch"] * s["T"] * s["N"]
    bytes_moved = (
        3 * n_act * elt  # x, dt, z read
        + 2 * n_bc * elt  # B, C read
        + inputs["A"].numel() * inputs["A"].element_size()
        + inputs["D"].numel() * inputs["D"].element_size()
        + n_act * elt  # y written
    )
    name = device_name if device_name is not None else torch.cuda.get_device_name()
    peak, matched = peak_bandwidth(name)
    result = {"shape": s, "backend": backend, "bytes": bytes_moved, "device_name": name}
    result.update(peak_GBps=peak, peak_from_table_entry=matched, target_fraction_min=0.5)
    args_ = [inputs[k] for k in ("x", "dt", "A", "B", "C", "D", "z")]
    for negative in (False, True):
        with torch.no_grad():
            t = timer(lambda neg=negative: scan(*args_, negative_eigvals=neg))
        gbs = bytes_moved / (t["median_ms"] * 1e-3) / 1e9
        result["signed" if negative else "unsigned"] = {
            **t,
            "achieved_GBps": gbs,
            "fraction_of_peak": (gbs / peak) if peak else None,
        }
    return result


def _cuda_timer(args) -> Callable[[Callable[[], object]], dict]:
    return lambda fn: cuda_median_ms(fn, args.repeats)


SECTIONS = {
    "scan_correctness": lambda args: check_scan(shape=dict(SCAN_SHAPE, d=args.ref_channels or SCAN_SHAPE["d"])),
    "delta_correctness": lambda args: check_delta(),
    "scan_timing": lambda args: time_scan("cuda", _cuda_timer(args)),
    "delta_timing": lambda args: time_delta("cuda", _cuda_timer(args)),
    "scan_bandwidth": lambda args: bandwidth_scan("cuda", _cuda_timer(args)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="JSON report path")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median reported)")
    parser.add_argument("--ref-channels", type=int, default=0, help="d_inner for the scan correctness check")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset to run")
    args = parser.parse_args(argv)
    if args.repeats < 10:
        parser.error("--repeats must be at least 10")

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device available; this script needs one GPU. Nothing was run.", file=sys.stderr)
        return 2

    import triton

    report: dict = {
        "device": torch.cuda.get_device_name(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "sections": {},
    }
    try:
        import fla

        report["fla"] = getattr(fla, "__version__", "unknown")
    except Exception as exc:
        report["fla"] = f"not importable: {exc}"

    def write():
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)

    t_start = time.perf_counter()
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            report["sections"][name] = SECTIONS[name](args)
        except Exception as exc:  # record it and go on with the other sections
            report["sections"][name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        report["sections"][name]["section_seconds"] = time.perf_counter() - t0
        torch.cuda.empty_cache()
        write()
        print(f"gpu_check: {name} done in {time.perf_counter() - t0:.1f}s", flush=True)
    report["total_seconds"] = time.perf_counter() - t_start
    write()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
