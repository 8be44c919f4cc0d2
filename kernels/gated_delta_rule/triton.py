"""Gated delta rule on Triton through flash-linear-attention (fla), with signed gates by the running-sign identity.

fla's gated kernels take the gate in log space, ``g = log alpha``, so they accept only ``alpha`` in (0, 1]. For
``alpha = s |alpha|`` with ``s = +-1``, let ``P_t = s_1 ... s_t`` (restarting at every sequence start). Then
``S'_t = P_t S_t`` obeys the same recurrence with gate ``|alpha_t|`` and values ``P_t v_t``, and
``o_t = P_t o'_t`` (``shared/notes/signed-chunking.md``). So this module

1. computes ``P`` (a cumulative count of negative gates, mod 2; the sign of exactly 0 is +1),
2. runs fla's unsigned kernel on ``g = log(max(|alpha|, 1e-10))`` and ``v' = P v``,
3. returns ``o = P o'`` and the final state ``P_T S'_T``.

The ``P`` factors are exactly +-1, so the signs cost no precision. ``P`` carries no gradient and
``d|alpha|/dalpha = s``, so autograd through ``log|alpha|`` gives the gradient of ``alpha``.

``alpha = 0``: ``log 0 = -inf`` would make fla's ``exp(G_t - G_s)`` NaN, so ``|alpha|`` is floored at
:data:`ALPHA_FLOOR` = 1e-10. The forward stays finite and exact to fp32 (the state carried across a zero gate
is scaled by 1e-10 instead of 0, below fp32 resolution next to the new term). The gradient of an ``alpha`` that is
exactly 0 (below the floor) is 0: finite, but not the true derivative ``(I - beta k k^T) S_{t-1}`` contracted
with the incoming gradient. For ``|alpha| >= 1e-10`` the gradient is the exact chain rule through fla's
``dg = dL/dlog|alpha|``. fla computes ``dg`` from in-chunk sums whose terms cancel, so its absolute error is about
fp32 roundoff times the gradient scale, and ``dL/dalpha = dg / alpha`` has a relative error of about
``4e-7 / |alpha|`` (measured under the interpreter in fp32: 7e-5 at ``|alpha| = 1e-2``, 4e-3 at 1e-4, 0.5 at 1e-6).
The chunk backend (cumulative products, no logarithms) has no such loss.
One more cost of the floor: each zero adds ``log 1e-10 = -23`` to fla's in-chunk fp32 cumulative sum of ``g``,
which coarsens the resolution of later decays in that chunk (about 2e-6 relative per zero gate).

Layout and conventions as in ``lrnn_lm.kernels.delta_rule.triton``: batch-first ``[B, T, H, D]``, states
``[N, H, K, V]`` fp32, ``cu_seqlens`` ``[N + 1]`` with ``B == 1`` (int64 for fla), ``scale`` passed explicitly,
``use_qk_l2norm_in_kernel=False``.

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

ALPHA_FLOOR = 1e-10


def gated_delta_rule_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    alpha: torch.Tensor,
    *,
    scale: float | None = None,
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
    g = (alpha * sign).float().clamp_min(ALPHA_FLOOR).log()  # log|alpha|; d|alpha|/dalpha = sign
    v_signed = v * P[..., None].to(dtype)

    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, beta, alpha, initial_state)
    )
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
        use_qk_l2norm_in_kernel=False,
        cu_seqlens=cu,
    )
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
