"""FSDP2 on CPU: the closest real test of the FSDP path that Accelerate 1.15 can give on a CPU machine.

Accelerate does not run FSDP on CPU: with ``use_cpu: true`` an FSDP config silently becomes DDP (MULTI_CPU), and
train.py refuses that (see docs/reliability.md). This test runs what ``configs/accelerate/gpu_fsdp.yaml`` asks
Accelerate to do, with torch directly: ``fully_shard`` on every ``LRNNBlock`` and on the root of our model
(FSDP2, TRANSFORMER_BASED_WRAP), two CPU processes joined by gloo, AdamW, and a sharded checkpoint of model and
optimizer through ``torch.distributed.checkpoint`` (what SHARDED_STATE_DICT writes).

Run as a script (``torchrun --nproc_per_node 2 tests/test_run_safety_fsdp.py OUT PHASE``) it is the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS, SAVE_AT, GLOBAL_ROWS, SEQ = 8, 4, 4, 24
# Sharded and unsharded runs sum gradients in another order (reduce-scatter across processes), so fp32 losses
# agree to rounding only; the tolerance is far below any training effect (the loss moves by ~1e-1 over 8 steps).
LOSS_TOL = 1e-5


def make_model():
    from lrnn_lm import LRNNConfig, LRNNForCausalLM

    torch.manual_seed(0)
    cfg = LRNNConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_heads=2, intermediate_size=64,
        mixer="deltanet", eigval_range="[-1,1]",
    )  # fmt: skip
    return LRNNForCausalLM(cfg)


def global_batch(step: int) -> torch.Tensor:
    """Counting sequences from random starts (next token = this one + 1): learnable in a few steps."""
    g = torch.Generator().manual_seed(1000 + step)
    starts = torch.randint(0, 63, (GLOBAL_ROWS, 1), generator=g)
    return (starts + torch.arange(SEQ)) % 63 + 1


def train_steps(model, optimizer, steps, rank=0, world=1) -> list[float]:
    """Each process trains on its rows of the global batch; the logged loss is the mean over processes."""
    losses = []
    for step in steps:
        ids = global_batch(step)[rank::world]
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.detach().clone()
        if world > 1:
            torch.distributed.all_reduce(value)
            value /= world
        losses.append(float(value))
    return losses


def worker(out: Path, phase: str) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model = make_model()
    for module in model.modules():  # TRANSFORMER_BASED_WRAP with fsdp_transformer_layer_cls_to_wrap: LRNNBlock
        if type(module).__name__ == "LRNNBlock":
            fully_shard(module)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sharded = all(type(p).__name__ == "DTensor" for p in model.parameters())
    if phase == "full":
        losses = train_steps(model, optimizer, range(SAVE_AT), rank, world)
        msd, osd = get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(out / "ckpt"))
        losses += train_steps(model, optimizer, range(SAVE_AT, STEPS), rank, world)
    else:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=str(out / "ckpt"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        losses = train_steps(model, optimizer, range(SAVE_AT, STEPS), rank, world)
    shard_files = sorted(p.name for p in (out / "ckpt").glob("*.distcp"))
    if rank == 0:
        (out / f"{phase}.json").write_text(json.dumps({"losses": losses, "sharded": sharded, "files": shard_files}))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_on_cpu_matches_one_process_and_its_sharded_checkpoint_resumes_exactly(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for phase in ("full", "resume"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        r = subprocess.run([*cmd, __file__, str(tmp_path), phase], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    full = json.loads((tmp_path / "full.json").read_text())
    resumed = json.loads((tmp_path / "resume.json").read_text())
    assert full["sharded"] and full["files"] == ["__0_0.distcp", "__1_0.distcp"]  # one shard file per process
    assert resumed["losses"] == full["losses"][SAVE_AT:]  # bit for bit

    model = make_model()  # the same init and global batches in one process, no sharding
    reference = train_steps(model, torch.optim.AdamW(model.parameters(), lr=1e-2), range(STEPS))
    deviation = max(abs(a - b) for a, b in zip(full["losses"], reference))
    print(f"FSDP2 vs one process: max |loss difference| over {STEPS} steps = {deviation:.2e}")
    assert deviation < LOSS_TOL, (full["losses"], reference)
    assert reference[-1] < reference[0] - 0.5  # it trains


CPU_FSDP_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
use_cpu: true
num_processes: 2
num_machines: 1
machine_rank: 0
mixed_precision: "no"
rdzv_backend: static
same_network: true
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LRNNBlock
  fsdp_state_dict_type: SHARDED_STATE_DICT
  fsdp_reshard_after_forward: true
dynamo_config: {}
"""


@pytest.mark.slow
def test_train_py_refuses_an_fsdp_launch_that_accelerate_runs_as_ddp_on_cpu(tmp_path):
    """Accelerate 1.15 turns an FSDP config with use_cpu into DDP without a word; train.py stops instead."""
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "fsdp.yaml").write_text(CPU_FSDP_CONFIG)
    cmd = ["accelerate", "launch", "--config_file", str(tmp_path / "fsdp.yaml"), str(root / "train.py")]
    cmd += ["--data.task={name: parity, min_len: 3, max_len: 8}", f"--out_dir={tmp_path / 'out'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=root)
    assert r.returncode != 0
    assert "asked for FSDP but Accelerate set up MULTI_CPU" in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "out").exists()


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2])
