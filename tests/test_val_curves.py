"""``lrnn_lm.analysis.val_curves``: validation accuracy against steps from ``metrics.jsonl``."""

import json

import pytest

from lrnn_lm.analysis.val_curves import main, read_curves


def write_metrics(run, rows):
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_per_length_with_a_resumed_step_and_the_plot(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_metrics(
        a,
        [
            {"step": 10, "loss": 1.0},
            {"step": 50, "long_val_scaled_acc_64": 0.5, "long_val_scaled_acc_128": 0.2, "long_val_scaled_acc": 0.35},
            {"step": 100, "long_val_scaled_acc_64": 0.8, "long_val_scaled_acc_128": 0.4},
            {"step": 100, "long_val_scaled_acc_64": 0.9, "long_val_scaled_acc_128": 0.6},  # scored again on resume
        ],
    )
    write_metrics(b, [{"step": 50, "long_val_scaled_acc_64": 0.1}])
    assert read_curves(a) == {64: [(50, 0.5), (100, 0.9)], 128: [(50, 0.2), (100, 0.6)]}

    main([str(a), str(b), "--names", "A", "B", "--output", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out" / "val_curves.json").read_text())
    assert saved == {"A": {"64": [[50, 0.5], [100, 0.9]], "128": [[50, 0.2], [100, 0.6]]}, "B": {"64": [[50, 0.1]]}}
    assert (tmp_path / "out" / "val_curves.png").stat().st_size > 1000


def test_a_run_without_the_validation_stream_is_named(tmp_path):
    write_metrics(tmp_path / "lm", [{"step": 1, "loss": 3.0, "val_loss": 3.1}])
    with pytest.raises(ValueError, match="lm: metrics.jsonl has no long-length validation"):
        read_curves(tmp_path / "lm")
    with pytest.raises(FileNotFoundError, match="nothing: no metrics.jsonl"):
        read_curves(tmp_path / "nothing")
