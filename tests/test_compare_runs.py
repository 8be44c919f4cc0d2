import json

import pytest

from lrnn_lm.analysis.compare_runs import main


def _run(path, val_losses):
    path.mkdir()
    rows = []
    for i, v in enumerate(val_losses, start=1):
        rows.append({"step": 10 * i, "tokens": 100 * i, "loss": v + 0.1})
        rows.append({"step": 10 * i, "val_loss": v})
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_table_json_and_plot(tmp_path):
    a, b = _run(tmp_path / "a", [6.0, 5.5]), _run(tmp_path / "b", [6.1, 5.2])
    results = main([str(a), str(b), "--names", "A", "B", "--output", str(tmp_path / "out")])
    assert results["A"]["val_loss"] == 5.5 and results["B"]["val_loss"] == 5.2 and results["B"]["tokens"] == 200
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| A | n/a | 200 | 5.500 |" in table and "| B | n/a | 200 | 5.200 |" in table
    assert (tmp_path / "out" / "loss_curves.png").stat().st_size > 0


def test_a_folder_without_metrics_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no metrics.jsonl"):
        main([str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
