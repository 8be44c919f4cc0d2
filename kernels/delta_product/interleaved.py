"""DeltaProduct as a (gated) delta rule over the interleaved sequence of length ``T * n_h``.

Sub-step ``t * n_h + j`` carries ``k[:, t, j], v[:, t, j], beta[:, t, j]``. The token's gate sits on its first
sub-step (1 on the others), and its output is read on its last sub-step, where ``q`` is placed (zeros elsewhere,
whose outputs are dropped). Packed sequences keep their boundaries with ``cu_seqlens * n_h``. See
``docs/signed_chunking.md``. The chunk and triton backends differ only in the backend they pass on.
"""

from __future__ import annotations

import torch

from ..delta_rule import delta_rule
from ..gated_delta_rule import gated_delta_rule


def delta_product_chunk(q, k, v, beta, alpha=None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract and shapes as :func:`delta_product_naive` (plus ``cu_seqlens``), on the chunk backends."""
    return _interleaved(q, k, v, beta, alpha, backend="chunk", **kwargs)


def delta_product_triton(q, k, v, beta, alpha=None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract and shapes as :func:`delta_product_naive` (plus ``cu_seqlens``), on the Triton backends
    (fla's kernels; signed gates through the running-sign wrapper of ``gated_delta_rule``)."""
    return _interleaved(q, k, v, beta, alpha, backend="triton", **kwargs)


def _interleaved(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    alpha: torch.Tensor | None,
    *,
    backend: str,
    scale: float | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    batch, T, n_h, H, K = k.shape
    scale = K**-0.5 if scale is None else scale
    # [b, T, n_h, H, D] -> [b, T * n_h, H, D]: token-major, so each token's n_h sub-steps are consecutive.
    k_s, v_s, beta_s = (t.reshape(batch, T * n_h, *t.shape[3:]) for t in (k, v, beta))
    # q only on each token's last sub-step; the outputs of the other sub-steps are zero and dropped.
    q_s = torch.cat([q.new_zeros(batch, T, n_h - 1, H, K), q[:, :, None]], dim=2).reshape(batch, T * n_h, H, K)
    # The zero q rows of the filler sub-steps stay zero under the op's l2norm (0 * rsqrt(0 + eps)).
    kw = dict(
        scale=scale,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        initial_state=initial_state,
        output_final_state=output_final_state,
        backend=backend,
    )
    if cu_seqlens is not None:
        kw["cu_seqlens"] = cu_seqlens * n_h
    if alpha is None:
        o_s, state = delta_rule(q_s, k_s, v_s, beta_s, **kw)
    else:
        # The gate multiplies the state carried in from the previous token: the first sub-step's gate.
        alpha_s = torch.cat([alpha[:, :, None], alpha.new_ones(batch, T, n_h - 1, H)], dim=2)
        o_s, state = gated_delta_rule(q_s, k_s, v_s, beta_s, alpha_s.reshape(batch, T * n_h, H), **kw)
    o = o_s.reshape(batch, T, n_h, *o_s.shape[2:])[:, :, -1]
    return o, state
