"""DeltaProduct mixer (Siems et al., 2025), the layer of fla's ``GatedDeltaProduct``: Gated DeltaNet with
``num_householder`` (n_h) keys, values and betas per token, i.e. n_h generalized Householder steps per token.

Transition per head and token: ``alpha_t H_{t,n_h-1} ... H_{t,0}`` with ``H_{t,j} = I - beta_{t,j} k_{t,j}
k_{t,j}^T``; the gate (``use_forget_gate``, on by default as in fla) is the one of
:mod:`~lrnn_lm.layers.gated_deltanet`, applied once per token before the first step. ``eigval_range="[-1,1]"``
gives every ``beta`` in (0, 2): each step is then a reflection-like map, and their products reach rotations (a
3-cycle of S3 in one token with n_h = 2), which one Householder per token cannot. ``negative_gate`` maps the
gate to ``2 decay - 1`` as in Gated DeltaNet (``[-1,1]`` only; needs the gate).

Spectrum: every ``H_{t,j}`` is the identity off ``span(k_{t,0..n_h-1})`` and maps that span into itself, so
the transition has ``head_dim - n_h`` eigenvalues ``alpha_t`` and n_h more: ``alpha_t`` times the eigenvalues
of the product restricted to the span. They can be complex (a rotation); :meth:`transition_eigenvalues`
reports their real parts. See :func:`householder_product_eigenvalues`.

What ``"[0,1]"`` guarantees here: every factor has eigenvalues in [0, 1], and the product's lie in the unit disk.
With n_h <= 2 they are also real and in [0, 1] (a product of two PSD contractions). With n_h >= 3 complex pairs
with a negative real part occur even in ``"[0,1]"`` (over 200k random draws in head_dim 4: minimum real part
-0.05 for n_h = 3, -0.12 for n_h = 4), so a ``[0,1]`` spectrum with n_h >= 3 is not sign-free.
"""

from __future__ import annotations

import torch

from ..kernels import delta_product
from .base import boolean, positive_int
from .gated_deltanet import GatedDeltaNetMixer
from .registry import register_mixer


def householder_product_eigenvalues(k: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of ``H_{n-1} ... H_0`` (``H_j = I - beta_j k_j k_j^T``) on ``span(k_0 .. k_{n-1})``.

    Args:
        k: ``[..., n, K]`` unit keys; beta: ``[..., n]``.

    Returns ``[..., n]`` complex128. In the basis of the keys, ``H_j [k_0 .. k_{n-1}] = [k_0 .. k_{n-1}] M_j``
    with ``M_j = I - beta_j e_j G_j`` (``G`` the Gram matrix of the keys, ``G_j`` its row j), so the product is
    represented by ``M_{n-1} ... M_0`` (n x n). If the keys are linearly dependent, ``M`` is the identity on the
    null space of ``G``, so the surplus eigenvalues are 1, exactly the eigenvalue of the product off the span:
    the full spectrum is always these n values and ``K - n`` ones.
    """
    kd = k.double()
    gram = kd @ kd.transpose(-1, -2)
    # Unit keys by construction: exact ones on the diagonal keep 1 - beta exact (as DeltaNet's spectrum does).
    gram.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    n = k.shape[-2]
    if n == 2:
        return _two_step_eigenvalues(gram[..., 0, 1], beta.double())
    eye = torch.eye(n, dtype=torch.float64, device=k.device)
    product = eye.expand(gram.shape).clone()
    for j in range(n):
        step = eye.expand(gram.shape).clone()
        step[..., j, :] -= beta[..., j, None].double() * gram[..., j, :]
        product = step @ product
    return torch.linalg.eigvals(product)


def _two_step_eigenvalues(c: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The n = 2 case in closed form: ``M = M_1 M_0`` has ``det = (1 - b_0)(1 - b_1)`` and
    ``trace = 2 - b_0 - b_1 + b_0 b_1 c^2`` (``c = k_0 . k_1``). A general eigensolver leaves rounding noise
    (-1e-17 for a true 0 of a saturated ``beta = 1``) that would show a ``[0,1]`` model negative values it does
    not have; here the small root is ``det / big root``, which keeps the sign of ``det`` exactly."""
    b0, b1 = beta[..., 0], beta[..., 1]
    det = (1 - b0) * (1 - b1)
    trace = 2 - b0 - b1 + b0 * b1 * c * c
    disc = trace * trace - 4 * det
    root = disc.abs().sqrt()
    real = disc >= 0
    # Real pair: the larger-magnitude root without cancellation, the other from the determinant.
    big = (trace + torch.where(trace >= 0, root, -root)) / 2
    small = torch.where(big != 0, det / torch.where(big != 0, big, 1.0), torch.zeros_like(big))
    re = torch.stack([torch.where(real, big, trace / 2), torch.where(real, small, trace / 2)], dim=-1)
    im = torch.stack([torch.where(real, 0.0, root / 2), torch.where(real, 0.0, -root / 2)], dim=-1)
    return torch.complex(re, im)


@register_mixer("deltaproduct")
class DeltaProductMixer(GatedDeltaNetMixer):
    """DeltaProduct: n_h gated generalized Householder steps per token (fla's ``GatedDeltaProduct``).

    Own fields: ``num_householder`` (n_h, default 2 as in fla) and ``use_forget_gate`` (the gate ``alpha``;
    default True as in fla). Everything else is Gated DeltaNet's (see there). With ``num_householder=1`` and the
    same weights it computes exactly what ``gated_deltanet`` does.
    """

    config_fields = {**GatedDeltaNetMixer.config_fields, "num_householder": 2, "use_forget_gate": True}
    eigenvalues_are = (
        "real parts of alpha_t times the n_h eigenvalues of the product of the token's n_h Householder steps on "
        "span(k_t1..k_tn_h) (complex pairs, i.e. rotations, give their real part), n_h per head and token; the "
        "other head_dim - n_h eigenvalues are alpha_t itself (1 without the forget gate) and are not counted"
    )

    @classmethod
    def validate_config(cls, config, fail, in_use: bool) -> None:
        super().validate_config(config, fail, in_use)
        positive_int(config, "num_householder", fail)
        boolean(config, "use_forget_gate", fail)
        if in_use and config.negative_gate and not config.use_forget_gate:
            fail("negative_gate", "needs the gate: set use_forget_gate=True")

    @classmethod
    def num_householder_of(cls, config) -> int:
        return config.num_householder

    @classmethod
    def has_gate(cls, config) -> bool:
        return config.use_forget_gate

    def transition_eigenvalues(self, hidden, mask, cu_seqlens) -> torch.Tensor:
        """``[batch, T, H, n_h]`` fp32: real parts of the eigenvalues on the span of the token's keys."""
        _, k, _, beta, alpha, _ = self.project(hidden, mask, None, cu_seqlens)
        values = householder_product_eigenvalues(k.transpose(2, 3), beta.transpose(2, 3)).real.float()
        return values if alpha is None else alpha[..., None] * values

    def run_kernel(self, q, k, v, beta, alpha, state, output_final_state: bool, cu_seqlens):
        return delta_product(
            q,
            k,
            v,
            beta,
            alpha,
            use_qk_l2norm_in_kernel=True,
            initial_state=state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
            backend=self.config.kernel_backend,
        )
