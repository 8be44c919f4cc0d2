"""Permutation-group word problems: S_n, A_n and the cyclic control Z_m, with the S5 variants of Grazzi et al.

Composition order: a permutation is a tuple ``p`` with ``p[i]`` the image of ``i``, and
``(a . b)[i] = b[a[i]]``: ``a`` is applied first. The state after reading ``g_1 ... g_t`` is
``s_t = g_1 . g_2 . ... . g_t`` (apply ``g_1``, then ``g_2``, ...), so ``s_t = s_{t-1} . g_t``.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import cache

from .base import IGNORE_INDEX, PAD, Example, Task

Perm = tuple[int, ...]
END = "="


def compose(a: Perm, b: Perm) -> Perm:
    """``a . b``: apply ``a`` first, then ``b``."""
    return tuple(b[x] for x in a)


def sign(p: Perm) -> int:
    inversions = sum(p[i] > p[j] for i in range(len(p)) for j in range(i + 1, len(p)))
    return -1 if inversions % 2 else 1


def transpositions(g: Perm) -> list[Perm]:
    """Transpositions ``t_1, ..., t_k`` (``k = n - #cycles <= n - 1``) with ``t_1 . ... . t_k = g``."""
    identity = tuple(range(len(g)))
    found, rest = [], g
    while rest != identity:
        # rest = rest' . (i j) with rest' = rest . (i j) fixing i and every point rest fixes.
        i = next(x for x in range(len(g)) if rest[x] != x)
        swap = list(identity)
        swap[i], swap[rest[i]] = rest[i], i
        found.append(tuple(swap))
        rest = compose(rest, found[-1])
    return found[::-1]


@dataclass(frozen=True)
class Group:
    """A finite permutation group: ``elements[k]`` has the token name ``names[k]``; ``table[a][b]`` is the index
    of ``elements[a] . elements[b]``."""

    elements: tuple[Perm, ...]
    names: tuple[str, ...]
    table: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, elements: list[Perm], names: list[str]) -> Group:
        index = {p: k for k, p in enumerate(elements)}
        table = tuple(tuple(index[compose(a, b)] for b in elements) for a in elements)
        return cls(tuple(elements), tuple(names), table)

    @property
    def order(self) -> int:
        return len(self.elements)


@cache
def symmetric_group(n: int) -> Group:
    """S_n in lexicographic order; names are one-line notation, e.g. ``"10234"`` swaps 0 and 1."""
    elements = list(itertools.permutations(range(n)))
    return Group.build(elements, ["".join(map(str, p)) for p in elements])


@cache
def alternating_group(n: int) -> Group:
    elements = [p for p in itertools.permutations(range(n)) if sign(p) == 1]
    return Group.build(elements, ["".join(map(str, p)) for p in elements])


@cache
def cyclic_group(m: int) -> Group:
    """Z_m as the rotations ``i -> i + k mod m`` of m points; rotation ``k`` is named ``str(k)``."""
    elements = [tuple((i + k) % m for i in range(m)) for k in range(m)]
    return Group.build(elements, [str(k) for k in range(m)])


class GroupTask(Task):
    """Word problem: input ``g_1 ... g_n =``, labels ``[-100, s_1, ..., s_n]``, so the logits after reading
    ``g_t`` predict the running product ``s_t``; the trailing ``=`` carries no target.

    ``length`` is the number of element tokens ``n``. With ``spell=True`` each sampled element ``g`` is written
    as ``k = degree - 1`` tokens: its :func:`transpositions` in application order, padded with the identity at
    the end (their product is ``g``). Then ``length`` counts those tokens, rounds down to a multiple of ``k``
    (at least ``k``), and only the last token of each element carries a target: the running product of the
    whole elements so far. Vocabulary: ``<pad>``, the group's element names, ``=``; chance is 1 / |G|.
    """

    def __init__(self, name: str, group: Group, generator_ids: list[int], spell: bool = False, **options) -> None:
        self.name, self.group, self.generator_ids = name, group, generator_ids
        self.spell = bool(spell)
        self.options = dict(options, spell=self.spell)
        self.vocab = [PAD, *group.names, END]
        self.answer_tokens = list(group.names)
        self.chance = 1.0 / group.order
        degree = len(group.elements[0])
        self.tokens_per_element = degree - 1 if self.spell else 1
        if self.spell:
            index = {p: k for k, p in enumerate(group.elements)}
            identity = index[tuple(range(degree))]
            self._spelling = [self._spell(g, index, identity) for g in group.elements]

    def default_options(self) -> dict:
        return {"generators": "all", "spell": False}

    def _spell(self, g: Perm, index: dict[Perm, int], identity: int) -> list[int]:
        ts = [index[t] for t in transpositions(g)]
        return ts + [identity] * (self.tokens_per_element - len(ts))

    def valid_length(self, length: int) -> int:
        k = self.tokens_per_element
        return max(k, int(length) // k * k)

    def _generate(self, rng: random.Random, length: int) -> Example:
        k, table = self.tokens_per_element, self.group.table
        elements = [rng.choice(self.generator_ids) for _ in range(length // k)]
        input_ids, labels = [], [IGNORE_INDEX]
        state = None
        for g in elements:
            state = g if state is None else table[state][g]
            tokens = self._spelling[g] if self.spell else [g]
            input_ids += [1 + t for t in tokens]  # element k has token id 1 + k (id 0 is <pad>)
            labels += [IGNORE_INDEX] * (k - 1) + [1 + state]
        return Example(input_ids + [self.token_id(END)], labels)


S5_GENERATORS = ("all", "swaps", "swaps_3cycles")


def _cycle_type_filter(group: Group, supports: tuple[int, ...]) -> list[int]:
    """Indices of the elements that move exactly ``s`` points for some ``s`` in ``supports``."""
    return [k for k, p in enumerate(group.elements) if sum(p[i] != i for i in range(len(p))) in supports]


def symmetric_task(n: int, generators: str = "all", spell: bool = False) -> GroupTask:
    """S_n. ``generators``: ``"all"`` (uniform over S_n), ``"swaps"`` (transpositions only) or
    ``"swaps_3cycles"`` (transpositions and 3-cycles); ``spell``: each element over ``n - 1`` tokens.

    Chance stays 1 / n! for every variant, although with ``"swaps"`` the sign of ``s_t`` is fixed by ``t``
    (only n!/2 states are possible at each position).
    """
    if generators not in S5_GENERATORS:
        raise ValueError(f"generators must be one of {S5_GENERATORS}, got {generators!r}")
    group = symmetric_group(n)
    if generators == "all":
        gens = list(range(group.order))
    else:
        # A permutation moving exactly 2 points is a transposition; moving exactly 3 is a 3-cycle.
        gens = _cycle_type_filter(group, (2,) if generators == "swaps" else (2, 3))
    return GroupTask(f"s{n}", group, gens, spell=spell, generators=generators)


def alternating_task(n: int) -> GroupTask:
    group = alternating_group(n)
    return GroupTask(f"a{n}", group, list(range(group.order)))


def cyclic_task(m: int = 60) -> GroupTask:
    """Z_m, the abelian control (Z_60 has the order of A5)."""
    group = cyclic_group(m)
    return GroupTask(f"z{m}", group, list(range(group.order)))
