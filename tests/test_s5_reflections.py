"""The S5 reflection analysis: exact root-system keys score 0, perturbed ones do not; it runs on a model."""

from __future__ import annotations

import math

import pytest
import torch

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.analysis.s5_reflections import key_angle_error, reflection_report
from lrnn_lm.tasks.groups import symmetric_task


def exact_keys() -> tuple[torch.Tensor, list]:
    """``(e_i - e_j) / sqrt(2)`` for every transposition, in an orthonormal basis of the sum-zero plane of R^5."""
    task = symmetric_task(5, generators="swaps")
    perms = [task.group.elements[g] for g in task.generator_ids]
    basis = torch.linalg.qr(torch.eye(5, dtype=torch.float64) - 1 / 5)[0][:, :4]  # spans the sum-zero vectors
    keys = []
    for perm in perms:
        i, j = (n for n, p in enumerate(perm) if p != n)
        keys.append((torch.eye(5, dtype=torch.float64)[i] - torch.eye(5, dtype=torch.float64)[j]) / math.sqrt(2))
    return torch.stack(keys) @ basis, perms


def test_exact_reflection_keys_score_zero_and_a_tilt_is_measured():
    keys, perms = exact_keys()
    assert len(perms) == 10 and keys.shape == (10, 4)
    assert key_angle_error(keys, perms) < 1e-12
    tilted = keys.clone()
    tilted[0] = torch.nn.functional.normalize(tilted[0] + 0.1 * tilted[1], dim=0)
    assert 0.01 < key_angle_error(tilted, perms) < 0.2


def test_report_on_a_model_and_refusal_with_a_short_conv():
    torch.manual_seed(0)
    common = dict(vocab_size=122, hidden_size=16, num_hidden_layers=1, num_heads=4, intermediate_size=0)
    model = LRNNForCausalLM(LRNNConfig(mixer="deltanet", eigval_range="[-1,1]", use_short_conv=False, **common))
    report = reflection_report(model, beta_above=0.0)  # every head counts at init
    assert [h["head"] for h in report["reflection_heads"]] == [0, 1, 2, 3]
    assert all(0 < h["max_2_minus_beta"] < 2 and 0 <= h["key_angle_error"] <= 1 for h in report["reflection_heads"])
    with_conv = LRNNForCausalLM(LRNNConfig(mixer="deltanet", eigval_range="[-1,1]", use_short_conv=True, **common))
    with pytest.raises(ValueError, match="without a short conv"):
        reflection_report(with_conv)
