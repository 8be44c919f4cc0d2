"""The sweep command end to end on a tiny grid, its skipping of finished work, and train.py's validation stream
(the "val" split at lengths past training)."""

import json
import re
import shutil

import pytest

from lrnn_lm.experiments.sweep import SweepError, load_sweep, main
from lrnn_lm.tasks import IGNORE_INDEX, get_task
from lrnn_lm.training.config import TaskConfig
from lrnn_lm.training.task_data import TaskBatches

from .training_utils import ROOT

TINY = ROOT / "configs" / "sweeps" / "tiny_test.yaml"


def test_validation_stream_is_the_val_split_with_its_own_seed():
    cfg = TaskConfig(name="parity", min_len=3, max_len=8, seed=0, val_lengths=[12, 16], val_num=5, val_seed=4242)
    task = get_task("parity")
    shards = [TaskBatches(cfg, rank, 2, batch_size=2).long_validation_sets(batch_size=2) for rank in range(2)]
    for length in (12, 16):
        # Rank r holds indices r, r + 2, ...; both ranks run the same number of rows (3), and the filler row
        # (index 5 on rank 1) has no labels.
        rows = {}
        for rank, sets in enumerate(shards):
            ids = [row for batch in sets[length] for row in batch["input_ids"].tolist()]
            labels = [row for batch in sets[length] for row in batch["labels"].tolist()]
            assert len(ids) == 3
            for i, (x, y) in enumerate(zip(ids, labels)):
                if any(v != IGNORE_INDEX for v in y):
                    rows[rank + 2 * i] = x
        assert sorted(rows) == [0, 1, 2, 3, 4]
        val = [task.example(4242, i, length, split="val").input_ids for i in range(5)]
        test = [task.example(4242, i, length, split="test").input_ids for i in range(5)]
        assert [rows[i] for i in range(5)] == val
        assert val != test  # the validation stream is not the test stream, even at the same seed


@pytest.mark.slow
def test_sweep_end_to_end_then_skips_everything(tmp_path, capsys):
    out = tmp_path / "sweep"
    sweep = load_sweep(TINY, str(out))
    assert len(sweep.runs) == 4  # 2 models x 2 ranges x 1 seed

    assert main([str(TINY), "--out-root", str(out), "--jobs", "2"]) == 0
    first = capsys.readouterr().out
    assert len(re.findall(r"\] start ", first)) == 4 and len(re.findall(r"\] done ", first)) == 4, first

    results = json.loads((out / "results.json").read_text())
    cells = results["tasks"]["parity"]["cells"]
    assert set(cells) == {"DeltaNet [-1,1]", "DeltaNet [0,1]", "Mamba [-1,1]", "Mamba [0,1]"}
    for cell in cells.values():
        assert set(cell["runs"]) == {"0"} and cell["runs"]["0"]["status"] == "trained"
        assert set(cell["test"]["per_length"]) == {"8", "16", "32"} and set(cell["val"]["per_length"]) == {"12", "16"}
        assert cell["test"]["best"] == cell["test"]["mean"] == cell["runs"]["0"]["test"]["mean_scaled_acc"]
        assert cell["test"]["n"] == 1 and cell["test"]["std"] is None
    table = (out / "table.md").read_text()
    for cell in cells:
        assert f"| {cell} |" in table
    assert "| model | parity |" in table and "best of the seeds" in table
    every_run = table[table.index("### parity: every run") :]
    minutes = cells["DeltaNet [-1,1]"]["runs"]["0"]["train_minutes"]
    assert "| DeltaNet [-1,1] | 0 | " in every_run and f"| {minutes:.1f} |" in every_run
    assert (out / "parity.png").stat().st_size > 1000

    # train.py logged its validation stream (val split, lengths 12 and 16) at every evaluation.
    run_dir = out / "parity" / "deltanet_neg_s0"
    evals = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "long_val_acc" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all({"long_val_scaled_acc", "long_val_acc_12", "long_val_scaled_acc_16"} <= set(r) for r in evals)

    # A second run trains nothing, evaluates nothing, and writes the same results.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "logs" not in p.parts}
    assert main([str(TINY), "--out-root", str(out), "--jobs", "2"]) == 0
    second = capsys.readouterr().out
    assert " start " not in second and " resume " not in second and " eval " not in second, second
    assert len(re.findall(r"\] skip ", second)) == 4, second
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert {p.name for p in changed} <= {"results.json", "table.md", "parity.png"}, changed
    again = json.loads((out / "results.json").read_text())
    assert again["tasks"]["parity"]["cells"]["Mamba [0,1]"]["test"] == cells["Mamba [0,1]"]["test"]

    # A finished run of another recipe (copied in, or left from an older config) is refused, not scored.
    other = out / "parity" / "mamba_pos_s0"
    saved = (other / "config.yaml").read_text()
    (other / "config.yaml").write_text(saved.replace("hidden_size: 16", "hidden_size: 32"))
    assert main([str(TINY), "--out-root", str(out), "--jobs", "1"]) == 1
    fourth = capsys.readouterr().out
    assert "FAILED" in fourth and "model.hidden_size: 32 there, 16 here" in fourth, fourth
    failed = json.loads((out / "results.json").read_text())["failed"]
    assert failed == ["parity / Mamba [0,1] / seed 0"], failed
    (other / "config.yaml").write_text(saved)

    # A run whose final weights are gone is resumed from its checkpoint (not restarted), the rest skipped.
    shutil.rmtree(run_dir / "final")
    (run_dir / "summary.json").unlink()
    assert main([str(TINY), "--out-root", str(out), "--jobs", "1"]) == 0
    third = capsys.readouterr().out
    assert len(re.findall(r"\] resume ", third)) == 1 and len(re.findall(r"\] skip ", third)) == 3, third


def test_a_model_may_run_in_its_own_ranges_and_seeds(tmp_path):
    """A control that only makes sense in one range (a deeper [0,1] model) runs there alone, a side row may run
    fewer seeds; a bad range is refused when the sweep is read, naming the model."""
    spec = tmp_path / "sweep.yaml"
    base = ROOT / "configs" / "state_tracking" / "cpu_parity_deltanet_neg.yaml"
    spec.write_text(
        f"out_root: {tmp_path / 'out'}\nseeds: [0, 1]\nmodels:\n"
        f"  - {{name: One, config: {base}}}\n"
        f"  - {{name: Deep, config: {base}, ranges: ['[0,1]'], overrides: {{model.num_hidden_layers: 2}}}}\n"
        f"  - {{name: Side, config: {base}, seeds: [7]}}\n"
    )
    runs = load_sweep(spec).runs
    assert sorted((r.model, r.eigval_range, r.seed) for r in runs) == [
        ("Deep", "[0,1]", 0),
        ("Deep", "[0,1]", 1),
        ("One", "[-1,1]", 0),
        ("One", "[-1,1]", 1),
        ("One", "[0,1]", 0),
        ("One", "[0,1]", 1),
        ("Side", "[-1,1]", 7),
        ("Side", "[0,1]", 7),
    ]
    spec.write_text(spec.read_text().replace("ranges: ['[0,1]']", "ranges: ['[0,2]']"))
    with pytest.raises(SweepError, match="Deep"):
        load_sweep(spec)


def test_paths_are_read_from_the_working_directory_and_a_missing_one_is_named(tmp_path, monkeypatch):
    """No path is found by climbing up from the package: train.py and the configs come from the working directory
    (the repository root), and a sweep started elsewhere stops naming what it could not find."""
    assert load_sweep(TINY).train_script == ROOT / "train.py"
    with pytest.raises(SweepError, match="train script 'no_such_train.py' not found"):
        load_sweep(TINY, train_script="no_such_train.py")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match="not found from .*repository root"):
        load_sweep(TINY)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_loads(path):
    """Every run of every shipped sweep builds a valid train.py config (load_sweep checks each one)."""
    assert load_sweep(path).runs


@pytest.mark.slow
def test_only_trains_the_selected_runs_and_reports_the_rest_as_not_run(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main([str(TINY), "--out-root", str(out), "--jobs", "1", "--only", "DeltaNet [-1,1]"]) == 0
    printed = capsys.readouterr().out
    assert len(re.findall(r"\] start ", printed)) == 1 and len(re.findall(r"\] later ", printed)) == 3, printed
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["not_run"]) == [
        "parity / DeltaNet [0,1] / seed 0",
        "parity / Mamba [-1,1] / seed 0",
        "parity / Mamba [0,1] / seed 0",
    ]
    assert results["failed"] == []
    cells = results["tasks"]["parity"]["cells"]
    assert cells["DeltaNet [-1,1]"]["test"]["n"] == 1 and cells["Mamba [0,1]"]["test"] is None
    assert "Not run yet (left out by --only" in (out / "table.md").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds: [0]\nseeds: [1]\n", "duplicate key 'seeds' on lines 1 and 2"),
        ("base: &b [0, 1]\nseeds: *b\n", "alias"),
    ],
)
def test_a_sweep_file_is_read_strictly_as_train_configs_are(tmp_path, text, message):
    """A duplicate key would silently drop the first; an alias can blow up memory: both are refused, naming the file."""
    spec = tmp_path / "sweep.yaml"
    spec.write_text(text)
    with pytest.raises(SweepError, match=f"{spec}.*{message}"):
        load_sweep(spec)
