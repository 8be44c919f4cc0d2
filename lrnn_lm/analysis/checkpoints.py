"""Load a checkpoint written by ``train.py`` (or any ``save_pretrained`` folder) for evaluation."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

import lrnn_lm  # noqa: F401  (registers LRNNConfig / LRNNForCausalLM with the Auto classes: no remote code needed)


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def eval_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU (the training precision of the paper's models), fp32 on CPU where bf16 matmuls are slow."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class RemoteCodeRefused(ValueError):
    """A checkpoint asks to run its own Python code and the user did not allow it."""


class NotACheckpoint(ValueError):
    """A path given as a checkpoint is not a saved model folder; the message says what it is and what to give."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_checkpoint_folder(path: str | Path) -> None:
    """Refuse, before any loading, a path that is not a folder with a model config and tokenizer files (without
    this, transformers reads a missing path as a Hub repo id and a folder without tokenizer files as a request
    for sentencepiece)."""
    p = Path(path)
    hint = "give a folder saved by train.py (OUT/final) or by save_pretrained"
    if not p.exists():
        raise NotACheckpoint(f"checkpoint {path}: no such file or folder; {hint}")
    if not p.is_dir():
        raise NotACheckpoint(f"checkpoint {path}: a file, not a folder; {hint}")
    if not (p / "config.json").is_file():
        raise NotACheckpoint(f"checkpoint {path}: no config.json, so not a saved model; {hint}")
    if not any((p / name).is_file() for name in TOKENIZER_FILES):
        raise NotACheckpoint(
            f"checkpoint {path}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); OUT/final holds them, "
            "training checkpoints (OUT/checkpoints/step-*) do not"
        )


def load_checkpoint(
    path: str | Path, device: torch.device, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model in eval mode on ``device`` and its tokenizer, with ``pad = eos`` when no pad token is set.

    No code from the checkpoint runs unless ``trust_remote_code`` (the user's ``--trust-remote-code``): importing
    ``lrnn_lm`` (this module does) registers our classes with the Auto classes, so our own checkpoints need none.
    ``False`` is passed explicitly, so transformers refuses instead of prompting.
    """
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, trust_remote_code=trust_remote_code, dtype=eval_dtype(device)
        )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if trust_remote_code or "trust_remote_code" not in str(e):
            raise
        raise RemoteCodeRefused(
            f"{path} asks to run Python code it carries (an auto_map in config.json or tokenizer_config.json that "
            "is not lrnn_lm's own classes); not running it. Pass --trust-remote-code only if you trust that code."
        ) from e
    model = model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def describe(model: PreTrainedModel) -> str:
    """Short model description for tables, e.g. ``deltanet [-1,1] 2L d32``."""
    cfg = model.config
    mixers = sorted(set(getattr(cfg, "layer_mixers", [cfg.model_type])))
    eig = getattr(cfg, "eigval_range", "")
    return f"{'+'.join(mixers)} {eig} {cfg.num_hidden_layers}L d{cfg.hidden_size}".replace("  ", " ")
