"""Parity: random bits, then ``=``, then the parity of the number of ones."""

from __future__ import annotations

import random

from .base import IGNORE_INDEX, PAD, Example, Task


class Parity(Task):
    """``b_1 ... b_n = p`` with ``p = (number of ones) mod 2``; the loss sits on ``p`` only.

    ``length`` is the number of bits ``n`` (every ``n >= 1`` is valid; smaller requests give 1). The sequence
    has ``n + 2`` tokens. Answers reuse the bit tokens ``0`` / ``1``.
    """

    name = "parity"
    vocab = [PAD, "0", "1", "="]
    chance = 0.5
    answer_tokens = ["0", "1"]

    def __init__(self) -> None:
        self.options = {}

    def valid_length(self, length: int) -> int:
        return max(1, int(length))

    def _generate(self, rng: random.Random, length: int) -> Example:
        bits = [rng.randint(0, 1) for _ in range(length)]
        answer = self.token_id(str(sum(bits) % 2))
        input_ids = [self.token_id(str(b)) for b in bits] + [self.token_id("="), answer]
        labels = [IGNORE_INDEX] * (length + 1) + [answer]
        return Example(input_ids, labels)
