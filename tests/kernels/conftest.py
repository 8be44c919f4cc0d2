"""Fixtures for the kernel tests: Triton interpreter shims for fla, active only under TRITON_INTERPRET=1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:  # tests/ as a package
    from .triton_interpreter import interpreter_shims
except ImportError:  # pytest's default import of a conftest that is not inside a package
    from triton_interpreter import interpreter_shims


@pytest.fixture
def triton_interpreter_shims() -> Iterator[bool]:
    """Patch the Triton interpreter/autotuner for one test so fla's kernels run on CPU; restored afterwards."""
    with interpreter_shims() as enabled:
        yield enabled
