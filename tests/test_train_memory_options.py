"""train.py's memory options: ``train.loss_head`` (chunked | logits) and ``train.activation_checkpointing``
(none | blocks) change what is kept for the backward, not the run: the same losses at every step."""

from __future__ import annotations

import pytest

from lrnn_lm.training.config import ConfigError, load_config

from .training_utils import TINY_PARITY_ARGS, losses, run_train


@pytest.mark.slow
def test_loss_head_and_checkpointing_leave_the_training_losses_unchanged(tmp_path):
    runs = {}
    for head, ckpt in (("logits", "none"), ("chunked", "none"), ("chunked", "blocks")):
        out = tmp_path / f"{head}_{ckpt}"
        args = [*TINY_PARITY_ARGS, "--train.max_steps=6", "--train.log_every=1", "--train.eval_every=100"]
        args += [f"--train.loss_head={head}", f"--train.activation_checkpointing={ckpt}", "--train.label_smoothing=0.1"]
        r = run_train([*args, f"--out_dir={out}"])
        assert r.returncode == 0, r.stderr[-3000:]
        runs[head, ckpt] = losses(out / "metrics.jsonl")
    reference = runs["logits", "none"]
    assert len(reference) == 6
    for key, run in runs.items():
        assert run.keys() == reference.keys(), key
        for step, value in run.items():
            assert value == pytest.approx(reference[step], rel=1e-5), (key, step)


@pytest.mark.parametrize("field, value", [("loss_head", "fused"), ("activation_checkpointing", "layers")])
def test_unknown_values_are_refused_naming_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError, match=f"train.{field}"):
        load_config([f"--train.{field}={value}", f"--out_dir={tmp_path}"])
