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
    assert results["A"]["val_loss_std"] is None
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| A | 1 | n/a | 200 | 5.500 | 5.500 |" in table and "| B | 1 | n/a | 200 | 5.200 | 5.200 |" in table
    assert (tmp_path / "out" / "loss_curves.png").stat().st_size > 0


def test_repeated_names_are_seeds_of_one_model(tmp_path):
    runs = [
        _run(tmp_path / n, v) for n, v in (("a0", [6.0, 5.0]), ("a1", [6.0, 5.2]), ("a2", [6.0, 5.4]), ("b", [6, 4]))
    ]
    results = main([*map(str, runs), "--names", "A", "A", "A", "B", "--output", str(tmp_path / "out")])
    assert list(results) == ["A", "B"]
    assert results["A"]["val_losses"] == [5.0, 5.2, 5.4] and len(results["A"]["runs"]) == 3
    assert results["A"]["val_loss"] == pytest.approx(5.2) and results["A"]["val_loss_std"] == pytest.approx(0.2)
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| A | 3 | n/a | 200 | 5.200 ± 0.200 | 5.000 / 5.200 / 5.400 |" in table
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["A"]["val_loss_std"] == pytest.approx(0.2)


def test_a_folder_without_metrics_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no metrics.jsonl"):
        main([str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
