"""Gated delta rule on Triton through flash-linear-attention (fla), with signed gates by the running-sign identity.

fla's gated kernels take the gate in log space, ``g = log alpha``, so they accept only ``alpha`` in (0, 1]. For
``alpha = s |alpha|`` with ``s = +-1``, let ``P_t = s_1 ... s_t`` (restarting at every sequence start). Then
``S'_t = P_t S_t`` obeys the same recurrence with gate ``|alpha_t|`` and values ``P_t v_t``, and
``o_t = P_t o'_t`` (``docs/signed_chunking.md``). So this module

1. computes ``P`` (a cumulative count of negative gates, mod 2; the sign of exactly 0 is +1),
2. runs fla's unsigned kernel on ``g = log(max(|alpha|, 1e-10))`` and ``v' = P v``,
3. returns ``o = P o'`` and the final state ``P_T S'_T``.

The ``P`` factors are exactly +-1, so the signs cost no precision; ``P`` carries no gradient.

``alpha = 0``: ``log 0 = -inf`` would make fla's ``exp(G_t - G_s)`` NaN, so ``|alpha|`` is floored at
:data:`ALPHA_FLOOR` = 1e-10 in fla's forward. The forward stays finite and exact to fp32 (the state carried across
a zero gate is scaled by 1e-10 instead of 0, below fp32 resolution next to the new term); so is the initial state's
gradient behind a zero gate (1e-10 of its scale instead of 0).
One more cost of the floor: each zero adds ``log 1e-10 = -23`` to fla's in-chunk fp32 cumulative sum of ``g``,
which coarsens the resolution of later decays in that chunk (about 2e-6 relative per zero gate).

The gate's gradient: fla returns ``dg = dL/dlog|alpha|`` from in-chunk sums whose terms cancel, so its error is
absolute, and ``dL/dalpha = sign * dg / |alpha|`` has a relative error of about ``4e-7 / |alpha|`` (measured under
the interpreter in fp32: 7e-5 at ``|alpha| = 1e-2``, 4e-3 at 1e-4, 0.5 at 1e-6), and none at all at 0. So when
some gate has ``|alpha| <`` :data:`EXACT_BELOW` = 0.1 (one host sync, only when ``alpha`` needs a gradient), fla
gets ``log|alpha|`` detached and ``alpha``'s gradient comes from :func:`.gate_grad.gate_grad` (pairs of tokens
around each gate, no division), exact at every gate, 0 included. Otherwise (every ``|alpha| >= 0.1``, as in most
unsigned models) fla's own ``dg`` is used, within 4e-6 relative, at no extra cost. The extra cost of the exact
path on a GPU is unmeasured (``benchmarks/gpu_timing.py`` times signed against unsigned gates).

Layout and conventions as in ``lrnn_lm.kernels.delta_rule.triton``: batch-first ``[B, T, H, D]``, states
``[N, H, K, V]`` fp32, ``cu_seqlens`` ``[N + 1]`` with ``B == 1`` (int64 for fla), ``scale`` passed explicitly,
``use_qk_l2norm_in_kernel`` passed on (when the exact gate gradient runs, q and k are normalised here first).

Which fla op runs:

- ``chunk_gated_delta_rule`` for training and prefill, in the inputs' dtype (``q, k, v`` promoted to one
  dtype). bf16 and fp16 are fla's intended dtypes. fp32 is accepted by this fla version (unlike
  ``chunk_delta_rule``): it keeps fp32 storage, but on a GPU Triton's ``tl.dot`` on fp32 uses TF32, so expect
  about 1e-3 relative error rather than fp32 exactness.
- ``fused_recurrent_gated_delta_rule`` for a single-token decode step (``T == 1``) when no input needs a
  gradient: fla's fused recurrent op has no backward, so a ``T == 1`` call that needs gradients runs the chunk op.

``beta``, ``alpha`` and ``initial_state`` may be any float dtype; ``g`` is computed in fp32. Output ``o`` is in
``v.dtype``; gradients come back in each input's dtype. ``K <= 256``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..l2norm import maybe_l2norm

ALPHA_FLOOR = 1e-10
EXACT_BELOW = 0.1  # fla's dL/dlog|alpha| / alpha is within 4e-7 / 0.1 = 4e-6 relative above this


def gated_delta_rule_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    alpha: torch.Tensor,
    *,
    scale: float | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Signed gated delta rule through fla's Triton kernels; same contract as :func:`gated_delta_rule_naive`.

    Shapes: ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``, ``beta, alpha: [B, T, H]`` (``alpha`` in [-1, 1],
    linear space), ``initial_state`` and the returned state: ``[N, H, K, V]`` fp32 (``N = B``, or the number of
    packed sequences with ``cu_seqlens``, which requires ``B == 1``). Returns ``(o [B, T, H, V] in v.dtype,
    final_state fp32 or None)``. See the module docstring for ``alpha = 0`` and for which fla op runs.
    """
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    batch, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else float(scale)
    n_seq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
    h0 = initial_state.float() if initial_state is not None else None
    if T == 0:
        state = h0 if h0 is not None else q.new_zeros((n_seq, H, K, V), dtype=torch.float32)
        return v.new_zeros((batch, 0, H, V)), (state if output_final_state else None)

    out_dtype = v.dtype
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    cu = cu_seqlens.long() if cu_seqlens is not None else None

    P, P_last = running_sign(alpha, cu)
    sign = torch.where(alpha < 0, -1.0, 1.0).to(alpha.dtype)
    v_signed = v * P[..., None].to(dtype)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, beta, alpha, initial_state)
    )
    # One host sync when alpha needs a gradient: only a small gate needs the exact gradient (gate_grad.py).
    exact = needs_grad and alpha.requires_grad and bool((alpha.detach().abs() < EXACT_BELOW).any())
    magnitude = (alpha.detach() if exact else alpha) * sign  # |alpha|; d|alpha|/dalpha = sign
    g = magnitude.float().clamp_min(ALPHA_FLOOR).log()

    in_kernel = use_qk_l2norm_in_kernel
    if exact and use_qk_l2norm_in_kernel:
        # The exact gate gradient reads q and k: give it (and fla) the normalised ones.
        q, k = (t.to(dtype) for t in maybe_l2norm(q, k, True))
        in_kernel = False
    fn = fused_recurrent_gated_delta_rule if T == 1 and not needs_grad else chunk_gated_delta_rule
    o, state = fn(
        q=q,
        k=k,
        v=v_signed,
        g=g,
        beta=beta,
        scale=scale,
        initial_state=h0,
        output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=in_kernel,
        cu_seqlens=cu,
    )
    if exact:
        o, state = _GateGradient.apply(o, state, alpha, sign, q, k, v_signed, beta, h0, scale, cu)
    o = (o * P[..., None].to(o.dtype)).to(out_dtype)
    if output_final_state:
        state = state * P_last[:, :, None, None]
    return o, (state if output_final_state else None)


def running_sign(alpha: torch.Tensor, cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``P_t = s_1 ... s_t`` with ``s = -1`` where ``alpha < 0`` and +1 elsewhere (0 included), restarting at
    every sequence start; ``alpha [B, T, H]``. Returns ``(P [B, T, H], P_last [N, H])`` in fp32, where ``P_last``
    is each sequence's ``P`` at its last step (1 for an empty sequence). No host synchronisation."""
    batch, T, H = alpha.shape
    negatives = (alpha < 0).to(torch.int32).cumsum(1)  # negative gates in [0, t], per sequence after the fix below
    if cu_seqlens is None:
        P = 1.0 - 2.0 * (negatives % 2).float()
        return P, P[:, -1]
    starts, ends = cu_seqlens[:-1], cu_seqlens[1:]
    before = F.pad(negatives, (0, 0, 1, 0))[0]  # [T + 1, H]: negatives in [0, t)
    seq_of_token = torch.searchsorted(ends, torch.arange(T, device=alpha.device), right=True)  # [T]
    negatives = negatives - before[starts][seq_of_token][None]
    P = 1.0 - 2.0 * (negatives % 2).float()
    last = P[0, (ends - 1).clamp_min(0)]  # [N, H]
    return P, torch.where((ends > starts)[:, None], last, torch.ones_like(last))


class _GateGradient(torch.autograd.Function):
    """Identity on fla's ``(o', final_state')`` that gives ``alpha`` its exact gradient (:func:`.gate_grad.gate_grad`
    on the unsigned problem: gates ``|alpha|``, values ``P v``) in place of ``dL/dlog|alpha| / alpha``:
    ``dL/dalpha_t = s_t dL/d|alpha_t|`` with ``s_t`` the gate's sign (``P`` carries no gradient)."""

    @staticmethod
    def forward(ctx, o, state, alpha, sign, q, k, v_signed, beta, h0, scale, cu):
        ctx.save_for_backward(alpha, sign, q, k, v_signed, beta, h0, cu)
        ctx.scale, ctx.has_state = scale, state is not None
        return o.view_as(o), (state.view_as(state) if state is not None else None)

    @staticmethod
    def backward(ctx, d_o, d_state):
        from .gate_grad import gate_grad

        alpha, sign, q, k, v_signed, beta, h0, cu = ctx.saved_tensors
        d_final = d_state if ctx.has_state else None
        grad = gate_grad(alpha.abs(), q, k, v_signed, beta, d_o, h0, d_final, scale=ctx.scale, cu_seqlens=cu)
        return d_o, d_state, (sign * grad).to(alpha.dtype), *([None] * 8)
