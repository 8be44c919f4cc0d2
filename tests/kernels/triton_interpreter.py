"""Shims that let fla's autotuned Triton kernels run on CPU under ``TRITON_INTERPRET=1`` (tests only).

See ``docs/triton_on_cpu.md``. They patch Triton's interpreter and autotuner, never library code, and
do nothing unless ``TRITON_INTERPRET=1``:

1. The autotuner benchmarks every config, which needs a GPU driver; under the interpreter keep the first one.
2. The interpreter leaves ``for i in range(...)`` loop variables as Python ints, while fla calls
   ``i.to(tl.int64)``; re-bind the loop variable as a Triton tensor at the top of each loop body.

Our own kernels (``lrnn_lm.kernels.selective_scan.triton``) must run without them, so the shims are applied
only around the tests that call fla (:func:`interpreter_shims` restores the originals on exit).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from contextlib import contextmanager


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def interpreter_only_marks(fla_shims: bool) -> list:
    """``pytestmark`` for a test file that runs Triton kernels on CPU tensors: marked ``triton_interpret`` (CI's
    second step), skipped unless ``TRITON_INTERPRET=1`` was set before triton was imported, and, for files that
    call fla's kernels (``fla_shims``), run inside the ``triton_interpreter_shims`` fixture."""
    import pytest

    marks = [
        pytest.mark.triton_interpret,
        pytest.mark.skipif(
            not interpreter_enabled(),
            reason="needs TRITON_INTERPRET=1 set before triton is imported: "
            "TRITON_INTERPRET=1 python -m pytest -m triton_interpret tests/kernels",
        ),
    ]
    if fla_shims:
        marks.append(pytest.mark.usefixtures("triton_interpreter_shims"))
    return marks


def _first_config_only(original):
    def prune_configs(self, kwargs, *args, **kw):
        return original(self, kwargs, *args, **kw)[:1]

    return prune_configs


def _visit_for_rebinding_target(self, node):
    node = self.generic_visit(node)
    if isinstance(node.target, ast.Name):
        rebind = ast.Assign(
            targets=[ast.Name(id=node.target.id, ctx=ast.Store())],
            value=ast.Name(id=node.target.id, ctx=ast.Load()),
        )
        rebind = self.visit_Assign(rebind)
        ast.copy_location(rebind, node.body[0])
        ast.fix_missing_locations(rebind)
        node.body.insert(0, rebind)
    return node


@contextmanager
def interpreter_shims() -> Iterator[bool]:
    """Apply both shims for the duration of the block; yields whether the interpreter is enabled."""
    if not interpreter_enabled():
        yield False
        return
    from triton.runtime import autotuner, interpreter

    saved_prune = autotuner.Autotuner.prune_configs
    had_visit_for = "visit_For" in vars(interpreter.ASTTransformer)
    saved_visit_for = vars(interpreter.ASTTransformer).get("visit_For")
    autotuner.Autotuner.prune_configs = _first_config_only(saved_prune)
    interpreter.ASTTransformer.visit_For = _visit_for_rebinding_target
    try:
        yield True
    finally:
        autotuner.Autotuner.prune_configs = saved_prune
        if had_visit_for:
            interpreter.ASTTransformer.visit_For = saved_visit_for
        else:
            del interpreter.ASTTransformer.visit_For
