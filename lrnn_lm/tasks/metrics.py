"""Accuracy on target positions with the HF causal-LM shift (logits[:, :-1] are scored against labels[:, 1:]).

Every function takes ``answer_ids``: when given, the argmax runs over those token ids only (a task's possible
answers), as a classifier head over the answer classes would; chance level then means what it says.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import IGNORE_INDEX


def _shifted_hits(
    logits: torch.Tensor, labels: torch.Tensor, answer_ids: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hit, mask)``, both bool ``[batch, T - 1]``: argmax correct, and position carries a target."""
    logits = logits[:, :-1]
    if answer_ids is not None:
        allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        allowed[list(answer_ids)] = True
        logits = logits.masked_fill(~allowed, float("-inf"))
    pred = logits.argmax(dim=-1)
    target = labels[:, 1:].to(pred.device)
    mask = target != IGNORE_INDEX
    return (pred == target) & mask, mask


def correct_counts(
    logits: torch.Tensor, labels: torch.Tensor, answer_ids: Sequence[int] | None = None
) -> tuple[int, int]:
    """``(correct, total)`` over every target position; ``logits [batch, T, V]``, ``labels [batch, T]``."""
    hit, mask = _shifted_hits(logits, labels, answer_ids)
    return int(hit.sum()), int(mask.sum())


def accuracy(logits: torch.Tensor, labels: torch.Tensor, answer_ids: Sequence[int] | None = None) -> float:
    """Argmax accuracy over every target position (labels != -100); NaN when there is none."""
    correct, total = correct_counts(logits, labels, answer_ids)
    return correct / total if total else float("nan")


def final_answer_hits(
    logits: torch.Tensor, labels: torch.Tensor, answer_ids: Sequence[int] | None = None
) -> torch.Tensor:
    """Bool ``[batch]``: is the last target of each sequence predicted correctly. Every row needs a target."""
    hit, mask = _shifted_hits(logits, labels, answer_ids)
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every sequence needs at least one target position")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1)
    return hit.gather(1, last[:, None]).squeeze(1)


def final_answer_accuracy(logits: torch.Tensor, labels: torch.Tensor, answer_ids: Sequence[int] | None = None) -> float:
    """Fraction of sequences whose final answer (last target) is right: the paper's Table 3 metric."""
    return float(final_answer_hits(logits, labels, answer_ids).float().mean())


def scaled_accuracy(acc: float, chance: float) -> float:
    """``(acc - chance) / (1 - chance)``: 0 at chance level, 1 when perfect (negative below chance)."""
    return (acc - chance) / (1.0 - chance)
