"""Process-level helpers for train.py: the Accelerator, the multi-process trap, seeds, signals, MFU."""

from __future__ import annotations

import os
import signal

import torch

# Dense bf16 peak FLOP/s, for the MFU estimate on GPUs.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


def make_accelerator(precision: str, trackers: list[str], project_dir: str):
    """An Accelerator that uses gloo on CPU-only machines (so ``--multi_gpu`` really gives several processes)."""
    from accelerate import Accelerator

    on_gpu = torch.cuda.is_available()
    mixed = "bf16" if precision == "bf16" or (precision == "auto" and on_gpu) else "no"
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision=mixed, log_with=trackers or None, project_dir=project_dir)
    check_world_size(accelerator.num_processes)
    check_fsdp(accelerator.distributed_type.value)
    return accelerator


class LaunchError(RuntimeError):
    """The launcher asked for something this process did not get; the message says what and what to do."""


def check_fsdp(distributed_type: str) -> None:
    """Refuse an FSDP launch that Accelerate quietly turned into something else.

    Accelerate 1.15 enables FSDP only for GPU-like device types: on CPU (``use_cpu: true`` or
    ``Accelerator(cpu=True)``) an FSDP config runs as DDP (``MULTI_CPU``), with full replicas and full checkpoints.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and distributed_type != "FSDP":
        raise LaunchError(
            f"the launcher asked for FSDP but Accelerate set up {distributed_type}: Accelerate does not run FSDP on "
            "CPU (with use_cpu it falls back to DDP, unsharded). On CPU use configs/accelerate/cpu_ddp_2proc.yaml; "
            "FSDP needs GPUs (configs/accelerate/gpu_fsdp.yaml)."
        )


def check_world_size(num_processes: int) -> None:
    """Refuse the silent case where a launcher started several processes but each sees world size 1.

    ``accelerate launch --multi_gpu`` on a CPU machine without ``ACCELERATE_USE_CPU=true`` (or without
    ``Accelerator(cpu=True)``) starts N independent single-process jobs that would each train alone.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if num_processes == 1 and env_world > 1:
        raise RuntimeError(
            f"launcher says WORLD_SIZE={env_world} (LOCAL_RANK={os.environ.get('LOCAL_RANK')}) but this process "
            "sees a world of 1: the processes are not joined and would train separately. On CPU use "
            "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N train.py "
            "(or --config_file configs/accelerate/cpu_ddp_2proc.yaml)."
        )


def mfu(tokens_per_s: float, n_params: int) -> float | None:
    """Model FLOPs utilisation with the 6 * params FLOPs-per-token rule; None off CUDA or on an unknown GPU."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return None if peak is None else 6 * n_params * tokens_per_s / peak


class StopFlag:
    """Set by SIGTERM or SIGINT; the loop checkpoints and exits cleanly at the end of the step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum

    def __bool__(self) -> bool:
        return self.signal is not None


class NonFiniteError(RuntimeError):
    """Too many non-finite steps in a row; the message names the step, the parameter groups and what to do."""


def nonfinite_groups(optimizer) -> list[str]:
    """Names of the parameter groups holding a NaN or Inf gradient."""
    bad = []
    for group in optimizer.param_groups:
        if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in group["params"]):
            bad.append(group.get("group", "?"))
    return bad
