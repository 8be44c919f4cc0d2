"""SSD on Triton through flash-linear-attention's ``chunk_simple_gla``, inside the running-sign wrapper.

SSD is simple GLA (a scalar decay per head and token) with ``q = C``, ``k = B`` (each head reading its group),
``v = dt x``, ``g = log a`` and ``scale = 1``. fla's kernels take ``g`` in log space and form decays as
``exp(g_t - g_s)`` of within-chunk cumulative sums, so:

- **Signed gates** use the running-sign identity (``docs/signed_chunking.md``, :mod:`.gates`): fla gets
  ``g = log|a|`` and ``v = P dt x``; we return ``y = P o + D x`` and the final state times each sequence's last
  ``P``. ``P`` restarts at every ``cu_seqlens`` boundary.
- **Gates at or near 0**: ``log 0 = -inf`` would make ``-inf - (-inf)`` NaN inside fla, so ``log|a|`` is floored at
  :data:`LOG_FLOOR` (``|a| >= e^-30 ~ 9e-14``). The forward error is at most ``9e-14`` times the carried state,
  far below fp16/bf16 rounding. Unsigned, the gate's gradient is 0 below the floor (its true value is below
  ``9e-14`` times the state's); signed, it is exact (below). Gates of exactly 1 (``dt = 0``) and -1 need nothing.
- **Gate gradients, signed**: fla returns ``dL/dlog|a_t|`` from a reverse cumulative sum of differences, so its
  error is absolute (roundoff of the gradient's scale) where the true value is proportional to ``a_t``; the chain
  rule's ``d log|a| / da = 1/a`` would amplify it by ``1/|a_t|`` (measured under the interpreter in fp32: 0.16 (dt)
  and 0.25 (A) relative RMSE with a quarter of the gates at ``|a| = 1e-6``). So fla gets ``log|a|`` detached, and
  the gate's gradient comes from :mod:`.gate_grad`, which forms ``dL/d|a_t| = <dL/dh_t, h_{t-1}>`` with no
  division: exact at every gate, including the true gradient at ``a = 0``. Cost: one more ``[C, C]`` matmul per
  chunk and a loop over chunks, in PyTorch, in the backward of the signed gate only. The unsigned gate passes
  ``g = dt A`` directly and has no such amplification.
- **Layout**: fla's state is ``[N, H, K, V] = [n, H, N, P]``; ours is ``[n, H, P, N]``, so states are transposed
  on the way in and out (a copy of the state only).

Dtypes: ``x, B, C`` are promoted to one dtype, which fla computes in (bf16 or fp16 for speed; fp32 runs too, with
fla's own fp32 matmul precision). ``g`` is fp32; ``dt``, ``A``, ``D`` and the state may be any float dtype. The
output is in ``x.dtype``, the final state fp32.
"""

from __future__ import annotations

import torch

from .gate_grad import gate_grad
from .gates import gate, heads_of_groups, log_abs_and_sign, log_abs_gate, running_sign

LOG_FLOOR = -30.0


def ssd_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    A: torch.Tensor,
    D: torch.Tensor | None = None,
    negative_eigvals: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SSD through fla's ``chunk_simple_gla``; same contract as :func:`lrnn_lm.kernels.ssd.naive.ssd_naive`.

    Shapes: ``x: [batch, T, H, P]``, ``dt: [batch, T, H]``, ``A: [H]``, ``B, C: [batch, T, G, N]``, ``D: [H]`` or
    ``[H, P]``; ``initial_state`` and the returned state ``[n, H, P, N]`` fp32 (``n = batch``, or the number of
    packed sequences with ``cu_seqlens``, which requires ``batch == 1``).
    Returns ``(y [batch, T, H, P] in x.dtype, final_state or None)``.
    """
    from fla.ops.simple_gla import chunk_simple_gla

    batch, T, H, P = x.shape
    N = B.shape[-1]
    n_seq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
    if T == 0:
        state = initial_state.float() if initial_state is not None else x.new_zeros(n_seq, H, P, N, dtype=torch.float32)
        return x.new_zeros(batch, 0, H, P), (state if output_final_state else None)

    cu = cu_seqlens.long() if cu_seqlens is not None else None
    dtype = torch.promote_types(torch.promote_types(x.dtype, B.dtype), C.dtype)
    dtf = dt.float()
    if negative_eigvals:
        a = gate(dtf, A.float(), True)  # the gate's gradient flows from here, through _GateGradient
        log_a, step_sign = log_abs_and_sign(a.detach())
        sign = running_sign(step_sign, cu)
        dtf = dtf * sign
    else:
        log_a, sign = log_abs_gate(dtf, A.float(), False)
    v = (dtf[..., None] * x.float()).to(dtype)
    q, k = (heads_of_groups(t, H).to(dtype) for t in (C, B))
    h0 = initial_state.float().transpose(-1, -2).contiguous() if initial_state is not None else None
    o, state = chunk_simple_gla(
        q,
        k,
        v,
        g=log_a.clamp_min(LOG_FLOOR),
        scale=1.0,
        initial_state=h0,
        output_final_state=output_final_state,
        cu_seqlens=cu,
    )
    if output_final_state:
        state = state.float().transpose(-1, -2)
    if negative_eigvals and torch.is_grad_enabled() and a.requires_grad:
        h0_ours = initial_state.float() if initial_state is not None else None
        o, state = _GateGradient.apply(o, state, a, step_sign, log_a, q, k, v, h0_ours, cu)
    y = o.float()
    skip = None if D is None else (D.float() if D.dim() == 2 else D.float()[:, None]) * x.float()
    if sign is not None:  # one fused multiply-add with the skip term
        y = y * sign[..., None] if skip is None else torch.addcmul(skip, y, sign[..., None])
    elif skip is not None:
        y = y + skip
    if output_final_state:
        if sign is not None:
            state = state * _last_sign(sign, cu)[:, :, None, None]
    return y.to(x.dtype), (state if output_final_state else None)


def _last_sign(sign: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """The running sign at each sequence's last token, ``[n, H]`` (1 for an empty sequence)."""
    if cu_seqlens is None:
        return sign[:, -1]
    ends = cu_seqlens[1:].to(sign.device)
    last = sign[0, (ends - 1).clamp_min(0)]
    return torch.where((ends > cu_seqlens[:-1].to(sign.device))[:, None], last, torch.ones_like(last))


class _GateGradient(torch.autograd.Function):
    """Identity on fla's ``(o, final_state)`` that gives the signed gate ``a`` its exact gradient
    (:func:`.gate_grad.gate_grad`) from theirs: ``dL/da_t = s_t dL/d|a_t|`` with ``s_t`` the gate's sign."""

    @staticmethod
    def forward(ctx, o, state, a, step_sign, log_a, q, k, v, h0, cu):
        ctx.save_for_backward(step_sign, log_a, q, k, v, h0, cu)
        ctx.has_state = state is not None
        return o.view_as(o), (state.view_as(state) if state is not None else None)

    @staticmethod
    def backward(ctx, d_o, d_state):
        step_sign, log_a, q, k, v, h0, cu = ctx.saved_tensors
        d_final = d_state if ctx.has_state else None
        grad = gate_grad(log_a, q, k, v, d_o, h0, d_final, cu)
        return d_o, d_state, step_sign * grad, None, None, None, None, None, None, None
