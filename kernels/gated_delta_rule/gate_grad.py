"""The exact gradient of the gated delta rule with respect to its scalar gates, for a log-space kernel.

fla's ``chunk_gated_delta_rule`` returns ``dL/dlog alpha_t = alpha_t dL/dalpha_t`` from in-chunk sums whose terms
cancel, so its error is absolute, and the chain rule's ``1/alpha_t`` turns it into a relative error of about
``4e-7 / |alpha_t|`` in fp32 (0.5 at ``|alpha| = 1e-6``). A signed gate passes through 0, so this module forms
``dL/dalpha_t`` with no division, for ``S_t = alpha_t M_t S_{t-1} + beta_t k_t v_t^T``, ``M_t = I - beta_t k_t k_t^T``,
``o_t = scale S_t^T q_t`` (``S: [K, V]``):

``dL/dalpha_t = <dL/dS_t, M_t S_{t-1}>``.

The gates are scalars, so they commute with the ``M``'s: the path from an input at step ``s`` (or from the state
entering) to a read at step ``r >= t`` carries ``prod_{s < j <= r} alpha_j`` times the ungated product
``Phi(r, s) = M_r ... M_{s+1}``. Differentiating the product leaves ``alpha_t`` out of it, so the gradient is a sum
over pairs ``s < t <= r``, weighted by the gates on either side of ``t`` (the form of ``kernels/ssd/gate_grad.py``,
with the ungated delta rule's scores in place of SSD's ``C_r . B_s``). In a chunk of ``C`` tokens, with the ungated
WY factors ``T = (I + diag(beta) strict_tril(K K^T))^{-1} diag(beta)`` and ``W = T K``:

- ``q_r^T Phi(r, s) beta_s k_s = (tril(Q K^T) T)[r, s]`` (a read of an input inside the chunk),
- ``q_r^T Phi(r, start) = (Q - tril(Q K^T) W)[r]`` (a read of the state entering the chunk),
- ``Phi(end, s) beta_s k_s = sum_i k_i T[i, s]`` and ``Phi(end, start) = I - K^T W`` (carried to the chunk's end).

The four terms (input or entering state, read inside or carried out) then have the shapes of SSD's, and the states
entering each chunk and the gradients of the states leaving it come from a loop over chunks. Every decay is a
product of gates (no logarithms, no division), so gates of exactly 0 get their true gradient. Cost: a few
``[C, C]`` and ``[C, K]`` products per chunk and the loop over chunks, in PyTorch, in the backward only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..varlen import as_padded_batch
from .chunk import _decay_matrix

CHUNK = 64


def gate_grad(
    alpha: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    do: torch.Tensor,
    initial_state: torch.Tensor | None,
    dfinal: torch.Tensor | None,
    *,
    scale: float,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """``dL/dalpha_t`` for the gated delta rule, given ``do = dL/do`` and ``dfinal = dL/dS_T`` (None for 0).

    Shapes: ``alpha, beta: [b, T, H]`` (any sign, 0 included), ``q, k: [b, T, H, K]``, ``v, do: [b, T, H, V]``;
    ``initial_state`` and ``dfinal`` ``[n, H, K, V]``, with ``n = b`` or the number of packed sequences of
    ``cu_seqlens`` (then ``b == 1``). Returns ``[b, T, H]`` in fp32.
    """
    if cu_seqlens is None:
        return _padded(alpha, q, k, v, beta, do, initial_state, dfinal, scale)
    # Packed sequences: one row each, padded at the end with identity steps (alpha 1, beta 0, no input or output),
    # which change neither a sequence's states nor its gradients.
    unpack, scatter = as_padded_batch(cu_seqlens)
    rows = (unpack(t) for t in (q, k, v, beta, do))
    return scatter(_padded(unpack(alpha, 1.0), *rows, initial_state, dfinal, scale))


def _padded(alpha, q, k, v, beta, do, h0, dfinal, scale):
    b, T, H, K = k.shape
    V = v.shape[-1]
    if T == 0:
        return alpha.new_zeros(b, 0, H, dtype=torch.float32)
    C = min(CHUNK, T)
    n = -(-T // C)
    pad = n * C - T

    def chunks(t: torch.Tensor, fill: float = 0.0) -> torch.Tensor:  # [b, T, H, ...] -> [b, H, n, C, ...]
        t = t.float()
        t = F.pad(t, (0, 0) * (t.dim() - 3) + (0, 0, 0, pad), value=fill) if pad else t
        t = t.view(b, n, C, H, *t.shape[3:])
        return t.permute(0, 3, 1, 2, *range(4, t.dim()))

    a = chunks(alpha, 1.0)  # padded steps: alpha 1 and beta 0, the identity
    qc, kc, vc, bc, dc = chunks(q), chunks(k), chunks(v), chunks(beta), chunks(do)

    D = _decay_matrix(a)  # D[r, s] = prod_{s < j <= r} alpha_j for s <= r, else 0; [b, H, n, C, C]
    E = F.pad(D, (0, 0, 1, 0))[..., :-1, :]  # E[t, s] = D[t-1, s] (row 0: nothing before the first token)
    ones = torch.ones_like(a[..., :1])
    upto = a.cumprod(-1)  # prod_{j <= t} alpha_j within the chunk; the last entry is the whole chunk's gate
    before = torch.cat([ones, a[..., :-1]], -1).cumprod(-1)  # prod_{j < t}
    after = torch.cat([a[..., 1:], ones], -1).flip(-1).cumprod(-1).flip(-1)  # prod_{j > t}

    # Ungated WY factors: T = (I + diag(beta) strict_tril(K K^T))^{-1} diag(beta), W = T K.
    eye = torch.eye(C, device=a.device, dtype=a.dtype)
    lower = bc[..., None] * (kc @ kc.transpose(-1, -2)).tril(-1)
    Tm = torch.linalg.solve_triangular(lower + eye, eye * bc[..., None, :], upper=False, unitriangular=True)
    W = Tm @ kc  # [b, H, n, C, K]
    qk = (qc @ kc.transpose(-1, -2)).tril()
    scores = qk @ Tm  # q_r^T Phi(r, s) beta_s k_s
    q_in = qc - qk @ W  # rows q_r^T Phi(r, start)

    # States entering each chunk, and gradients of the states leaving each chunk ([b, H, n, K, V] fp32).
    local = kc.transpose(-1, -2) @ (Tm @ (vc * D[..., -1, :, None]))  # a chunk's own inputs at its end
    reads = scale * q_in.transpose(-1, -2) @ (dc * upto[..., None])  # dL/d(entering state) from the chunk's reads
    gate = upto[..., -1, None, None]  # [b, H, n, 1, 1]
    S = v.new_zeros(b, H, K, V, dtype=torch.float32) if h0 is None else h0.float()
    dS = v.new_zeros(b, H, K, V, dtype=torch.float32) if dfinal is None else dfinal.float()
    S_in, dS_out = [], [None] * n
    for c in range(n):
        S_in.append(S)
        S = gate[:, :, c] * (S - kc[:, :, c].transpose(-1, -2) @ (W[:, :, c] @ S)) + local[:, :, c]
    for c in reversed(range(n)):
        dS_out[c] = dS
        dS = gate[:, :, c] * (dS - W[:, :, c].transpose(-1, -2) @ (kc[:, :, c] @ dS)) + reads[:, :, c]
    S_in, dS_out = torch.stack(S_in, 2), torch.stack(dS_out, 2)

    M = scale * scores * (dc @ vc.transpose(-1, -2))  # [r, s]: an input at s read at r
    inside = ((D.transpose(-1, -2) @ M) * E).sum(-1)
    read_carried = scale * ((q_in @ S_in) * dc).sum(-1)  # the entering state read at r
    carried_in = before * (D.transpose(-1, -2) @ read_carried[..., None])[..., 0]
    k_dS = kc @ dS_out  # [b, H, n, C, V]
    write_carried = ((Tm.transpose(-1, -2) @ k_dS) * vc).sum(-1)  # the input at s carried to the chunk's end
    carried_out = after * (E @ write_carried[..., None])[..., 0]
    through = (dS_out * S_in).sum((-1, -2)) - (k_dS * (W @ S_in)).sum((-1, -2))  # <dS, (I - K^T W) S>
    grad = inside + carried_in + carried_out + before * after * through[..., None]  # [b, H, n, C]
    return grad.permute(0, 2, 3, 1).reshape(b, n * C, H)[:, :T]
