"""train.label_smoothing: the smoothed causal-LM loss of lrnn_lm/training/loss.py, and train.py using it."""

import json
import math

import pytest
import torch

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.training.config import ConfigError, load_config
from lrnn_lm.training.loss import causal_lm_loss

from .training_utils import TINY_PARITY_ARGS, run_train


def tiny_model() -> LRNNForCausalLM:
    torch.manual_seed(0)
    cfg = LRNNConfig(mixer="deltanet", vocab_size=37, hidden_size=32, num_hidden_layers=1, num_heads=2)
    return LRNNForCausalLM(cfg).eval()


def test_without_smoothing_it_is_the_models_own_loss_on_padded_and_packed_batches():
    model = tiny_model()
    ids = torch.randint(1, 37, (3, 11))
    labels = ids.clone()
    labels[1, 7:] = -100  # a right-padded row
    out = model(input_ids=ids, labels=labels)
    assert causal_lm_loss(out.logits, labels).item() == pytest.approx(out.loss.item(), rel=1e-6)
    flat, cu = ids.reshape(1, -1), torch.tensor([0, 5, 19, 33])
    packed_labels = flat.clone()
    packed_labels[0, cu[:-1]] = -100  # as train.py's packer: no prediction across a boundary
    out = model(input_ids=flat, labels=packed_labels, cu_seqlens=cu, use_cache=False)
    assert causal_lm_loss(out.logits, packed_labels).item() == pytest.approx(out.loss.item(), rel=1e-6)


def test_smoothing_mixes_the_target_with_the_uniform_distribution_and_skips_ignored_positions():
    torch.manual_seed(1)
    logits = torch.randn(2, 9, 13)  # the loss is computed in fp32, like the model's
    labels = torch.randint(0, 13, (2, 9))
    labels[0, 4] = labels[1, 8] = -100
    eps = 0.3
    logp = logits.double().log_softmax(-1)
    terms = []
    for b in range(2):
        for t in range(8):  # position t predicts labels[:, t + 1]
            y = int(labels[b, t + 1])
            if y != -100:
                terms.append(-(1 - eps) * logp[b, t, y] - eps * logp[b, t].mean())
    expected = torch.stack(terms).mean()
    assert causal_lm_loss(logits, labels, eps).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        causal_lm_loss(logits, labels[:, :-1])


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_out_of_range_smoothing_is_refused_naming_the_field(tmp_path, value):
    with pytest.raises(ConfigError, match="train.label_smoothing"):
        load_config([f"--train.label_smoothing={value}", f"--out_dir={tmp_path}"])


@pytest.mark.slow
def test_train_py_optimizes_the_smoothed_loss_and_validates_on_the_plain_one(tmp_path):
    eps, vocab = 0.2, 4  # parity: <pad>, 0, 1, =
    q = torch.full((vocab,), eps / vocab)
    q[0] += 1 - eps
    floor = float(-(q * q.log()).sum())  # the smoothed loss is a cross entropy against q: never below H(q)
    out = tmp_path / "run"
    args = [*TINY_PARITY_ARGS, f"--train.label_smoothing={eps}", "--train.log_every=10", f"--out_dir={out}"]
    r = run_train(args)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_losses = [rec["loss"] for rec in records if "loss" in rec]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_acc"] >= 0.99, summary  # smoothing does not stop it learning parity
    assert min(train_losses) >= floor - 1e-4, (min(train_losses), floor)
    # The validation loss is the model's plain one: a model this accurate scores far below the smoothed floor.
    assert summary["val_loss"] < floor / 2 and math.isfinite(summary["val_loss"]), (summary["val_loss"], floor)
