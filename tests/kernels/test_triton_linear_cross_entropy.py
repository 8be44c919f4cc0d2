"""fla's fused linear cross entropy (the CUDA path of lrnn_lm/linear_cross_entropy.py) against the plain head,
under the Triton interpreter: loss and both gradients, with label smoothing and ignored labels.

fp32 only (the interpreter computes bf16 on raw bit patterns, see test_triton_delta_rule.py); tolerance 1e-5
relative RMSE, the same math summed in another order.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm.kernels.testing import assert_close

from .triton_interpreter import interpreter_only_marks

pytestmark = interpreter_only_marks(fla_shims=True)
pytest.importorskip("fla", reason="flash-linear-attention (fla) is not installed")


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_fla_path_equals_the_plain_head(eps):
    from lrnn_lm.linear_cross_entropy import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    N, d, V = 24, 16, 40
    hidden = torch.randn(N, d, generator=g).requires_grad_()
    weight = (torch.randn(V, d, generator=g) * d**-0.5).requires_grad_()
    target = torch.randint(0, V, (N,), generator=g)
    target[[2, 7]] = -100
    loss = linear_cross_entropy(hidden, weight, target, eps, use_fla=True)
    ours = (loss, *torch.autograd.grad(loss * 1.7, (hidden, weight)))
    ref_loss = F.cross_entropy(hidden @ weight.T, target, label_smoothing=eps)
    ref = (ref_loss, *torch.autograd.grad(ref_loss * 1.7, (hidden, weight)))
    for name, a, b in zip(("loss", "d hidden", "d weight"), ours, ref, strict=True):
        assert_close(a, b, 1e-5, name)
