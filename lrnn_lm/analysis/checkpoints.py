"""Load a checkpoint written by ``train.py`` (or any ``save_pretrained`` folder) for evaluation."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def eval_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU (the training precision of the paper's models), fp32 on CPU where bf16 matmuls are slow."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model in eval mode on ``device`` and its tokenizer, with ``pad = eos`` when no pad token is set.

    ``trust_remote_code`` loads through the shims ``save_pretrained`` writes, exactly as the lm_eval CLI does.
    """
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=eval_dtype(device))
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def describe(model: PreTrainedModel) -> str:
    """Short model description for tables, e.g. ``deltanet [-1,1] 2L d32``."""
    cfg = model.config
    mixers = sorted(set(getattr(cfg, "layer_mixers", [cfg.model_type])))
    eig = getattr(cfg, "eigval_range", "")
    return f"{'+'.join(mixers)} {eig} {cfg.num_hidden_layers}L d{cfg.hidden_size}".replace("  ", " ")
