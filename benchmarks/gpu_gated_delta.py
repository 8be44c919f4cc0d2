"""One-GPU check of the signed gated delta rule and DeltaProduct on Triton: correctness against naive at a real
shape, then forward+backward timings against fla's kernels called directly. Writes JSON.

    python benchmarks/gpu_gated_delta.py [--out gpu_gated_delta.json] [--repeats 20] [--dtypes bf16,fp16]

Two functions do the work, so a CPU rehearsal (``tests/kernels/test_gpu_gated_delta_rehearsal.py``) can run them
at tiny shapes with ``backend="chunk"`` and a fake timer:

- :func:`check_gated_delta`: ours vs the naive loop (fp32 on the same rounded inputs) at B 2, T 2048, H 8,
  K = V 128: gates in [0, 1] and in [-1, 1], edge gates (alpha in {-1, 0, 1}, beta blocks of 0 and 2), packed
  sequences (one empty, one of length 1), and DeltaProduct (n_h 2, signed): output, final state and every
  gradient, as relative RMSE, ``dalpha`` itself included, at exactly-zero gates too (the Triton wrapper forms the
  gate's gradient without dividing by ``alpha`` when some ``|alpha| < 0.1``: ``gated_delta_rule/gate_grad.py``).
- :func:`time_gated_delta`: forward+backward, signed (alpha in [-1, 1], beta in [0, 2]) vs unsigned gates; ours
  vs fla's ``chunk_gated_delta_rule`` and ``chunk_gated_delta_product`` (n_h 2) called directly with
  ``g = log alpha`` (alpha in (0, 1]); ``timer(fn) -> seconds`` is injected. fla's kernels need CUDA, so on CPU
  their entries are recorded as skipped.

Targets: signed <= 1.05x unsigned; ours within a few percent of fla direct (the wrapper adds a sign cumsum and two
elementwise multiplies). Exits with status 2 when no CUDA device is present.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F

REF_SHAPE = dict(batch=2, T=2048, H=8, K=128, V=128)
TIME_SHAPE = dict(batch=8, T=2048, H=16, K=128, V=128)
N_H = 2
# Relative-RMSE bars per backend and dtype. triton: fla keeps WY factors and chunk states in the input dtype
# (bf16 one ulp is 3.9e-3); fp32 runs TF32 dots on GPUs. chunk computes in fp32 and rounds the output once.
TOL = {
    ("triton", torch.bfloat16): 2e-2,
    ("triton", torch.float16): 5e-3,
    ("triton", torch.float32): 5e-3,
    ("chunk", torch.bfloat16): 1e-2,
    ("chunk", torch.float16): 2e-3,
    ("chunk", torch.float32): 1e-5,
}
POS = ("q", "k", "v", "beta", "alpha")


def rel_rmse(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.detach().double(), expected.detach().double()
    if a.numel() == 0:
        return 0.0
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt().clamp_min(1e-12))


def make_inputs(
    device: torch.device,
    dtype: torch.dtype,
    batch: int,
    T: int,
    H: int,
    K: int,
    V: int,
    *,
    gates: str,
    n_h: int | None = None,
    n_states: int | None = None,
    seed: int = 0,
) -> dict:
    """Leaves in ``dtype`` (initial state fp32). ``gates``: ``unsigned`` (alpha in (0, 1), beta in (0, 1)),
    ``signed`` (alpha in (-1, 1), beta in (0, 2)), ``edges`` (alpha in {-1, 0, 1}, never 0 on the first step;
    beta 2 on the second tenth of the steps, 0 on the third, random in (0, 2) elsewhere)."""
    g = torch.Generator(device=device).manual_seed(seed)
    sub = () if n_h is None else (n_h,)

    def rand(*shape):
        return torch.rand(*shape, device=device, generator=g)

    q = torch.randn(batch, T, H, K, device=device, generator=g)
    k = F.normalize(torch.randn(batch, T, *sub, H, K, device=device, generator=g), dim=-1)
    v = torch.randn(batch, T, *sub, H, V, device=device, generator=g)
    beta = rand(batch, T, *sub, H) * (1.0 if gates == "unsigned" else 2.0)
    if gates == "unsigned":
        alpha = rand(batch, T, H)
    elif gates == "signed":
        alpha = 2 * rand(batch, T, H) - 1
    else:
        alpha = torch.tensor([-1.0, 0.0, 1.0], device=device)[
            torch.randint(0, 3, (batch, T, H), device=device, generator=g)
        ]
        alpha[:, 0] = 1.0
        beta[:, T // 10 : 2 * T // 10] = 2.0
        beta[:, 2 * T // 10 : 3 * T // 10] = 0.0
    h0 = torch.randn(n_states or batch, H, K, V, device=device, generator=g)
    out = {"q": q, "k": k, "v": v, "beta": beta, "alpha": alpha}
    out = {name: t.to(dtype) for name, t in out.items()}
    out["initial_state"] = h0
    return {name: t.requires_grad_() for name, t in out.items()}


def outputs_and_grads(fn: Callable, inputs: dict, seed: int = 1, **kw) -> dict:
    """Run ``fn``, backprop fixed cotangents through the output and the final state; every tensor to compare."""
    args = [inputs[n] for n in POS]
    out, state = fn(*args, initial_state=inputs["initial_state"], output_final_state=True, **kw)
    g = torch.Generator(device=out.device).manual_seed(seed)
    d_out = torch.randn(out.shape, device=out.device, generator=g)
    d_state = torch.randn(state.shape, device=out.device, generator=g)
    leaves = list(inputs.values())
    grads = torch.autograd.grad((out.float() * d_out).sum() + (state * d_state).sum(), leaves)
    res = {"out": out.detach(), "final_state": state.detach()}
    res.update({f"d_{name}": gr for name, gr in zip(inputs, grads)})
    return res


def compare(got: dict, ref: dict, tol: float) -> dict:
    """Relative RMSE of every entry, ``d_alpha`` itself included (exact at every gate, 0 included)."""
    errs = {k: rel_rmse(got[k], ref[k]) for k in ref}
    return {"rel_rmse": errs, "max": max(errs.values()), "tol": tol, "ok": all(e <= tol for e in errs.values())}


def check_gated_delta(
    device: torch.device | str, dtype: torch.dtype, backend: str = "triton", shape: dict | None = None
) -> dict:
    """``gated_delta_rule`` and ``delta_product`` on ``backend`` against their naive loops (see module docstring).
    Returns ``{case: {"rel_rmse": {...}, "max", "tol", "ok", ...}}`` plus ``"ok"`` over all cases."""
    from lrnn_lm.kernels import delta_product, gated_delta_rule

    device = torch.device(device)
    shape = dict(REF_SHAPE if shape is None else shape)
    tol = TOL[(backend, dtype)]

    def ours(op):
        return lambda *a, **kw: op(*a, backend=backend, **kw)

    def naive(op):
        return lambda *a, **kw: op(*a, backend="naive", **kw)

    result: dict = {"shape": shape, "dtype": str(dtype), "backend": backend, "reference": "naive fp32, same inputs"}
    for gates in ("unsigned", "signed", "edges"):
        inputs = make_inputs(device, dtype, **shape, gates=gates)
        got = outputs_and_grads(ours(gated_delta_rule), inputs)
        ref = outputs_and_grads(naive(gated_delta_rule), inputs)
        result[gates] = compare(got, ref, tol)
        del got, ref, inputs

    # Packed sequences: lengths (T/2 - 1, 1, 0, rest) in one row, each with its own initial state.
    T = shape["T"] * shape["batch"]
    lengths = [T // 2 - 1, 1, 0, T - T // 2]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=device, dtype=torch.int32)
    inputs = make_inputs(device, dtype, **dict(shape, batch=1, T=T), gates="signed", n_states=len(lengths))
    got = outputs_and_grads(ours(gated_delta_rule), inputs, cu_seqlens=cu)
    ref = outputs_and_grads(naive(gated_delta_rule), inputs, cu_seqlens=cu)
    result["varlen"] = dict(compare(got, ref, tol), lengths=lengths)
    del got, ref, inputs

    # DeltaProduct, n_h sub-steps per token (the naive loop runs T * n_h steps, so half the length).
    inputs = make_inputs(device, dtype, **dict(shape, T=shape["T"] // 2), gates="signed", n_h=N_H)
    got = outputs_and_grads(ours(delta_product), inputs)
    ref = outputs_and_grads(naive(delta_product), inputs)
    result["delta_product"] = dict(compare(got, ref, tol), n_h=N_H)
    del got, ref, inputs

    result["ok"] = all(v["ok"] for v in result.values() if isinstance(v, dict) and "ok" in v)
    return result


def time_gated_delta(
    device: torch.device | str,
    timer: Callable[[Callable[[], object]], float],
    backend: str = "triton",
    shape: dict | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> dict:
    """Forward+backward seconds (``timer(fn)``) of ours signed and unsigned, and of fla's direct kernels (CUDA
    only), for ``gated_delta_rule`` and ``delta_product`` (n_h 2); ratios as time over time."""
    from lrnn_lm.kernels import delta_product, gated_delta_rule

    device = torch.device(device)
    shape = dict(TIME_SHAPE if shape is None else shape)
    seconds: dict[str, float | str] = {}

    def fwd_bwd(fn, inputs):
        args = [inputs[n] for n in POS]

        def run():
            o, _ = fn(*args, initial_state=inputs["initial_state"])
            o.backward(torch.ones_like(o))

        return run

    for gates in ("unsigned", "signed"):
        x = make_inputs(device, dtype, **shape, gates=gates)
        seconds[f"gated_delta_rule/ours/{gates}"] = timer(
            fwd_bwd(lambda *a, **k: gated_delta_rule(*a, backend=backend, **k), x)
        )
        x = make_inputs(device, dtype, **shape, gates=gates, n_h=N_H)
        seconds[f"delta_product/ours/{gates}"] = timer(
            fwd_bwd(lambda *a, **k: delta_product(*a, backend=backend, **k), x)
        )

    if device.type == "cuda":
        from fla.ops.gated_delta_product import chunk_gated_delta_product
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        def fla_gdr(q, k, v, beta, alpha, **kw):
            return chunk_gated_delta_rule(q, k, v, alpha.float().log(), beta, **kw)

        def fla_gdp(q, k, v, beta, alpha, **kw):
            # fla takes the n_h sub-steps interleaved along time: [B, T * n_h, ...].
            B, T = q.shape[:2]
            k_s, v_s, beta_s = (t.reshape(B, T * N_H, *t.shape[3:]) for t in (k, v, beta))
            return chunk_gated_delta_product(q, k_s, v_s, alpha.float().log(), beta_s, num_householder=N_H, **kw)

        x = make_inputs(device, dtype, **shape, gates="unsigned")
        seconds["gated_delta_rule/fla_direct/unsigned"] = timer(fwd_bwd(fla_gdr, x))
        x = make_inputs(device, dtype, **shape, gates="unsigned", n_h=N_H)
        seconds["delta_product/fla_direct/unsigned"] = timer(fwd_bwd(fla_gdp, x))
    else:
        for op in ("gated_delta_rule", "delta_product"):
            seconds[f"{op}/fla_direct/unsigned"] = "skipped: fla's Triton kernels need CUDA"

    ratios = {}
    for op in ("gated_delta_rule", "delta_product"):
        s, u, f = (seconds[f"{op}/{who}"] for who in ("ours/signed", "ours/unsigned", "fla_direct/unsigned"))
        ratios[f"{op}/signed_over_unsigned (want <= 1.05)"] = s / u
        if isinstance(f, float):
            ratios[f"{op}/ours_unsigned_over_fla_direct"] = u / f
            ratios[f"{op}/ours_signed_over_fla_direct"] = s / f
    return {"shape": shape, "dtype": str(dtype), "backend": backend, "n_h": N_H, "seconds": seconds, "ratios": ratios}


def cuda_timer(repeats: int, warmup: int = 3) -> Callable[[Callable[[], object]], float]:
    """Median seconds of ``fn`` over ``repeats`` CUDA-event-timed runs after ``warmup`` runs (gpu_check's loop)."""
    # Imported here: this runs only from main(), as a script beside gpu_check.py; the CPU rehearsals load this
    # file by path and pass their own timer.
    from gpu_check import cuda_median_ms

    def timer(fn) -> float:
        return cuda_median_ms(fn, repeats, warmup)["median_ms"] / 1e3

    return timer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_gated_delta.json")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--dtypes", default="bf16,fp16", help="comma-separated: bf16, fp16, fp32")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this script checks the Triton kernels on a GPU", file=sys.stderr)
        sys.exit(2)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    report: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }

    def section(name: str, fn: Callable[[], dict]) -> None:
        try:
            report[name] = fn()
        except Exception:  # record and go on: one failing section must not hide the others
            report[name] = {"error": traceback.format_exc()}
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        torch.cuda.empty_cache()

    for name in args.dtypes.split(","):
        section(f"check_{name}", lambda name=name: check_gated_delta("cuda", dtypes[name]))
    section("timing_bf16", lambda: time_gated_delta("cuda", cuda_timer(args.repeats)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
