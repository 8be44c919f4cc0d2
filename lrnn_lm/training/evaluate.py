"""Validation for train.py: loss and next-token accuracy over fixed batches, and the unigram baseline."""

from __future__ import annotations

from collections import Counter

import torch

from .config import SourceConfig
from .data import TextPacker, build_text_dataset, unigram_loss


def evaluate(model, batches: list[dict], accelerator) -> dict:
    """Token-weighted validation loss and accuracy over ``batches``, summed over all processes."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, tokens, correct
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(accelerator.device) for k, v in batch.items() if k != "attention_mask"}
            out = model(**batch, use_cache=False)
            mask = batch["labels"][:, 1:] != -100
            n = mask.sum()
            pred = out.logits[:, :-1].argmax(-1)
            correct = (pred[mask] == batch["labels"][:, 1:][mask]).sum()
            totals += torch.stack([out.loss.double().cpu() * n.cpu(), n.cpu().double(), correct.cpu().double()])
    model.train()
    totals = accelerator.reduce(totals.to(accelerator.device), "sum").cpu()
    return {"val_loss": float(totals[0] / totals[1]), "val_acc": float(totals[2] / totals[1])}


def unigram_baseline(
    sources: list[SourceConfig], tokenizer, seq_len: int, seed: int, batches: list[dict], vocab_size: int
) -> float:
    """What a model that ignores context scores on ``batches``: the add-one unigram of (up to 2M tokens of)
    each training source."""
    counts: Counter = Counter()
    for source in sources:
        probe = TextPacker(build_text_dataset([source], 0, 1, seed, 0), tokenizer, seq_len, name=str(source.path))
        while probe.stats.epochs_completed == 0 and probe.stats.tokens < 2_000_000:
            counts.update(probe.next_row().tokens)
    val_tokens = [t for b in batches for t in b["input_ids"].flatten().tolist()]
    return unigram_loss(counts, val_tokens, vocab_size)
