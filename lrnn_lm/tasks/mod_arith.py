"""Modular arithmetic over Z_m (m = 5 by default), without and with brackets (Deletang et al. 2023 generators)."""

from __future__ import annotations

import random

from .base import IGNORE_INDEX, PAD, Example, Task


class _ModArithBase(Task):
    """Shared layout: ``expression = r`` with the loss on the answer ``r`` only."""

    brackets = False

    def __init__(self, modulus: int = 5) -> None:
        if not 2 <= modulus <= 10:
            raise ValueError(f"modulus must be in [2, 10] (single-token numbers), got {modulus}")
        self.modulus = modulus
        self.answer_tokens = [str(i) for i in range(modulus)]
        self.vocab = [PAD, *self.answer_tokens, "+", "-", "*", "="] + (["(", ")"] if self.brackets else [])
        self.chance = 1.0 / modulus

    def _wrap(self, tokens: list[str], value: int) -> Example:
        answer = self.token_id(str(value))
        input_ids = [self.token_id(t) for t in tokens] + [self.token_id("="), answer]
        labels = [IGNORE_INDEX] * (len(tokens) + 1) + [answer]
        return Example(input_ids, labels)


class ModArith(_ModArithBase):
    """``n_0 op n_1 op ... op n_k = r`` with numbers in Z_m, ops ``+ - *``, ``*`` binding tighter than ``+ -``
    (left to right otherwise), ``r`` the value mod m.

    ``length`` counts every token of the expression (numbers and operators, not ``=`` or ``r``), so only odd
    lengths are valid: an even request gives ``length - 1`` (as the Deletang et al. generator does), and
    requests below 1 give 1. The sequence has ``length + 2`` tokens.
    """

    name = "mod_arith"

    def __init__(self, modulus: int = 5) -> None:
        super().__init__(modulus)
        self.options = {"modulus": modulus}

    def default_options(self) -> dict:
        return {"modulus": 5}

    def valid_length(self, length: int) -> int:
        length = max(1, int(length))
        return length if length % 2 else length - 1

    def _generate(self, rng: random.Random, length: int) -> Example:
        numbers = [rng.randrange(self.modulus) for _ in range(length // 2 + 1)]
        ops = [rng.choice("+-*") for _ in range(length // 2)]
        tokens = [str(numbers[0])]
        for op, x in zip(ops, numbers[1:]):
            tokens += [op, str(x)]
        return self._wrap(tokens, self._evaluate(numbers, ops))

    def _evaluate(self, numbers: list[int], ops: list[str]) -> int:
        # A sum of signed products: '*' extends the current product, '+'/'-' closes it.
        total, sign, product = 0, 1, numbers[0]
        for op, x in zip(ops, numbers[1:]):
            if op == "*":
                product *= x
            else:
                total += sign * product
                sign, product = (1 if op == "+" else -1), x
        return (total + sign * product) % self.modulus


class ModArithBrackets(_ModArithBase):
    """Fully bracketed expressions ``(L op R)`` over Z_m with ops ``+ -`` (``mult=True`` adds ``*``), then ``= r``.

    ``length`` counts every token of the expression; every ``length >= 1`` is valid (requests below 1 give 1):
    lengths 1-4 are ``d``, ``- d``, ``( d )``, ``( - d )`` (unary minus), and a longer expression splits its
    length as ``(`` + left (uniform in ``[1, length - 4]``) + op + right + ``)``, as in Deletang et al.
    The sequence has ``length + 2`` tokens.
    """

    name = "mod_arith_brackets"
    brackets = True

    def __init__(self, modulus: int = 5, mult: bool = False) -> None:
        super().__init__(modulus)
        self.mult = bool(mult)
        self.options = {"modulus": modulus, "mult": self.mult}

    def default_options(self) -> dict:
        return {"modulus": 5, "mult": False}

    def valid_length(self, length: int) -> int:
        return max(1, int(length))

    def _generate(self, rng: random.Random, length: int) -> Example:
        tokens, value = self._expression(rng, length)
        return self._wrap(tokens, value)

    def _expression(self, rng: random.Random, length: int) -> tuple[list[str], int]:
        m = self.modulus
        if length <= 4:
            d = rng.randrange(m)
            return [[str(d)], ["-", str(d)], ["(", str(d), ")"], ["(", "-", str(d), ")"]][length - 1], (
                d if length in (1, 3) else -d % m
            )
        left_len = rng.randint(1, length - 4)
        left, a = self._expression(rng, left_len)
        right, b = self._expression(rng, length - 3 - left_len)
        op = rng.choice("+-*" if self.mult else "+-")
        value = {"+": a + b, "-": a - b, "*": a * b}[op] % m
        return ["(", *left, op, *right, ")"], value
