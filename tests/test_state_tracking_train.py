"""State-tracking tasks train through train.py (no second training loop)."""

import json
import time

import pytest

from .training_utils import run_train

pytestmark = pytest.mark.slow


def test_tiny_signed_deltanet_learns_short_parity(tmp_path):
    out = tmp_path / "parity"
    start = time.time()
    r = run_train(
        [
            "--data.task={name: parity, min_len: 3, max_len: 8, seed: 0}",
            "--model={mixer: deltanet, eigval_range: '[-1,1]', hidden_size: 32, num_hidden_layers: 1, num_heads: 2, "
            "intermediate_size: 0}",
            "--train.max_steps=200",
            "--train.micro_batch_size=64",
            "--optim.lr=3e-3",
            "--optim.warmup_steps=10",
            "--optim.weight_decay=0.0",
            "--train.eval_every=200",
            "--train.eval_batches=8",
            f"--out_dir={out}",
            "--logging.progress=false",
        ]
    )
    wall = time.time() - start
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # Held-out "val" split: 512 sequences of length 3..8, accuracy of the parity answer token.
    assert summary["val_acc"] >= 0.99, summary
    # The budget is for learning (the training loop); process start-up and imports come on top.
    assert summary["minutes"] * 60 < 60, f"training took {summary['minutes'] * 60:.0f} s (wall {wall:.0f} s)"
    assert (out / "final" / "tokenizer.json").is_file() and (out / "final" / "task.json").is_file()
