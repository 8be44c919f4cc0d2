"""State-tracking tasks (parity, modular arithmetic, permutation groups): seeded online generators, collation and
metrics. The experiments that use them (evaluation, sweeps, lm-eval export) live in :mod:`lrnn_lm.experiments`."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from .base import IGNORE_INDEX, Example, Task, collate, sample_length
from .groups import alternating_task, cyclic_task, symmetric_task
from .mod_arith import ModArith, ModArithBrackets
from .parity import Parity

TASKS: dict[str, Callable[..., Task]] = {
    "parity": Parity,
    "mod_arith": ModArith,  # options: modulus=5
    "mod_arith_brackets": ModArithBrackets,  # options: modulus=5, mult=False
    "s3": partial(symmetric_task, 3),  # options: generators="all"|"swaps"|"swaps_3cycles", spell=False
    "s5": partial(symmetric_task, 5),  # same options; spell=True writes each permutation over 4 tokens
    "a5": partial(alternating_task, 5),
    "z60": partial(cyclic_task, 60),
    "cyclic": cyclic_task,  # options: m=60; the task is then named z{m}
}


def get_task(name: str, **options) -> Task:
    """The task ``name`` (a key of ``TASKS``, or ``z<m>`` for any cyclic group) built with ``options``."""
    if name in TASKS:
        return TASKS[name](**options)
    match = re.fullmatch(r"z(\d+)", name)
    if match:
        return cyclic_task(int(match.group(1)), **options)
    raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)} or z<m>")


__all__ = ["IGNORE_INDEX", "TASKS", "Example", "Task", "collate", "get_task", "sample_length"]
