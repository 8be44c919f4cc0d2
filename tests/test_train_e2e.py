"""train.py end to end, in subprocesses, on a tiny model and a few real documents."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lrnn_lm.training.checkpoint import trainer_state_name

from .training_utils import ROOT, TINY_MODEL, data_args, losses, make_corpus, run_train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def base_args(corpus, out, steps, **extra):
    args = data_args(corpus) + [
        TINY_MODEL,
        f"--out_dir={out}",
        "--data.seq_len=64",
        "--train.micro_batch_size=4",
        f"--train.max_steps={steps}",
        "--train.log_every=1",
        "--train.eval_every=1000",
        "--train.eval_batches=2",
        "--optim.warmup_steps=5",
        "--optim.lr=3e-3",
        "--logging.progress=false",
        "--train.threads=1",
    ]
    return args + [f"--{k}={v}" for k, v in extra.items()]


def test_tiny_run_lowers_loss_and_loads_in_fresh_process(corpus, tmp_path):
    out = tmp_path / "run"
    r = run_train(base_args(corpus, out, 40))
    assert r.returncode == 0, r.stderr[-3000:]
    curve = losses(out / "metrics.jsonl")
    first, last = sum(curve[s] for s in range(1, 6)) / 5, sum(curve[s] for s in range(36, 41)) / 5
    assert last < first - 0.5, (first, last)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_loss"] < summary["unigram_val_loss"] + 2  # sanity: both measured on the same set
    # A fresh interpreter that never imports lrnn_lm: the checkpoint's remote code does.
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"p = {str(out / 'final')!r}\n"
        "m = AutoModelForCausalLM.from_pretrained(p, trust_remote_code=True)\n"
        "t = AutoTokenizer.from_pretrained(p)\n"
        "ids = t('The for statement', return_tensors='pt').input_ids\n"
        "print(type(m).__name__, m.generate(ids, max_new_tokens=5, do_sample=False).shape[1] == ids.shape[1] + 5)\n"
    )
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.split() == ["LRNNForCausalLM", "True"]


def test_exact_resume_after_sigkill(corpus, tmp_path):
    steps = 24
    ref = tmp_path / "ref"
    r = run_train(base_args(corpus, ref, steps, **{"checkpoint.every": 6}))
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "killed"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), *base_args(corpus, out, steps, **{"checkpoint.every": 6})]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-00000012").is_dir():
        assert proc.poll() is None, "run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    seconds_before = json.loads((newest / trainer_state_name(0)).read_text())["train_seconds"]
    assert seconds_before > 0

    r = run_train(base_args(corpus, out, steps, **{"checkpoint.every": 6, "resume": "auto"}))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    # The summary's minutes count the killed process's training time too (recorded in its checkpoint).
    assert json.loads((out / "summary.json").read_text())["minutes"] * 60 > seconds_before
    expected, got = losses(ref / "metrics.jsonl"), losses(out / "metrics.jsonl")
    assert sorted(got) == list(range(1, steps + 1))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, steps + 1))  # each step once, in order
    assert got == expected  # bit for bit: JSON floats round-trip exactly


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path):
    out = tmp_path / "term"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), *base_args(corpus, out, 10_000, **{"checkpoint.every": 5})]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-00000005").is_dir():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "stopping at step" in err
    step = json.loads((out / "summary.json").read_text())["step"]
    assert (out / "checkpoints" / f"step-{step:08d}" / "manifest.json").is_file()


def test_two_process_ddp_matches_one_process(corpus, tmp_path):
    common = {"train.micro_batch_size": 2, "train.tokens_per_step": 256}  # 4 rows of 64 tokens per step
    two = tmp_path / "two"
    launcher = ["accelerate", "launch", "--config_file", str(ROOT / "configs/accelerate/cpu_ddp_2proc.yaml")]
    r = run_train(base_args(corpus, two, 20, **common), launcher=launcher)
    assert r.returncode == 0, r.stderr[-3000:]
    hashes = json.loads((two / "summary.json").read_text())["param_sha256_per_rank"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]

    one = tmp_path / "one"
    r = run_train(base_args(corpus, one, 20, **common))  # accumulates 2 micro-batches instead
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = losses(two / "metrics.jsonl"), losses(one / "metrics.jsonl")
    diffs = [abs(a[s] - b[s]) for s in range(1, 21)]
    # Same model init, same global batch size, different document order per process: close, not equal.
    assert abs(a[1] - b[1]) < 0.1 and sum(diffs) / len(diffs) < 0.15, diffs
    assert a[20] < a[1] - 0.5 and b[20] < b[1] - 0.5


def test_world_size_trap_is_refused(monkeypatch):
    from lrnn_lm.training.runtime import check_world_size

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2.*sees a world of 1"):
        check_world_size(1)
    check_world_size(2)


def test_unknown_key_fails_before_any_work(tmp_path):
    r = run_train([f"--out_dir={tmp_path / 'x'}", "--optim.learning_rate=1"])
    assert r.returncode != 0 and "unknown key 'optim.learning_rate'" in r.stderr
    assert not (tmp_path / "x").exists()


def test_help_prints_usage_and_starts_nothing():
    r = run_train(["--help"])
    assert r.returncode == 0, r.stderr
    assert "accelerate launch train.py" in r.stdout and "default.yaml" in r.stdout


def test_two_process_ddp_resumes_exactly_after_sigkill(corpus, tmp_path):
    """Two gloo processes, the whole process group SIGKILLed after a checkpoint, resumed with --resume auto:
    per-step losses equal an uninterrupted two-process run's bit for bit, each step logged once."""
    steps, extra = 12, {"checkpoint.every": 4, "train.micro_batch_size": 2}
    launcher = ["accelerate", "launch", "--config_file", str(ROOT / "configs/accelerate/cpu_ddp_2proc.yaml")]
    ref = tmp_path / "ref"
    r = run_train(base_args(corpus, ref, steps, **extra), launcher=launcher)
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "killed"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = launcher + [str(ROOT / "train.py"), *base_args(corpus, out, steps, **extra)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT, start_new_session=True
    )
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-00000004").is_dir():
        assert proc.poll() is None, "run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, as when a node dies
    proc.wait()

    r = run_train(base_args(corpus, out, steps, **extra, resume="auto"), launcher=launcher)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in records if "loss" in rec] == list(range(1, steps + 1))
    assert losses(out / "metrics.jsonl") == losses(ref / "metrics.jsonl")
    hashes = json.loads((out / "summary.json").read_text())["param_sha256_per_rank"]
    assert hashes == json.loads((ref / "summary.json").read_text())["param_sha256_per_rank"]
