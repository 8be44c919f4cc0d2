"""``--device``: the kernel, model and generation tests run on ``cpu`` (the default) or ``cuda``.

On ``cuda`` they also test the ``triton`` and ``auto`` backends and bf16 inputs there, and the tests that only
make sense under the Triton interpreter are skipped. Asking for ``cuda`` where there is none is an error, never a
silent run on the CPU."""

from __future__ import annotations

import os

import pytest
import torch

from tests import device as test_device


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="device for the kernel, model and generation tests (default: cpu)",
    )


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--device")
    if name == "cuda":
        if os.environ.get("TRITON_INTERPRET") == "1":
            raise pytest.UsageError("--device cuda with TRITON_INTERPRET=1: the interpreter runs Triton on the CPU")
        if not torch.cuda.is_available():
            raise pytest.UsageError(
                "--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False, torch "
                f"{torch.__version__}); not running the tests on the CPU in its place. Use --device cpu."
            )
    test_device.set_device(name)


def pytest_report_header(config: pytest.Config) -> str:
    dev = test_device.device()
    what = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return f"lrnn-lm test device: {dev} ({what}); fast backends: {', '.join(test_device.fast_backends())}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not test_device.on_cuda():
        return
    skip = pytest.mark.skip(reason="Triton-interpreter test; on --device cuda the kernels run natively instead")
    for item in items:
        if "triton_interpret" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _on_device(request: pytest.FixtureRequest):
    """Tests marked ``on_device`` build their models and inputs on the ``--device`` device: torch's default device
    is set for the test's duration, so ``LRNNForCausalLM(config)`` and ``torch.randint(...)`` land there. (The
    kernel tests move their inputs explicitly instead: they draw them from CPU generators.)"""
    if request.node.get_closest_marker("on_device") is None or not test_device.on_cuda():
        yield
        return
    with test_device.device():
        yield


@pytest.fixture
def device() -> torch.device:
    """The device given with ``--device``."""
    return test_device.device()
