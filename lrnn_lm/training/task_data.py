"""Batches of a state-tracking task for train.py: online, seeded, sharded per process, resumable."""

from __future__ import annotations

from dataclasses import dataclass

from .config import TaskConfig

# Validation examples use a seed no training run uses, so they are held out whatever the train seed.
VALIDATION_SEED_OFFSET = 1_000_003


@dataclass
class TaskBatches:
    """Yields collated batches of ``batch_size`` examples; example ``i`` of process ``rank`` has global
    index ``rank + world_size * i``, so processes never share an example and the state is one counter."""

    cfg: TaskConfig
    rank: int
    world_size: int
    batch_size: int
    next_local: int = 0

    def __post_init__(self) -> None:
        from ..tasks import get_task

        self.task = get_task(self.cfg.name, **self.cfg.options)

    def state_dict(self) -> dict:
        return {"next_local": self.next_local}

    def load_state_dict(self, state: dict) -> None:
        self.next_local = int(state["next_local"])

    def _example(self, seed: int, index: int):
        from ..tasks import sample_length

        length = sample_length(seed, index, self.cfg.min_len, self.cfg.max_len)
        return self.task.example(seed, index, length)

    def next_batch(self) -> dict:
        from ..tasks import collate

        examples = []
        for _ in range(self.batch_size):
            index = self.rank + self.world_size * self.next_local
            examples.append(self._example(self.cfg.seed, index))
            self.next_local += 1
        return collate(examples, self.task.pad_id)

    def validation_batches(self, num_batches: int) -> list[dict]:
        from ..tasks import collate

        seed = self.cfg.seed + VALIDATION_SEED_OFFSET
        batches = []
        for b in range(num_batches):
            idx = [self.rank + self.world_size * (b * self.batch_size + j) for j in range(self.batch_size)]
            batches.append(collate([self._example(seed, i) for i in idx], self.task.pad_id))
        return batches
