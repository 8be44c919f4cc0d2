"""Run safety, second round: no code from a checkpoint's pickles, one process per run folder, changed input files
caught on resume, bad data lines and full disks named, strict configs, one-line errors, summaries kept on resume.

Runs are the 1-layer d16 parity model of test_run_safety.py, a few steps each.
"""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrnn_lm.training import checkpoint as ckpt
from lrnn_lm.training import run_dir
from lrnn_lm.training.config import ConfigError, load_config
from lrnn_lm.training.data import DataError

from .test_run_safety import TASK_ARGS, _packer, _refinalize, task_run
from .training_utils import ROOT, fake_checkpoint, run_train


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    """A finished 2-step run with a checkpoint at step 2 (tests copy it: train.py starts are the slow part)."""
    out = tmp_path_factory.mktemp("shared") / "run"
    r = task_run(out, 2, "--checkpoint.every=2")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def copy_run(src, tmp_path):
    import shutil

    return Path(shutil.copytree(src, tmp_path / "run", symlinks=True))


# ----------------------------------------------------------------------------- 1. no code from a checkpoint


class RunsAShellCommand:
    """Unpickling this runs ``touch MARKER``: what a planted random_states_*.pkl could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_in_the_random_states_runs_no_code_and_is_refused_by_name(two_step_run, tmp_path):
    import io

    import torch

    out = copy_run(two_step_run, tmp_path)
    marker = tmp_path / "code-ran"
    buf = io.BytesIO()
    torch.save({"random_state": RunsAShellCommand(marker)}, buf)
    step = out / "checkpoints" / "step-00000002"
    _refinalize(step, "random_states_0.pkl", buf.getvalue())  # manifest recomputed: the checkpoint "verifies"
    assert ckpt.verify(step) == 2
    for resume in ("--resume=auto", f"--resume={step}"):
        r = task_run(out, 3, resume, "--resume_inexact=true")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert f"{step / 'random_states_0.pkl'}: refusing to unpickle it" in r.stderr
        assert not marker.exists()


def test_a_sharded_checkpoints_metadata_is_read_with_an_allow_list(tmp_path):
    """torch reads an FSDP/DCP ``.metadata`` with plain pickle.load: a real one passes the allow-list, a planted
    one is refused by name and runs nothing."""
    import pickle
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp

    from lrnn_lm.training.resume import check_dcp_metadata

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optim": optimizer.state_dict(), "bf16": torch.zeros(2).bfloat16()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=tmp_path / "real")
    check_dcp_metadata(tmp_path / "real" / ".metadata")
    marker = tmp_path / "code-ran"
    (tmp_path / "planted.metadata").write_bytes(pickle.dumps(RunsAShellCommand(marker)))
    with pytest.raises(ckpt.CheckpointError, match="planted.metadata: refusing to unpickle it: it names posix.system"):
        check_dcp_metadata(tmp_path / "planted.metadata")
    assert not marker.exists()


# ----------------------------------------------------------------------------- 2. one process per run folder

HOLD_LOCK = "import sys, time; from lrnn_lm.training.run_lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
HOLD_LOCK += "print('locked', flush=True); time.sleep(120)"


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    from lrnn_lm.training.run_lock import RunLock, lock_path

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = task_run(out, 2)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert f"out_dir {out} is in use by process {holder.pid}" in r.stderr
        with pytest.raises(run_dir.RunDirError, match=f"in use by process {holder.pid}"):
            RunLock(out).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the lock file stays behind
        holder.wait()
    assert lock_path(out).read_text().startswith(str(holder.pid))
    r = task_run(out, 2)
    assert r.returncode == 0, r.stderr[-3000:]


def _start(out, steps, *extra):
    cmd = [sys.executable, str(ROOT / "train.py"), *TASK_ARGS, f"--out_dir={out}", f"--train.max_steps={steps}"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([*cmd, *extra], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


def _race(out, steps, *extra):
    """Two train.py started together; returns (winner's stderr, loser's stderr) after checking one of each."""
    procs = [_start(out, steps, *extra) for _ in range(2)]
    results = [(p.pid, p.wait(timeout=300), p.stderr.read()) for p in procs]
    ok = [r for r in results if r[1] == 0]
    refused = [r for r in results if r[1] != 0]
    assert len(ok) == 1 and len(refused) == 1, [(rc, err[-2000:]) for _, rc, err in results]
    _, rc, err = refused[0]
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    assert f"out_dir {out} is in use by process {ok[0][0]}" in err, err[-3000:]
    return ok[0][2], err


def _one_run(out, steps):
    """The folder holds one run: each step once, and its checkpoints, run.json and config agree."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, steps + 1))
    run_id = run_dir.read_run_id(out)
    assert all(ckpt.run_id_of(p) == run_id for p in ckpt.list_checkpoints(out / "checkpoints"))


def test_two_fresh_runs_started_together_never_share_the_folder(tmp_path):
    out = tmp_path / "run"
    _race(out, 300, "--checkpoint.every=100")
    _one_run(out, 300)


def test_two_resumes_started_together_never_share_the_folder(two_step_run, tmp_path):
    out = copy_run(two_step_run, tmp_path)
    _race(out, 300, "--resume=auto", "--checkpoint.every=100")
    _one_run(out, 300)
    resumes = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"event"' in x]
    assert [e["step"] for e in resumes] == [2]


# ----------------------------------------------------------------------------- 3. changed input files


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_a_data_or_tokenizer_file_changed_under_the_same_path_is_refused_unless_named(tmp_path, monkeypatch):
    from lrnn_lm.training import fingerprint
    from lrnn_lm.training.resume import ResumeError, check_inputs

    data = _jsonl(tmp_path / "train.jsonl", ["one document", "another document"])
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"model": 1}')
    tokenizer = type("Tok", (), {"name_or_path": str(tok)})()
    monkeypatch.setattr(fingerprint, "hub_revision", lambda repo, kind: "rev-1")
    cfg = load_config([f"--data.sources=[{{path: '{data}'}}, {{path: some/hub_dataset}}]"])
    saved = fingerprint.run_fingerprints(cfg, tokenizer)
    assert saved["data"]["hub:some/hub_dataset"] == {"revision": "rev-1"}
    step = fake_checkpoint(tmp_path / "ckpts", 4, "run")
    _refinalize(step, ckpt.RUN_CONFIG, json.dumps({**cfg.to_dict(), fingerprint.KEY: saved}).encode())
    assert check_inputs(step, fingerprint.run_fingerprints(cfg, tokenizer), []) == {}

    _jsonl(data, ["one document", "another document, edited"])  # same path, other bytes
    (tok / "tokenizer.json").write_text('{"model": 2}')
    monkeypatch.setattr(fingerprint, "hub_revision", lambda repo, kind: "rev-2")
    now = fingerprint.run_fingerprints(cfg, tokenizer)
    with pytest.raises(ResumeError) as refused:
        check_inputs(step, now, [])
    message = str(refused.value)
    assert f"data file {data}: " in message and "data file hub:some/hub_dataset: revision rev-1 -> revision rev-2"
    assert f"tokenizer file {tok / 'tokenizer.json'}" in message and "--allow_changed=[data,tokenizer]" in message
    with pytest.raises(ResumeError, match="allow_changed=\\[tokenizer\\]"):
        check_inputs(step, now, ["data"])
    allowed = check_inputs(step, now, ["data", "tokenizer"])
    assert set(allowed) == {f"data:{data}", "data:hub:some/hub_dataset", f"tokenizer:{tok / 'tokenizer.json'}"}


def test_a_large_file_is_hashed_at_both_ends_and_a_new_mtime_counts_as_a_change(tmp_path, monkeypatch):
    from lrnn_lm.training import fingerprint

    monkeypatch.setattr(fingerprint, "WHOLE_LIMIT", 100)
    monkeypatch.setattr(fingerprint, "EDGE", 10)
    path = tmp_path / "big.jsonl"
    path.write_bytes(bytes(range(200)))
    old = fingerprint.file_fingerprint(path)
    assert old["hashed"] == "first and last MiB"
    for offset in (5, 195):  # a byte changed in the head or the tail, the mtime put back
        data = bytearray(range(200))
        data[offset] ^= 1
        path.write_bytes(bytes(data))
        os.utime(path, ns=(old["mtime_ns"], old["mtime_ns"]))
        assert fingerprint._same(old, fingerprint.file_fingerprint(path)) is False
    path.write_bytes(bytes(range(200)))  # the same bytes again, only the mtime differs: the middle is unknown
    os.utime(path, ns=(old["mtime_ns"] + 10**9, old["mtime_ns"] + 10**9))
    assert fingerprint._same(old, fingerprint.file_fingerprint(path)) is False
    os.utime(path, ns=(old["mtime_ns"], old["mtime_ns"]))
    assert fingerprint._same(old, fingerprint.file_fingerprint(path)) is True


def test_resume_refuses_a_regenerated_data_file_then_records_the_allowed_change(tmp_path):
    """As a user meets it: train.py on a local .jsonl, the file rewritten, then --resume auto."""
    from .training_utils import make_corpus

    corpus = make_corpus(tmp_path / "corpus", n_train=6, n_val=2)
    text = [
        f"--data.sources=[{{path: '{corpus['train']}'}}]",
        f"--tokenizer.name_or_path={corpus['tokenizer']}",
        "--model={mixer: deltanet, eigval_range: '[-1,1]', hidden_size: 16, num_hidden_layers: 1, num_heads: 2}",
        "--data.seq_len=32",
        "--train.micro_batch_size=2",
        "--logging.progress=false",
        "--train.threads=1",
        "--checkpoint.every=2",
    ]
    out = tmp_path / "run"
    r = run_train([*text, f"--out_dir={out}", "--train.max_steps=2"])
    assert r.returncode == 0, r.stderr[-3000:]
    lines = corpus["train"].read_text().splitlines()
    corpus["train"].write_text("\n".join(reversed(lines)) + "\n")  # same size, same documents, other order
    r = run_train([*text, f"--out_dir={out}", "--train.max_steps=3", "--resume=auto"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"data file {corpus['train']}: " in r.stderr and "--allow_changed=[data]" in r.stderr
    r = run_train([*text, f"--out_dir={out}", "--train.max_steps=3", "--resume=auto", "--allow_changed=[data]"])
    assert r.returncode == 0, r.stderr[-3000:]
    event = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"event"' in x][0]
    assert event["exact"] is False and list(event["changed"]) == [f"data:{corpus['train']}"]


# ----------------------------------------------------------------------------- 4. a malformed .jsonl line


def test_a_malformed_jsonl_line_is_a_data_error_naming_file_and_line(tmp_path):
    path = tmp_path / "web.jsonl"
    lines = [json.dumps({"text": f"document number {i}"}) for i in range(60)]
    lines[49] = '{"text": "a line cut short'
    path.write_text("\n".join(lines) + "\n")
    p = _packer(path)
    p.files = [str(path)]
    with pytest.raises(DataError, match=f"data source {path}: line 50 is not a valid JSON document"):
        for _ in range(100):
            p.next_row()


# ----------------------------------------------------------------------------- 5. disk full during a checkpoint


class FakeAccelerator:
    """One process whose save_state writes half a file and then fails like a full disk does."""

    is_main_process, process_index, num_processes = True, 0, 1

    def __init__(self, error):
        self.error = error

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "optimizer.bin"), "wb") as f:
            f.write(b"half an optimizer")
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1856 vs 1744"),  # torch.save's
    ],
)
def test_a_full_disk_during_a_checkpoint_names_the_step_and_the_intact_previous_one(tmp_path, error):
    root = tmp_path / "checkpoints"
    fake_checkpoint(root, 4, "run")
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.save(FakeAccelerator(error), root, 8, {"step": 8}, "run", {}, keep_last=2)
    assert f"disk full while writing checkpoint step 8 in {root}; the previous checkpoint step 4" in str(e.value)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000004"]  # the partial .tmp folder is gone
    assert ckpt.newest_valid(root, "run") == root / "step-00000004"


def test_another_error_during_a_checkpoint_is_not_called_a_full_disk(tmp_path):
    with pytest.raises(PermissionError):
        ckpt.save(FakeAccelerator(PermissionError(errno.EACCES, "denied")), tmp_path, 8, {}, "run", {}, 2)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 6. U+FFFD is a character


def test_valid_text_with_a_replacement_character_is_kept_and_only_undecodable_bytes_are_skipped(tmp_path):
    path = tmp_path / "web.txt"
    path.write_bytes("caf\ufffd menu".encode() + b"\n\nbad \xff\xfe bytes\n\n" + "\ufffd alone".encode())
    from lrnn_lm.training.config import SourceConfig
    from lrnn_lm.training.data import TextPacker, build_text_dataset

    from .test_run_safety import RecordingCharTokenizer

    ds = build_text_dataset([SourceConfig(path=str(path), txt_sample_by="paragraph")], 0, 1, 0, 0)
    p = TextPacker(ds, RecordingCharTokenizer(), 8)
    tokens = [t for _ in range(2) for t in p.next_row().tokens]  # 16 of the 18 tokens of the two kept documents
    assert p.stats.skipped_invalid_utf8 == 1 and p.stats.docs == 2, p.stats
    char = 1 + ord("\ufffd") % 50  # RecordingCharTokenizer's id for U+FFFD
    assert tokens.count(char) == 2  # both documents that hold it were packed
    j = tmp_path / "web.jsonl"
    _jsonl(j, ["caf\ufffd", "ok"])
    q = _packer(j, seq_len=4)
    q.next_row()
    q.next_row()
    assert q.stats.skipped_invalid_utf8 == 0 and q.stats.docs == 2


# ----------------------------------------------------------------------------- 7. configs read as written


def test_a_duplicate_key_is_refused_naming_it_and_its_lines(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 5\noptim:\n  lr: 0.001\ntrain:\n  seed: 3\n")
    with pytest.raises(ConfigError, match=f"{path}: duplicate key 'train' on lines 1 and 5"):
        load_config(["--config", str(path)])
    with pytest.raises(ConfigError, match="--optim={lr: 1, lr: 2}: duplicate key 'lr' on line 1;"):
        load_config(["--optim={lr: 1, lr: 2}"])


def test_yaml_aliases_are_refused(tmp_path):
    bomb = "model:\n  label2id:\n    a: &a [x, x, x, x, x, x, x, x, x]\n    b: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    bomb += "    c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(ConfigError, match=f"{path}: line 4: YAML alias \\*a: aliases are not allowed"):
        load_config(["--config", str(path)])


@pytest.mark.parametrize("size", [0, 10, 256])
def test_a_tokenizer_smaller_than_the_byte_alphabet_is_refused(size):
    with pytest.raises(ConfigError, match=f"tokenizer.vocab_size: {size} is below 257"):
        load_config([f"--tokenizer.vocab_size={size}"])
    assert load_config(["--tokenizer.vocab_size=257"]).tokenizer.vocab_size == 257


# ----------------------------------------------------------------------------- 8. one line, no traceback


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--optim.lr=[1,"], "--optim.lr=[1,: not valid YAML"),
        (["--config", "{bad_yaml}"], "not valid YAML"),
        (["--config", "{latin1}"], "not UTF-8 text"),
        (["--train.seed=-1"], "train.seed: invalid value -1"),
        (["--train.threads=99999999999999999999"], "train.threads: invalid value 99999999999999999999"),
        (["--data.task={name: parity, options: {modulus: 3}}"], "unexpected keyword argument 'modulus'"),
        (["--model.vocab_size=1"], "model.vocab_size=1 is smaller than the tokenizer's vocabulary"),
    ],
)
def test_train_py_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys, argv, message):
    import train

    (tmp_path / "bad.yaml").write_text("train: {max_steps: 2\n")
    (tmp_path / "latin1.yaml").write_bytes("out_dir: caf\xe9\n".encode("latin-1"))
    files = {"{bad_yaml}": str(tmp_path / "bad.yaml"), "{latin1}": str(tmp_path / "latin1.yaml")}
    argv = [files.get(a, a) for a in argv]
    monkeypatch.setattr(sys, "argv", ["train.py", *TASK_ARGS, f"--out_dir={tmp_path / 'out'}", *argv])
    assert train.cli() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.py: error: ") and message in err[0], err


def test_eval_py_refuses_what_is_not_a_checkpoint_folder_in_one_line(tmp_path, capsys):
    import eval as eval_cli

    (tmp_path / "file.bin").write_bytes(b"x")
    (tmp_path / "no_tok").mkdir()
    (tmp_path / "no_tok" / "config.json").write_text("{}")
    cases = {
        str(tmp_path / "file.bin"): "a file, not a folder",
        str(tmp_path / "missing"): "no such file or folder",
        str(tmp_path / "no_tok"): "no tokenizer files",
    }
    for path, message in cases.items():
        assert eval_cli.cli(["--checkpoint", path, "--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"eval.py: error: checkpoint {path}: {message}" in err[0], err
    code = eval_cli.cli(["--checkpoint", str(tmp_path / "no_tok"), "--output", str(tmp_path / "file.bin")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--output {tmp_path / 'file.bin'}: an existing file" in err[0], err


# ----------------------------------------------------------------------------- 9. summary after a resume


def test_a_resume_that_only_re_exports_keeps_the_last_evaluation_in_the_summary(two_step_run, tmp_path):
    out = copy_run(two_step_run, tmp_path)
    first = json.loads((out / "summary.json").read_text())
    assert "val_loss" in first
    r = task_run(out, 2, "--resume=auto")
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((out / "summary.json").read_text())
    evaluated = {k: v for k, v in first.items() if k.startswith(("val_", "long_val_"))}
    assert {k: again.get(k) for k in evaluated} == evaluated


def test_the_unigram_baseline_and_last_validation_are_read_back_from_metrics(tmp_path):
    records = [{"step": 0, "unigram_val_loss": 5.5}, {"step": 1, "loss": 3.0}, {"step": 2, "val_loss": 2.5}]
    records += [{"step": 3, "loss": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert run_dir.last_evaluation(tmp_path) == (5.5, {"val_loss": 2.5})
