"""Chunk backend of the delta rule against the naive token loop (the specification)."""

import pytest
import torch

from lrnn_lm.kernels import delta_rule

from .inputs import check_packing, compare, delta_inputs, outputs_and_grads

POS = ("q", "k", "v", "beta")
TOL = 1e-5  # fp32 chunk vs fp32 naive: measured errors are ~1e-6 or below


def run(inputs, backend, **kw):
    return outputs_and_grads(delta_rule, inputs, POS, backend=backend, **kw)


@pytest.mark.parametrize("beta_max", [1.0, 2.0])
@pytest.mark.parametrize("T", [1, 63, 100])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_naive(T, beta_max, with_state):
    inputs = delta_inputs(2, T, 3, 9, 11, beta_max=beta_max, with_state=with_state)
    compare(run(inputs, "chunk"), run(inputs, "naive"), TOL)


@pytest.mark.parametrize("beta_max", [1.0, 2.0])
def test_chunk_matches_naive_long(beta_max):
    inputs = delta_inputs(2, 1000, 2, 7, 5, beta_max=beta_max)
    compare(run(inputs, "chunk"), run(inputs, "naive"), TOL)


@pytest.mark.parametrize("beta_max,beta", [(2.0, "exact_max"), (1.0, "exact_max"), (2.0, "exact_zero")])
def test_edge_betas(beta_max, beta):
    """beta = 2 makes every step a reflection (eigenvalue exactly -1); beta = 0 the identity."""
    inputs = delta_inputs(2, 100, 3, 9, 11, beta_max=beta_max, beta=beta)
    got, ref = run(inputs, "chunk"), run(inputs, "naive")
    for name, t in got.items():
        assert torch.isfinite(t).all(), name
    compare(got, ref, TOL)


def test_beta_two_is_a_reflection():
    """With beta = 2 and unit k, one step maps S to (I - 2 k k^T) S + 2 k v^T: a Householder reflection."""
    inputs = delta_inputs(1, 1, 1, 4, 3, beta_max=2.0, beta="exact_max")
    k, v, S0 = inputs["k"][0, 0, 0], inputs["v"][0, 0, 0], inputs["initial_state"][0, 0]
    _, S1 = delta_rule(*[inputs[n] for n in POS], initial_state=inputs["initial_state"], output_final_state=True)
    H = torch.eye(4) - 2 * torch.outer(k, k)
    torch.testing.assert_close(S1[0, 0], H @ S0 + 2 * torch.outer(k, v))


def test_custom_scale():
    inputs = delta_inputs(2, 20, 3, 9, 11)
    compare(run(inputs, "chunk", scale=0.3), run(inputs, "naive", scale=0.3), TOL)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
@pytest.mark.parametrize("with_state", [False, True])
def test_cu_seqlens_equals_separate_calls(backend, with_state):
    per_seq = [
        delta_inputs(1, n, 3, 9, 11, beta_max=2.0, seed=i, with_state=with_state) for i, n in enumerate([17, 1, 70, 5])
    ]
    check_packing(delta_rule, per_seq, POS, shared=(), backend=backend)


def test_half_precision_inputs_keep_fp32_state():
    inputs = delta_inputs(2, 33, 3, 9, 11, dtype=torch.bfloat16)
    o, S = delta_rule(*[inputs[n] for n in POS], initial_state=inputs["initial_state"], output_final_state=True)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
