"""Run safety: a used out_dir is never destroyed or mixed, checkpoints cannot be faked, resume refuses changes.

Runs are a 1-layer d16 model on the parity task (no tokenizer to build), a few steps each.
"""

import json
import math
import re

import pytest
import torch

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


# ----------------------------------------------------------------------------- 3. checkpoint verification


def _rewrite_manifest(path, edit):
    meta = json.loads((path / ckpt.MANIFEST).read_text())
    edit(meta)
    (path / ckpt.MANIFEST).write_text(json.dumps(meta))


def _drop_entry(name):
    return lambda meta: meta["files"].pop(name)


def _swap_weights_and_drop_entry(path):
    (path / "model.safetensors").write_bytes(b"other weights")
    _rewrite_manifest(path, _drop_entry("model.safetensors"))


def _delete_optimizer_and_empty_list(path):
    (path / "optimizer.bin").unlink()
    _rewrite_manifest(path, lambda meta: meta.update(files={}))


def _delete_optimizer_and_its_entry(path):
    (path / "optimizer.bin").unlink()
    _rewrite_manifest(path, _drop_entry("optimizer.bin"))


def _escape(rel):
    def damage(path):
        outside = path.parent / "outside.bin"
        outside.write_bytes(b"x")
        entry = {"size": 1, "sha256": ckpt._sha256(outside)}
        _rewrite_manifest(path, lambda meta: meta["files"].update({rel.format(outside=outside): entry}))

    return damage


def _extra_file(path):
    (path / "extra.py").write_text("print('hi')")


def _link(path):
    target = path / "model.safetensors"
    data = target.read_bytes()
    target.unlink()
    (path.parent / "elsewhere.safetensors").write_bytes(data)
    target.symlink_to(path.parent / "elsewhere.safetensors")


DAMAGES = {
    "empty file list, optimizer deleted": _delete_optimizer_and_empty_list,
    "optimizer and its entry deleted": _delete_optimizer_and_its_entry,
    "partial manifest": lambda p: _rewrite_manifest(p, _drop_entry("random_states_0.pkl")),
    "weights swapped, entry removed": _swap_weights_and_drop_entry,
    "unlisted extra file": _extra_file,
    "weights are a link": _link,
    "dot-dot entry": _escape("../outside.bin"),
    "absolute entry": _escape("{outside}"),
    "files is a list": lambda p: _rewrite_manifest(p, lambda m: m.update(files=["model.safetensors"])),
    "entry is a string": lambda p: _rewrite_manifest(p, lambda m: m["files"].update({"optimizer.bin": "x"})),
    "size is a string": lambda p: _rewrite_manifest(p, lambda m: m["files"]["optimizer.bin"].update(size="400")),
    "no sha256": lambda p: _rewrite_manifest(p, lambda m: m["files"]["optimizer.bin"].pop("sha256")),
    "manifest is a list": lambda p: (p / ckpt.MANIFEST).write_text("[]"),
    "step is a string": lambda p: _rewrite_manifest(p, lambda m: m.update(step="8")),
    "no world size": lambda p: _rewrite_manifest(p, lambda m: m.pop("world_size")),
    "2-process checkpoint missing rank 1": lambda p: _rewrite_manifest(p, lambda m: m.update(world_size=2)),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_faked_or_malformed_checkpoint_is_corrupt_and_auto_falls_back(tmp_path, damage, caplog):
    good = fake_checkpoint(tmp_path, 4, "run")
    newest = fake_checkpoint(tmp_path, 8, "run")
    DAMAGES[damage](newest)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.verify(newest)
    assert ckpt.newest_valid(tmp_path, "run") == good
    assert "refusing checkpoint" in caplog.text
    with pytest.raises(ckpt.CheckpointError, match=f"--resume {newest}: refusing this checkpoint"):
        plan_start(tmp_path / "new-out", str(newest), "no")


def test_resume_path_to_a_corrupt_checkpoint_is_refused_with_a_clear_message(tmp_path):
    bad = fake_checkpoint(tmp_path / "ckpts", 8, "run")
    _extra_file(bad)
    r = task_run(tmp_path / "out", 2, f"--resume={bad}")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"--resume {bad}: refusing this checkpoint" in r.stderr and "extra.py is not in the manifest" in r.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 5. no code without consent


@pytest.fixture
def saved_checkpoint(tmp_path):
    """A tiny model and tokenizer saved as train.py saves them (with the two remote-code shims and auto_map)."""
    from lrnn_lm.tasks import get_task
    from lrnn_lm.tasks.tokenizer import task_tokenizer

    from .models import tiny_model

    path = tmp_path / "final"
    tiny_model().save_pretrained(path)
    task_tokenizer(get_task("parity")).save_pretrained(path)
    return path


def _plant(path, module, marker):
    """Make ``module`` (a file in the checkpoint) write ``marker`` when imported."""
    (path / module).write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + (path / module).read_text())


def test_loading_our_checkpoint_runs_none_of_its_code(saved_checkpoint, tmp_path):
    from lrnn_lm.analysis.checkpoints import load_checkpoint

    marker = tmp_path / "ran"
    assert json.loads((saved_checkpoint / "config.json").read_text())["auto_map"]
    _plant(saved_checkpoint, "modeling_lrnn.py", marker)
    _plant(saved_checkpoint, "configuration_lrnn.py", marker)
    model, tokenizer = load_checkpoint(saved_checkpoint, torch.device("cpu"))
    assert type(model).__module__ == "lrnn_lm.modeling_lrnn" and tokenizer.pad_token is not None
    assert not marker.exists()


def test_a_checkpoint_that_ships_code_is_refused_without_the_flag(saved_checkpoint, tmp_path):
    from lrnn_lm.analysis.checkpoints import RemoteCodeRefused, load_checkpoint

    marker = tmp_path / "ran"
    (saved_checkpoint / "evil_tok.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    cfg = json.loads((saved_checkpoint / "tokenizer_config.json").read_text())
    cfg.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "evil_tok.EvilTokenizer"]})
    (saved_checkpoint / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(RemoteCodeRefused, match="--trust-remote-code"):
        load_checkpoint(saved_checkpoint, torch.device("cpu"))
    assert not marker.exists()
    load_checkpoint(saved_checkpoint, torch.device("cpu"), trust_remote_code=True)  # the user's explicit consent
    assert marker.exists()


def test_eval_cli_has_the_flag_and_defaults_to_no_remote_code():
    import eval as eval_cli

    assert eval_cli.parse_args(["--checkpoint", "x"]).trust_remote_code is False
    assert eval_cli.parse_args(["--checkpoint", "x", "--trust-remote-code"]).trust_remote_code is True


# ----------------------------------------------------------------------------- 4. non-finite streaks


def test_a_non_finite_streak_saves_no_checkpoint_and_log_steps_match_metrics(tmp_path):
    """lr 1e30 without clipping: step 1 is finite and blows the weights up, steps 2-4 are non-finite."""
    out = tmp_path / "nan"
    extra = ["--optim.lr=1e30", "--optim.grad_clip=0", "--optim.warmup_steps=0", "--checkpoint.every=1"]
    r = task_run(out, 20, *extra, "--train.max_consecutive_nonfinite=3", "--checkpoint.keep_last=2")
    assert r.returncode == 2 and "3 consecutive non-finite steps, the last at step 4" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001"]
    assert plan_start(out, "auto", "no").checkpoint == out / "checkpoints" / "step-00000001"
    warned = [int(m) for m in re.findall(r"step (\d+): non-finite", r.stderr)]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = [rec["step"] for rec in records if not math.isfinite(rec["grad_norm"])]
    assert warned == skipped == [2, 3, 4]


# ----------------------------------------------------------------------------- 2. resume refuses a changed run


def _cfg(*argv):
    from lrnn_lm.training.config import load_config

    return load_config(["--model={mixer: deltanet, eigval_range: '[-1,1]'}", *argv]).to_dict()


def test_resume_refuses_model_data_and_batch_changes_even_when_named():
    from lrnn_lm.training.resume import ResumeError, check_changes

    saved = _cfg()
    for argv, shown in [
        (["--model={mixer: deltanet, eigval_range: '[0,1]'}"], "model.eigval_range: '[-1,1]' -> '[0,1]'"),
        (["--data.seq_len=128"], "data.seq_len: 256 -> 128"),
        (["--tokenizer.vocab_size=1000"], "tokenizer.vocab_size: 4096 -> 1000"),
        (["--train.micro_batch_size=2"], "train.micro_batch_size: 8 -> 2"),
    ]:
        key = shown.split(":")[0]
        with pytest.raises(ResumeError, match=re.escape(shown)):
            check_changes(saved, _cfg(*argv), allowed=[key])


def test_resume_needs_a_named_flag_for_other_changes_and_returns_them():
    from lrnn_lm.training.resume import ResumeError, check_changes

    saved = _cfg()
    with pytest.raises(
        ResumeError, match=re.escape("optim.lr: 0.0003 -> 0.001") + r"(.|\n)*--allow_changed=\[optim.lr\]"
    ):
        check_changes(saved, _cfg("--optim.lr=1e-3"), allowed=[])
    assert check_changes(saved, _cfg("--optim.lr=1e-3"), allowed=["optim.lr"]) == {"optim.lr": (3e-4, 1e-3)}
    free = ["--train.max_steps=5000", "--train.log_every=1", "--checkpoint.every=7", "--logging.progress=false"]
    assert check_changes(saved, _cfg(*free, "--train.eval_every=3"), allowed=[]) == {}


def test_a_config_saved_before_a_field_existed_compares_at_that_fields_default():
    """An older run's config lacks the fields added since; at their defaults (which keep the old behaviour) it is
    the same run, and any real difference, or a non-default value of the new field, is still caught."""
    from lrnn_lm.training.resume import ResumeError, check_changes, defining_changes

    task = ["--data.task={name: parity, min_len: 3, max_len: 40}"]
    old = _cfg(*task)
    del old["data"]["task"]["curriculum_steps"]  # as written before data.task.curriculum_steps existed
    assert defining_changes(old, _cfg(*task)) == {}
    assert check_changes(old, _cfg(*task), allowed=[]) == {}
    assert defining_changes(old, _cfg(*task, "--data.task.curriculum_steps=100")) == {
        "data.task.curriculum_steps": (0, 100)
    }
    with pytest.raises(ResumeError, match=re.escape("model.eigval_range: '[-1,1]' -> '[0,1]'")):
        check_changes(old, _cfg(*task, "--model={mixer: deltanet, eigval_range: '[0,1]'}"), allowed=[])
    removed = {**_cfg(*task), "a_field_since_removed": 1}
    assert "a_field_since_removed" in defining_changes(removed, _cfg(*task))


def test_resume_refuses_another_world_size(tmp_path):
    from lrnn_lm.training.resume import ResumeError, check_resume

    two = fake_checkpoint(tmp_path, 8, "run", world_size=2)
    (two / ckpt.RUN_CONFIG).write_text(json.dumps(_cfg()))
    with pytest.raises(ResumeError, match="written by 2 processes and this run has 1"):
        check_resume(two, _cfg(), world=1, allowed=[])


def _refinalize(path, rel, data):
    """Replace one file of a checkpoint and update its manifest entry, as a consistent (not corrupt) checkpoint."""
    (path / rel).write_bytes(data)
    entry = {"size": len(data), "sha256": ckpt._sha256(path / rel)}
    _rewrite_manifest(path, lambda meta: meta["files"].update({rel: entry}))


def test_resume_refuses_a_changed_run_and_lost_random_states_then_records_what_was_allowed(tmp_path):
    out = tmp_path / "run"
    r = task_run(out, 2, "--checkpoint.every=2")
    assert r.returncode == 0, r.stderr[-3000:]
    config_before, final_before = (out / "config.yaml").read_text(), snapshot(out / "final")

    pos = "--model={mixer: deltanet, eigval_range: '[0,1]', hidden_size: 16, num_hidden_layers: 1, num_heads: 2}"
    r = task_run(out, 3, "--resume=auto", pos, "--optim.lr=1e-2")
    assert r.returncode == 2 and "model.eigval_range: '[-1,1]' -> '[0,1]'" in r.stderr, r.stderr[-3000:]
    assert (out / "config.yaml").read_text() == config_before and snapshot(out / "final") == final_before

    _refinalize(out / "checkpoints" / "step-00000002", "random_states_0.pkl", b"not a pickle")
    r = task_run(out, 3, "--resume=auto")
    assert r.returncode == 2 and "could not restore the random states" in r.stderr, r.stderr[-3000:]

    r = task_run(out, 3, "--resume=auto", "--optim.lr=1e-2", "--allow_changed=[optim.lr]", "--resume_inexact=true")
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resume = [e for e in events if e.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 2 and resume[0]["exact"] is False
    assert resume[0]["changed"] == {"optim.lr": [2e-3, 1e-2]}  # 2e-3: the default config's lr
    assert [e["step"] for e in events if "loss" in e] == [1, 2, 3]


def test_records_logged_after_the_resumed_step_are_dropped(tmp_path):
    lines = [{"step": 0, "unigram_val_loss": 5.0}] + [{"step": s, "loss": 1.0 / s} for s in range(1, 9)]
    text = "".join(json.dumps(rec) + "\n" for rec in lines) + '{"step": 9, "lo'  # torn by a SIGKILL mid-write
    (tmp_path / "metrics.jsonl").write_text(text)
    assert run_dir.trim_metrics(tmp_path, 6) == 3
    kept = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == [0, 1, 2, 3, 4, 5, 6]
    assert run_dir.trim_metrics(tmp_path, 0) == 7 and (tmp_path / "metrics.jsonl").read_text() == ""


# ----------------------------------------------------------------------------- 6. bad data


class RecordingCharTokenizer:
    """One token per character (id 0 is EOS), remembering the longest text it was given."""

    eos_token_id = 0

    def __init__(self):
        self.longest = 0

    def __call__(self, text, add_special_tokens=False):
        self.longest = max(self.longest, len(text))
        return {"input_ids": [1 + (ord(c) % 50) for c in text]}


def _packer(path, seq_len=64, tokenizer=None):
    from lrnn_lm.training.config import SourceConfig
    from lrnn_lm.training.data import TextPacker, build_text_dataset

    ds = build_text_dataset([SourceConfig(path=str(path))], 0, 1, 0, 0)
    return TextPacker(ds, tokenizer or RecordingCharTokenizer(), seq_len, name=str(path))


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.txt"])
def test_an_empty_file_is_a_data_error_naming_it(tmp_path, name):
    from lrnn_lm.training.config import SourceConfig
    from lrnn_lm.training.data import DataError, load_source

    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=f"{tmp_path / name}: the file is empty"):
        load_source(SourceConfig(path=str(tmp_path / name)))


def test_a_blank_txt_source_is_named_in_its_error(tmp_path):
    from lrnn_lm.training.data import DataError

    (tmp_path / "blank.txt").write_text("  \n\n \n")
    with pytest.raises(DataError, match=f"{tmp_path / 'blank.txt'}' holds no usable document"):
        _packer(tmp_path / "blank.txt").next_row()


def test_a_long_one_line_document_streams_with_a_small_state(tmp_path):
    """A 3 MB single-line document: tokenized in pieces, packed as one segment per row (no state reset inside
    the document), with a saved position of a few hundred bytes that resumes exactly."""
    import random
    import tracemalloc

    rng = random.Random(0)
    words = ["state", "tracking", "parity", "negative", "eigenvalue", "delta", "rule", "mamba", "gate", "x"]
    text = " ".join(rng.choice(words) for _ in range(500_000))[: 3 * 2**20]
    (tmp_path / "long.txt").write_text(text)
    tok = RecordingCharTokenizer()
    p = _packer(tmp_path / "long.txt", tokenizer=tok)
    tracemalloc.start()
    rows = [p.next_row() for _ in range(200)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert tok.longest <= p.chunk_chars < len(text) // 100
    assert all(r.segments == [64] for r in rows)
    assert [t for r in rows for t in r.tokens] == tok(text[: 200 * 64])["input_ids"]  # no character lost at cuts
    assert peak < 3 * len(text), peak  # the document itself is held once; its tokens never all at once
    state = json.dumps(p.state_dict())
    assert len(state) < 4096, len(state)
    expected = [p.next_row().tokens for _ in range(300)]  # crosses into the next piece
    q = _packer(tmp_path / "long.txt")
    q.load_state_dict(json.loads(state))
    assert [q.next_row().tokens for _ in range(300)] == expected


# ----------------------------------------------------------------------------- 6. bad config


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model.hiden_size=64"], "unknown key 'model.hiden_size'.*did you mean 'model.hidden_size'"),
        (["--model.eigval_ranges=[0,1]"], "unknown key 'model.eigval_ranges'.*did you mean 'model.eigval_range'"),
        (["--train.tokens_per_step=0"], "train.tokens_per_step"),
        (["--train.threads=-1"], "train.threads"),
        (["--optim.eps=-1e-8"], "optim.eps"),
        (["--data.shuffle_buffer=-1"], "data.shuffle_buffer"),
        (["--train.max_minutes=-1"], "train.max_minutes"),
    ],
)
def test_bad_model_keys_and_values_name_the_field(argv, message):
    from lrnn_lm.training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(argv)


@pytest.mark.parametrize("typed,expected", [("[0,1]", "[0,1]"), ("[-1,1]", "[-1,1]"), ("'[-1,1]'", "[-1,1]")])
def test_the_eigenvalue_range_as_typed_on_the_command_line_is_accepted(typed, expected):
    from lrnn_lm import LRNNConfig
    from lrnn_lm.training.config import load_config

    model = load_config([f"--model.eigval_range={typed}", "--model.mixer=deltanet"]).model
    assert model["eigval_range"] == expected
    assert LRNNConfig(**model).eigval_range == expected


def test_the_fsdp_sharded_layout_verifies(tmp_path):
    """accelerate's SHARDED_STATE_DICT layout: folders of DCP shards for the weights and the optimizer."""
    tmp = tmp_path / ".tmp-step-00000004"
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
        (tmp / folder).mkdir(parents=True)
        for name in (".metadata", "__0_0.distcp", "__1_0.distcp"):
            (tmp / folder / name).write_bytes(name.encode())
    for r in range(2):
        (tmp / f"random_states_{r}.pkl").write_bytes(b"rng")
        (tmp / ckpt.trainer_state_name(r)).write_text("{}")
    (tmp / ckpt.RUN_CONFIG).write_text("{}")
    ckpt.finalize(tmp, tmp_path / "step-00000004", 4, {"run_id": "r", "world_size": 2})
    assert ckpt.verify(tmp_path / "step-00000004") == 4
    (tmp_path / "step-00000004" / "optimizer_0" / "__1_0.distcp").unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing file optimizer_0/__1_0.distcp"):
        ckpt.verify(tmp_path / "step-00000004")
