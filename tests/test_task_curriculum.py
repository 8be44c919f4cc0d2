"""The length curriculum of task training (``data.task.curriculum_steps``): the longest training length grows
linearly from ``min_len`` to ``max_len`` with the optimizer step, and resuming mid-ramp gives the same batches."""

from __future__ import annotations

import pytest
import torch

from lrnn_lm.training.config import ConfigError, TaskConfig, load_config
from lrnn_lm.training.task_data import TaskBatches


def batches(curriculum_steps: int, **kw) -> TaskBatches:
    cfg = TaskConfig(name="parity", min_len=3, max_len=40, seed=5, curriculum_steps=curriculum_steps)
    return TaskBatches(cfg, rank=0, world_size=1, batch_size=8, **kw)


def lengths(batch: dict) -> list[int]:
    return batch["attention_mask"].sum(1).tolist()


def test_the_longest_length_ramps_with_the_step():
    data = batches(10)
    assert [data.longest_at(8 * step) for step in (0, 1, 5, 9, 10, 50)] == [3, 6, 21, 36, 40, 40]
    steps = [lengths(data.next_batch()) for _ in range(12)]
    # a parity sequence is its bits, '=' and the answer: two tokens more than its length
    assert set(steps[0]) == {5}
    assert max(steps[5]) <= 23 and max(max(s) for s in steps[10:]) > 23


def test_accumulation_counts_optimizer_steps():
    data = batches(10, micro_batches_per_step=2)
    assert data.longest_at(8 * 2 * 5) == data.longest_at(8 * 2 * 5 + 15) == 21


def test_off_by_default_and_resume_is_exact():
    assert batches(0).longest_at(0) == 40
    first = batches(10)
    for _ in range(4):
        first.next_batch()
    resumed = batches(10)
    resumed.load_state_dict(first.state_dict())
    for _ in range(3):
        a, b = first.next_batch(), resumed.next_batch()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value", [-1, 2.5])
def test_a_bad_curriculum_is_refused_by_name(value):
    with pytest.raises(ConfigError, match="data.task.curriculum_steps"):
        load_config(["--data.task.name=parity", f"--data.task.curriculum_steps={value}"])
