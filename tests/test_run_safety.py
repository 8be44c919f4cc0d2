"""Run safety: a used out_dir is never destroyed or mixed, checkpoints cannot be faked, resume refuses changes.

Runs are a 1-layer d16 model on the parity task (no tokenizer to build), a few steps each.
"""

import json

import pytest

from lrnn_lm.training import checkpoint as ckpt
from lrnn_lm.training import run_dir
from lrnn_lm.training.resume import plan_start

from .training_utils import fake_checkpoint, run_train

TASK_ARGS = [
    "--data.task={name: parity, min_len: 3, max_len: 8, seed: 0}",
    "--model={mixer: deltanet, eigval_range: '[-1,1]', hidden_size: 16, num_hidden_layers: 1, num_heads: 2, "
    "intermediate_size: 0}",
    "--train.micro_batch_size=8",
    "--train.eval_every=1000",
    "--train.eval_batches=1",
    "--train.log_every=1",
    "--optim.warmup_steps=2",
    "--logging.progress=false",
    "--train.threads=1",
]


def task_run(out, steps, *extra, **kw):
    return run_train([*TASK_ARGS, f"--out_dir={out}", f"--train.max_steps={steps}", *extra], **kw)


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- 1. a used out_dir


def test_fresh_run_into_a_used_out_dir_stops_before_any_work(tmp_path):
    out = tmp_path / "used"
    fake_checkpoint(out / "checkpoints", 8, "old-run")
    (out / "metrics.jsonl").write_text('{"step": 8, "loss": 1.0}\n')
    before = snapshot(out)
    r = task_run(out, 2)
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"out_dir {out} is not empty" in r.stderr
    assert "--resume auto" in r.stderr and "--overwrite=move" in r.stderr and "new --out_dir" in r.stderr
    assert snapshot(out) == before  # nothing moved, overwritten or deleted


def test_overwrite_move_keeps_the_old_run_whole_and_logs_it(tmp_path):
    out = tmp_path / "run"
    fake_checkpoint(out / "checkpoints", 8, "old-run")
    (out / "metrics.jsonl").write_text('{"step": 8, "loss": 1.0}\n')
    before = snapshot(out)
    r = task_run(out, 2, "--overwrite=move", "--checkpoint.every=1", "--checkpoint.keep_last=1")
    assert r.returncode == 0, r.stderr[-3000:]
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and snapshot(moved[0]) == before
    assert f"is now {moved[0]}" in r.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]  # the old run's step 8 is not in the new curve


def test_overwrite_delete_renames_then_deletes(tmp_path, caplog):
    out = tmp_path / "run"
    fake_checkpoint(out / "checkpoints", 8, "old-run")
    assert run_dir.clear_aside(out, "delete") is None
    assert list(tmp_path.iterdir()) == [] and "deleted the previous run" in caplog.text


def test_prune_only_deletes_the_current_runs_checkpoints(tmp_path):
    for step in (10, 20, 30):
        fake_checkpoint(tmp_path, step, "old")
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step, "new")
    ckpt.prune(tmp_path, keep_last=1, run_id="new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000006",
        "step-00000010",
        "step-00000020",
        "step-00000030",
    ]
    assert ckpt.newest_valid(tmp_path, "new") == tmp_path / "step-00000006"


def test_resume_auto_only_continues_the_folders_own_run(tmp_path):
    out = tmp_path / "run"
    run_dir.claim(out, "mine")
    fake_checkpoint(out / "checkpoints", 4, "mine")
    fake_checkpoint(out / "checkpoints", 40, "someone-else")  # copied in by hand
    start = plan_start(out, "auto", "no")
    assert start.run_id == "mine" and start.checkpoint == out / "checkpoints" / "step-00000004"
    foreign = tmp_path / "foreign"
    (foreign / "notes.txt").parent.mkdir()
    (foreign / "notes.txt").write_text("not a run")
    with pytest.raises(run_dir.RunDirError, match="no run.json"):
        plan_start(foreign, "auto", "no")
    with pytest.raises(run_dir.RunDirError, match="holds another run"):
        plan_start(foreign, str(out / "checkpoints" / "step-00000004"), "no")
