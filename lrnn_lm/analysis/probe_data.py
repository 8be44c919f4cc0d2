"""State-tracking sequences rendered as text, with the running state to read out after each element.

A sequence is a list of task tokens ("pieces") shown as text joined by single spaces, the format of
:meth:`lrnn_lm.tasks.Task.render` and of the lm-eval tasks. Each piece has a label, the class of the running
state after it, or None where no state is defined:

- parity: parity of the bits so far;
- groups (s3, s5, a5, z60, ...): the running product ``s_t`` (the task's own per-position targets);
- mod_arith: the value of the expression read so far, at every number (a prefix ending at a number is a
  complete expression); operators carry no label;
- mod_arith_brackets: only the final answer, at the ``=`` token (open brackets leave no value defined).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks import IGNORE_INDEX, Task, get_task
from ..tasks.groups import GroupTask
from ..tasks.mod_arith import ModArith, ModArithBrackets
from ..tasks.parity import Parity

LABEL_MEANING = {
    "parity": "parity of the bits so far",
    "group": "running product s_t",
    "mod_arith": "value of the expression so far (at numbers)",
    "mod_arith_brackets": "final answer (at '=')",
}


@dataclass(frozen=True)
class ProbeSequence:
    pieces: list[str]
    labels: list[int | None]


def label_meaning(task: Task) -> str:
    return LABEL_MEANING["group"] if isinstance(task, GroupTask) else LABEL_MEANING[task.name]


def probe_sequence(task: Task, seed: int, index: int, length: int, split: str) -> ProbeSequence:
    """Sequence ``index`` of problem ``length`` from the task's generator stream ``(split, seed)``."""
    example = task.example(seed, index, length, split=split)
    tokens = task.decode(example.input_ids)
    classes = {tok: c for c, tok in enumerate(task.answer_tokens)}
    if isinstance(task, Parity):
        bits = tokens[:-2]  # drop "=" and the answer
        parity = [sum(b == "1" for b in bits[: i + 1]) % 2 for i in range(len(bits))]
        return ProbeSequence(bits, [classes[str(p)] for p in parity])
    if isinstance(task, GroupTask):
        # labels[i + 1] is the running product after input token i; the trailing "=" carries no target.
        pieces = tokens[:-1]
        targets = example.labels[1 : len(pieces) + 1]
        return ProbeSequence(pieces, [None if y == IGNORE_INDEX else classes[task.vocab[y]] for y in targets])
    if isinstance(task, ModArithBrackets):
        pieces = tokens[:-1]  # the expression and "="
        return ProbeSequence(pieces, [None] * (len(pieces) - 1) + [classes[tokens[-1]]])
    if isinstance(task, ModArith):
        pieces = tokens[:-2]
        return ProbeSequence(pieces, [None if v is None else classes[str(v)] for v in _prefix_values(pieces, task)])
    raise ValueError(f"no probe labels defined for task {task.name!r}")


def _prefix_values(tokens: list[str], task: ModArith) -> list[int | None]:
    """Value mod m of the expression ending at each number; None at operators.

    The expression is a sum of signed products ('*' binds tighter), so the state is (sum of closed products,
    sign of the open product, open product), and the prefix value is ``total + sign * product``.
    """
    m = task.modulus
    values: list[int | None] = []
    total, sign, product, op = 0, 1, None, None
    for tok in tokens:
        if tok in ("+", "-", "*"):
            op = tok
            values.append(None)
            continue
        x = int(tok)
        if product is None:
            product = x
        elif op == "*":
            product *= x
        else:
            total += sign * product
            sign, product = (1 if op == "+" else -1), x
        values.append((total + sign * product) % m)
    return values


def probe_sequences(name: str, num: int, min_len: int, max_len: int, split: str, seed: int = 0):
    """``(task, [ProbeSequence])``: ``num`` sequences with lengths cycling through ``[min_len, max_len]``."""
    task = get_task(name)
    span = max_len - min_len + 1
    return task, [probe_sequence(task, seed, i, min_len + i % span, split) for i in range(num)]
