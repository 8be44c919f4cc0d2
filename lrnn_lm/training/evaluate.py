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


def evaluate_lengths(model, sets: dict[int, list[dict]], accelerator, answer_ids: list[int], chance: float) -> dict:
    """Task accuracy per length on the long validation stream (argmax over the answer tokens, on every target
    position), summed over all processes: ``long_val_acc_<L>``, ``long_val_scaled_acc_<L>`` and their means over
    the lengths, ``long_val_acc`` and ``long_val_scaled_acc``."""
    from ..tasks.metrics import correct_counts, scaled_accuracy

    model.eval()
    totals = torch.zeros(len(sets), 2, dtype=torch.float64)  # per length: correct, targets
    with torch.no_grad():
        for row, batches in enumerate(sets.values()):
            for batch in batches:
                ids = batch["input_ids"].to(accelerator.device)
                mask = batch["attention_mask"].to(accelerator.device)
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                correct, total = correct_counts(logits, batch["labels"].to(accelerator.device), answer_ids)
                totals[row] += torch.tensor([correct, total], dtype=torch.float64)
    model.train()
    totals = accelerator.reduce(totals.to(accelerator.device), "sum").cpu()
    record = {}
    for (length, _), (correct, total) in zip(sets.items(), totals.tolist()):
        acc = correct / total if total else float("nan")
        record[f"long_val_acc_{length}"] = acc
        record[f"long_val_scaled_acc_{length}"] = scaled_accuracy(acc, chance)
    for key in ("long_val_acc", "long_val_scaled_acc"):
        values = [record[f"{key}_{length}"] for length in sets]
        record[key] = sum(values) / len(values)
    return record


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
