"""benchmarks/memory.py measures the GPU code path on CPU with every Triton launch made a no-op
(``lrnn_lm.analysis.activation_memory.cuda_code_path``). Its claim: the Triton backends then save exactly what they
save with the kernels running. Checked here under the interpreter, op by op, with fla's kernels and ours: the saved
bytes with real kernels equal those with no-op kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm.analysis import activation_memory as memory

from .triton_interpreter import interpreter_only_marks

pytestmark = interpreter_only_marks(fla_shims=True)
pytest.importorskip("fla", reason="flash-linear-attention (fla) is not installed")


def _leaf(*shape, dtype=torch.float16, scale=1.0, positive=False, unit=False):
    t = torch.randn(*shape)
    t = t.abs() + 0.1 if positive else t
    t = F.normalize(t, dim=-1) if unit else t
    return (t * scale).to(dtype).requires_grad_()


def _ops():
    from lrnn_lm.kernels import delta_product, delta_rule, gated_delta_rule, selective_scan, ssd

    B, T, H, K = 1, 40, 2, 16
    beta = lambda *s: (2 * torch.rand(*s)).half().requires_grad_()  # noqa: E731
    alpha = lambda *s: (torch.rand(*s) * 0.5 + 0.5).requires_grad_()  # noqa: E731
    return {
        "delta_rule": lambda: delta_rule(
            _leaf(B, T, H, K), _leaf(B, T, H, K, unit=True), _leaf(B, T, H, K), beta(B, T, H), backend="triton"
        ),
        "gated_delta_rule": lambda: gated_delta_rule(
            _leaf(B, T, H, K),
            _leaf(B, T, H, K, unit=True),
            _leaf(B, T, H, 2 * K),
            beta(B, T, H),
            alpha(B, T, H),
            backend="triton",
        ),
        "delta_product": lambda: delta_product(
            _leaf(B, T, H, K),
            _leaf(B, T, 2, H, K, unit=True),
            _leaf(B, T, 2, H, K),
            beta(B, T, 2, H),
            alpha(B, T, H),
            backend="triton",
        ),
        "selective_scan": lambda: selective_scan(
            _leaf(B, T, 32, dtype=torch.float32),
            _leaf(B, T, 32, dtype=torch.float32, positive=True, scale=0.1),
            -torch.rand(32, 4) - 0.5,
            _leaf(B, T, 4, dtype=torch.float32),
            _leaf(B, T, 4, dtype=torch.float32),
            torch.ones(32, requires_grad=True),
            _leaf(B, T, 32, dtype=torch.float32),
            negative_eigvals=True,
            backend="triton",
        ),
        "ssd": lambda: ssd(
            _leaf(B, T, H, K),
            _leaf(B, T, H, dtype=torch.float32, positive=True, scale=0.1),
            -torch.rand(H) - 0.5,
            _leaf(B, T, 1, 16),
            _leaf(B, T, 1, 16),
            torch.ones(H, requires_grad=True),
            negative_eigvals=True,
            backend="triton",
        ),
    }


@pytest.mark.parametrize("op", ["delta_rule", "gated_delta_rule", "delta_product", "selective_scan", "ssd"])
def test_no_op_kernels_save_what_the_real_kernels_save(op):
    run = _ops()[op]
    torch.manual_seed(0)
    real = memory.saved_bytes(run)
    torch.manual_seed(0)
    with memory.cuda_code_path():
        stand_in = memory.saved_bytes(run)
    assert real > 0
    assert stand_in == real, (stand_in, real)


def _modules():
    from lrnn_lm.layers.conv import ShortConv
    from lrnn_lm.layers.mlp import SwiGLU
    from lrnn_lm.layers.norm import GatedGroupRMSNorm, RMSNorm
    from lrnn_lm.linear_cross_entropy import linear_cross_entropy

    x = lambda *s: torch.randn(*s, requires_grad=True)  # noqa: E731
    norm, conv, mlp = RMSNorm(24), ShortConv(24, 4), SwiGLU(24, 40)
    weight = torch.randn(50, 24, requires_grad=True)
    return {
        "rms_norm": lambda: norm(x(1, 40, 24)),
        "rms_norm_gated": lambda: norm(x(1, 40, 24), x(1, 40, 24)),
        "gated_group_rms_norm": lambda: GatedGroupRMSNorm(24, groups=2)(x(1, 40, 24), x(1, 40, 24)),
        "short_conv": lambda: conv(x(1, 40, 24)),
        "swiglu": lambda: mlp(x(1, 40, 24)),
        "linear_cross_entropy": lambda: linear_cross_entropy(x(40, 24), weight, torch.randint(0, 50, (40,))),
    }


NAMES = ["rms_norm", "rms_norm_gated", "gated_group_rms_norm", "short_conv", "swiglu", "linear_cross_entropy"]


@pytest.mark.parametrize("name", NAMES)
def test_no_op_kernels_save_what_the_real_fused_modules_save(name, monkeypatch):
    from lrnn_lm.layers import fused

    monkeypatch.setattr(fused, "use_fla", lambda x: True)
    torch.manual_seed(0)
    real = memory.saved_bytes(_modules()[name])
    torch.manual_seed(0)
    with memory.cuda_code_path():
        stand_in = memory.saved_bytes(_modules()[name])
    assert real > 0
    assert stand_in == real, (stand_in, real)
