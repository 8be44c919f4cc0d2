"""Delta rule on Triton through flash-linear-attention (fla): a thin wrapper, no kernels of our own.

fla's delta-rule kernels accept any ``beta``, so ``beta`` in (0, 2] (the signed variant) needs no change.
Our API and fla's agree on layout and conventions, which this module only checks and forwards:

- batch-first ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``, ``beta: [B, T, H]`` (fla removed ``head_first``);
- ``scale`` defaults to ``K ** -0.5`` in both; we pass it explicitly;
- states ``[N, H, K, V]`` (K before V), fp32 final state; ``N`` = batch, or the number of packed sequences;
- ``cu_seqlens``: ``[N + 1]`` offsets with ``B == 1`` (passed as int64);
- ``use_qk_l2norm_in_kernel`` is passed on: fla's kernel normalises q and k and keeps only the normalised
  half-precision tensors and a per-row ``rstd`` for the backward.

Which fla op runs:

- ``chunk_delta_rule`` for bf16 and fp16 inputs with ``T > 1``: training and prefill;
- ``fused_recurrent_delta_rule`` for a single-token step (``T == 1``), i.e. a decode step with a cache.
  Both compute the same recurrence; this is the standard decode path, not a speed switch on length.
- fp32 inputs: fla's chunk op refuses fp32 ("does not support float32"). Rather than silently rounding to
  bf16, fp32 inputs run ``fused_recurrent_delta_rule`` in fp32 at every ``T``: exact, but sequential in time
  and so much slower than the chunk path for training. Use bf16 or fp16 for speed.

Accepted dtypes: ``q, k, v`` in bf16, fp16 or fp32 (promoted to one common dtype first; any fp32 makes the
call fp32); ``beta`` and ``initial_state`` in any float dtype (the state is used in fp32).
Output ``o`` is in ``v.dtype``; gradients come back in each input's dtype.
"""

from __future__ import annotations

import torch

_HALF = (torch.bfloat16, torch.float16)


def delta_rule_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DeltaNet recurrence through fla's Triton kernels; same contract as :func:`delta_rule_naive`.

    Shapes: ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``, ``beta: [B, T, H]`` in (0, 2],
    ``initial_state`` and the returned state: ``[N, H, K, V]`` fp32 (``N = B``, or the number of packed
    sequences with ``cu_seqlens``, which requires ``B == 1``). ``K <= 256``.
    Returns ``(o [B, T, H, V] in v.dtype, final_state fp32 or None)``. See the module docstring for which
    fla op runs for which dtype and length.
    """
    from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule

    batch, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else float(scale)
    n_seq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
    h0 = initial_state.float() if initial_state is not None else None
    if T == 0:  # nothing to normalise: no token reads q or k
        state = h0 if h0 is not None else q.new_zeros((n_seq, H, K, V), dtype=torch.float32)
        return v.new_zeros((batch, 0, H, V)), (state if output_final_state else None)

    out_dtype = v.dtype
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    cu = cu_seqlens.long() if cu_seqlens is not None else None
    if T > 1 and dtype in _HALF:
        fn = chunk_delta_rule
    else:
        # T == 1 is a decode step; fp32 takes this path at every T because fla's chunk op refuses fp32.
        fn = fused_recurrent_delta_rule
    o, state = fn(
        q,
        k,
        v,
        beta,
        scale=scale,
        initial_state=h0,
        output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        cu_seqlens=cu,
    )
    return o.to(out_dtype), (state if output_final_state else None)
