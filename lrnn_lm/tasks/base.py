"""Task, Example, seeded RNG, training-length sampling and batch collation shared by every state-tracking task.

Label convention (HF causal LM): ``labels[i]`` is the target of the logits at position ``i - 1``; the model
shifts internally. ``-100`` marks positions without a loss.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100
PAD = "<pad>"


@dataclass(frozen=True)
class Example:
    """One sequence: ``input_ids`` and ``labels`` have equal length; ``labels[i]`` is predicted at ``i - 1``."""

    input_ids: list[int]
    labels: list[int]


def seeded_rng(*key: Any) -> random.Random:
    """A ``random.Random`` seeded from a stable hash of ``key`` (``hash()`` is salted per process, so not used)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def sample_length(seed: int, index: int, min_len: int, max_len: int) -> int:
    """Training length of example ``index``: uniform in ``[min_len, max_len]``, a pure function of its arguments."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    return seeded_rng("length", seed, index, min_len, max_len).randint(min_len, max_len)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples to ``[batch, max_len]`` LongTensors ``input_ids`` (``pad_id``),
    ``labels`` (``-100``) and ``attention_mask`` (1 = token, 0 = padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Task(ABC):
    """A sequence task with its own vocabulary (token id = index in ``vocab``; id 0 is ``<pad>``).

    Subclasses set ``name``, ``vocab``, ``chance``, ``answer_tokens`` (the choices offered by :meth:`render`)
    and ``options`` (every generator option, resolved, so that the data depend on them), and implement
    :meth:`valid_length` and :meth:`_generate`.
    """

    name: str
    vocab: list[str]
    chance: float
    answer_tokens: list[str]
    options: dict[str, Any]
    pad_id: int = 0

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def label(self) -> str:
        """Display name: the task name, plus the options that differ from the defaults."""
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()) if v != self.default_options().get(k))
        return f"{self.name}[{extra}]" if extra else self.name

    def default_options(self) -> dict[str, Any]:
        return {}

    @property
    def answer_ids(self) -> list[int]:
        """Token ids of the possible answers (the classes scored by the metrics and offered by :meth:`render`)."""
        return [self.token_id(t) for t in self.answer_tokens]

    def token_id(self, token: str) -> int:
        return self._ids()[token]

    def _ids(self) -> dict[str, int]:
        if getattr(self, "_id_cache", None) is None:
            self._id_cache = {t: i for i, t in enumerate(self.vocab)}
        return self._id_cache

    @abstractmethod
    def valid_length(self, length: int) -> int:
        """The problem length actually generated for a requested ``length`` (see each task's docstring)."""

    @abstractmethod
    def _generate(self, rng: random.Random, length: int) -> Example:
        """Draw one example of valid ``length`` from ``rng``."""

    def example(self, seed: int, index: int, length: int, split: str = "train") -> Example:
        """Example ``index`` of the stream ``seed``: a pure function of (task, options, split, seed, index, length).

        ``split`` separates streams, so a test set never shares a generator stream with training data even
        when the seeds coincide (short problems can still repeat by chance: there are only 2^8 parity strings
        of length 8).
        """
        length = self.valid_length(length)
        rng = seeded_rng(self.name, sorted(self.options.items()), split, seed, index, length)
        return self._generate(rng, length)

    def decode(self, ids: list[int]) -> list[str]:
        return [self.vocab[i] for i in ids]

    def render(self, example: Example) -> tuple[str, str, list[str]]:
        """``(context_text, answer_text, choices)`` for the final answer, tokens joined by spaces.

        The context ends with the token whose logits predict the answer, so a loglikelihood of
        ``" " + answer`` given the context scores the same prediction the task trains on.
        """
        last = max(i for i, y in enumerate(example.labels) if y != IGNORE_INDEX)
        context = " ".join(self.decode(example.input_ids[:last]))
        return context, self.vocab[example.labels[last]], list(self.answer_tokens)
