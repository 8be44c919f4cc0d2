"""The one harness that compares a kernel backend with its ``naive`` reference, shared by the tests and the
benchmarks: inputs for every op (:func:`make_inputs`), outputs and gradients under fixed cotangents
(:func:`outputs_and_grads`), and relative-RMSE comparison (:func:`rel_rmse`, :func:`compare`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# The tensor arguments each public op takes positionally, in order (the rest are keywords).
POSITIONAL = {
    "selective_scan": ("x", "dt", "A", "B", "C", "D", "z"),
    "ssd": ("x", "dt", "A", "B", "C", "D"),
    "delta_rule": ("q", "k", "v", "beta"),
    "gated_delta_rule": ("q", "k", "v", "beta", "alpha"),
    "delta_product": ("q", "k", "v", "beta", "alpha"),
}
# The eigenvalue range enters the scans as a flag; the delta rules take it in their values (beta up to 2, alpha
# down to -1), so make_inputs draws those in the range asked for.
FLAGGED = ("selective_scan", "ssd")


def rel_rmse(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Root-mean-square error of ``actual`` relative to the RMS of ``expected`` (both upcast to fp64)."""
    a, e = actual.detach().double(), expected.detach().double()
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        return float("inf")
    err = (a - e).pow(2).mean().sqrt()
    scale = e.pow(2).mean().sqrt()
    return float(err / scale.clamp_min(1e-12))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, name: str = "tensor") -> None:
    """Fail with a readable message when ``rel_rmse(actual, expected) > tol``."""
    r = rel_rmse(actual, expected)
    assert r <= tol, f"{name}: relative RMSE {r:.3e} exceeds {tol:.1e}"


def compare(actual: dict, expected: dict, tol: float) -> dict:
    """Relative RMSE of every entry; raises AssertionError listing every entry above ``tol`` or non-finite."""
    errs = {k: rel_rmse(actual[k], expected[k]) for k in expected}
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, f"relative RMSE above {tol:.0e}: " + ", ".join(f"{k}={e:.2e}" for k, e in bad.items())
    return errs


def make_inputs(
    op: str,
    shape: dict,
    *,
    signed: bool,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    gates: str = "random",
    seed: int = 0,
    with_state: bool = True,
    n_states: int | None = None,
) -> dict:
    """Leaf tensors for ``op`` (keys as the op's argument names): activations in ``dtype``; the parameters
    ``A``/``D`` and the initial state (``n_states`` of them, default the batch) in fp32, as in a model.

    ``shape`` keys: selective_scan ``batch, T, d, N``; ssd ``batch, T, H, P, N, G``; delta rules ``batch, T, H, K,
    V`` (and ``n_h`` for delta_product). ``signed`` draws beta in (0, 2) and alpha in (-1, 1) for the delta rules
    (the scans take the range as a flag). ``gates="edges"`` puts the edge values in: scans get gates exactly 0/-1
    (``exp`` underflow) and exactly 1 (dt = 0) on a third of the tokens each; delta rules get alpha in {-1, 0, 1}
    (1 on the first step) and beta exactly at its top and at 0 on a tenth of the steps each. Values are drawn on
    the CPU from ``seed`` and then moved, so every device sees the same numbers."""
    g = torch.Generator().manual_seed(seed)
    s = shape
    b, T = s["batch"], s["T"]

    def randn(*dims):
        return torch.randn(*dims, generator=g)

    def rand(*dims):
        return torch.rand(*dims, generator=g)

    if op in FLAGGED:
        heads = (s["d"],) if op == "selective_scan" else (s["H"],)
        x = randn(b, T, *heads) if op == "selective_scan" else randn(b, T, s["H"], s["P"])
        dt = F.softplus(randn(b, T, *heads) - 1)
        A = -torch.exp(0.5 * randn(s["d"], s["N"]) if op == "selective_scan" else 0.5 * randn(s["H"]))
        if gates == "edges":
            pick = torch.randint(0, 3, dt.shape, generator=g)
            dt = torch.where(pick == 0, 1e4, torch.where(pick == 1, 0.0, dt))
        bc = (b, T, s["N"]) if op == "selective_scan" else (b, T, s["G"], s["N"])
        t = {"x": x, "dt": dt, "A": A, "B": randn(*bc) * s["N"] ** -0.5, "C": randn(*bc) * s["N"] ** -0.5}
        t["D"] = randn(*heads)
        if op == "selective_scan":
            t["z"] = randn(b, T, s["d"])
        state = (s["d"], s["N"]) if op == "selective_scan" else (s["H"], s["P"], s["N"])
        params = ("A", "D")
    else:
        H, K, V = s["H"], s["K"], s["V"]
        sub = (s["n_h"],) if op == "delta_product" else ()
        beta_max = 2.0 if signed else 1.0
        beta = rand(b, T, *sub, H) * beta_max
        t = {"q": randn(b, T, H, K), "k": F.normalize(randn(b, T, *sub, H, K), dim=-1), "v": randn(b, T, *sub, H, V)}
        if gates == "edges":
            beta[:, T // 10 : 2 * T // 10] = beta_max
            beta[:, 2 * T // 10 : 3 * T // 10] = 0.0
        t["beta"] = beta
        if op != "delta_rule":
            # |alpha| >= 0.1 outside the edge case: fla's reference kernels take log(alpha).
            alpha = rand(b, T, H) * 0.9 + 0.1
            if signed:
                alpha = alpha * torch.where(rand(b, T, H) < 0.5, -1.0, 1.0)
            if gates == "edges":
                alpha = torch.tensor([-1.0 if signed else 0.0, 0.0, 1.0])[torch.randint(0, 3, (b, T, H), generator=g)]
                alpha[:, 0] = 1.0
            t["alpha"] = alpha
        state = (H, K, V)
        params = ()
    out = {k: v if k in params else v.to(dtype) for k, v in t.items()}
    if with_state:
        out["initial_state"] = randn(n_states or b, *state)
    return {k: v.to(device).requires_grad_() for k, v in out.items()}


def outputs_and_grads(fn: Callable, inputs: dict, positional: tuple[str, ...], seed: int = 1, **kwargs) -> dict:
    """Run ``fn``, backprop fixed random fp32 cotangents through the output and the final state, and return
    ``{"out": o, "state": S, "grad_<name>": ...}`` for every input that requires grad (each must get one, in its
    own dtype). The cotangents are drawn on the CPU from ``seed``, so every device sees the same ones."""
    args = [inputs[n] for n in positional]
    kw = {k: v for k, v in inputs.items() if k not in positional}
    o, S = fn(*args, **kw, output_final_state=True, **kwargs)
    g = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=g).to(o.device)
    dS = torch.randn(S.shape, generator=g).to(S.device)
    leaves = {n: t for n, t in inputs.items() if t is not None and t.requires_grad}
    grads = torch.autograd.grad((o.float() * do).sum() + (S * dS).sum(), list(leaves.values()), allow_unused=True)
    result = {"out": o.detach(), "state": S.detach()}
    for name, gr in zip(leaves, grads):
        assert gr is not None, f"no gradient for {name}"
        assert gr.dtype == leaves[name].dtype, f"d{name} dtype {gr.dtype} != {leaves[name].dtype}"
        result[f"grad_{name}"] = gr
    return result


def clone_leaves(inputs: dict) -> dict:
    """Fresh leaves with the same values, so that a second run's gradients do not accumulate into the first's."""
    return {k: None if v is None else v.detach().clone().requires_grad_(v.requires_grad) for k, v in inputs.items()}
