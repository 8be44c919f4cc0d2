"""State-tracking tasks train through train.py (no second training loop)."""

import json
import time

import pytest

from .training_utils import TINY_PARITY_ARGS, run_train

pytestmark = pytest.mark.slow


def test_tiny_signed_deltanet_learns_short_parity(tmp_path):
    out = tmp_path / "parity"
    start = time.time()
    r = run_train([*TINY_PARITY_ARGS, f"--out_dir={out}"])
    wall = time.time() - start
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # Held-out "val" split: 512 sequences of length 3..8, accuracy of the parity answer token.
    assert summary["val_acc"] >= 0.99, summary
    # The budget is for learning (the training loop); process start-up and imports come on top.
    assert summary["minutes"] * 60 < 60, f"training took {summary['minutes'] * 60:.0f} s (wall {wall:.0f} s)"
    assert (out / "final" / "tokenizer.json").is_file() and (out / "final" / "task.json").is_file()
