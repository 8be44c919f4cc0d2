"""Small real data and a subprocess runner for the train.py tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lrnn_lm.training import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]

TINY_MODEL = (
    "--model={mixer: deltanet, eigval_range: '[-1,1]', hidden_size: 32, num_hidden_layers: 2, num_heads: 2, "
    "intermediate_size: 0}"
)


def make_corpus(root: Path, n_train: int = 30, n_val: int = 4, vocab: int = 300) -> dict:
    """A few Python documentation topics as jsonl, and a small BPE tokenizer trained on them (also the corpus of
    benchmarks/gpu_timing.py's end-to-end smoke)."""
    from pydoc_data.topics import topics

    from lrnn_lm.training.corpus import build_tokenizer

    names = sorted(topics)[: n_train + n_val]
    root.mkdir(parents=True, exist_ok=True)
    train, val = root / "train.jsonl", root / "val.jsonl"
    for path, chunk in ((train, names[:n_train]), (val, names[n_train:])):
        with open(path, "w") as f:
            for name in chunk:
                f.write(json.dumps({"text": topics[name]}) + "\n")
    build_tokenizer(train, vocab, root=root)
    tok_dir = next(root.glob(f"bpe_{vocab}_*"))
    return {"train": train, "val": val, "tokenizer": tok_dir}


def data_args(corpus: dict) -> list[str]:
    return [
        f"--data.sources=[{{path: '{corpus['train']}'}}]",
        f"--data.validation=[{{path: '{corpus['val']}'}}]",
        f"--tokenizer.name_or_path={corpus['tokenizer']}",
    ]


# A 1-layer [-1,1] DeltaNet that learns parity of lengths 3-8 in 200 steps (well under a minute on CPU).
TINY_PARITY_ARGS = [
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
    "--logging.progress=false",
]


def run_train(args: list[str], launcher: list[str] | None = None, env: dict | None = None, timeout: int = 600):
    cmd = (launcher or [sys.executable]) + [str(ROOT / "train.py"), *args]
    full_env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)


def losses(metrics: Path) -> dict[int, float]:
    """Training loss per step; a step logged twice (re-run after a resume) keeps its last value."""
    out = {}
    for line in metrics.read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


def fake_checkpoint(root, step, run_id, world_size=1):
    """A checkpoint folder with accelerate's file names, finalized like train.py does."""
    tmp = root / f".tmp-{ckpt.checkpoint_name(step)}"
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"weights" * 100)
    (tmp / "optimizer.bin").write_bytes(b"adam" * 100)
    for r in range(world_size):
        (tmp / f"random_states_{r}.pkl").write_bytes(b"rng")
        (tmp / ckpt.trainer_state_name(r)).write_text(json.dumps({"step": step}))
    (tmp / ckpt.RUN_CONFIG).write_text("{}")
    ckpt.finalize(tmp, root / ckpt.checkpoint_name(step), step, {"run_id": run_id, "world_size": world_size})
    return root / ckpt.checkpoint_name(step)
