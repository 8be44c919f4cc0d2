"""Batches of a state-tracking task for train.py: online, seeded, sharded per process, resumable."""

from __future__ import annotations

from dataclasses import dataclass

from .config import TaskConfig


@dataclass
class TaskBatches:
    """Yields collated batches of ``batch_size`` examples; example ``i`` of process ``rank`` has global
    index ``rank + world_size * i``, so processes never share an example and the state is one counter."""

    cfg: TaskConfig
    rank: int
    world_size: int
    batch_size: int
    next_local: int = 0
    micro_batches_per_step: int = 1  # gradient accumulation: what turns an example's index into its step

    def __post_init__(self) -> None:
        from ..tasks import get_task

        self.task = get_task(self.cfg.name, **self.cfg.options)

    def state_dict(self) -> dict:
        return {"next_local": self.next_local}

    def load_state_dict(self, state: dict) -> None:
        self.next_local = int(state["next_local"])

    def _example(self, index: int, split: str, longest: int | None = None):
        from ..tasks import sample_length

        length = sample_length(self.cfg.seed, index, self.cfg.min_len, longest or self.cfg.max_len)
        return self.task.example(self.cfg.seed, index, length, split=split)

    def longest_at(self, local: int) -> int:
        """The longest training length for this process's example number ``local`` (``cfg.curriculum_steps``:
        linear from ``min_len`` at step 0 to ``max_len`` at the curriculum's last step, ``max_len`` after it)."""
        ramp = self.cfg.curriculum_steps
        step = local // (self.batch_size * self.micro_batches_per_step)
        if ramp <= 0 or step >= ramp:
            return self.cfg.max_len
        return self.cfg.min_len + (self.cfg.max_len - self.cfg.min_len) * step // ramp

    def next_batch(self) -> dict:
        from ..tasks import collate

        examples = []
        for _ in range(self.batch_size):
            index = self.rank + self.world_size * self.next_local
            examples.append(self._example(index, "train", self.longest_at(self.next_local)))
            self.next_local += 1
        return collate(examples, self.task.pad_id)

    def validation_batches(self, num_batches: int) -> list[dict]:
        from ..tasks import collate

        # The "val" split is a generator stream of its own, held out from training whatever the seed.
        batches = []
        for b in range(num_batches):
            idx = [self.rank + self.world_size * (b * self.batch_size + j) for j in range(self.batch_size)]
            batches.append(collate([self._example(i, "val") for i in idx], self.task.pad_id))
        return batches

    def long_validation_sets(self, batch_size: int) -> dict[int, list[dict]]:
        """``{length: batches}``: the validation stream past training, ``cfg.val_num`` sequences per length of
        ``cfg.val_lengths``, example ``i`` being ``task.example(cfg.val_seed, i, length, split="val")``.

        Process ``rank`` takes indices ``rank, rank + world, ...``; every process gets the same number of rows
        (a collective forward needs equal batch counts), and rows past ``val_num`` carry no labels, so the
        summed counts cover each example exactly once.
        """
        from ..tasks import IGNORE_INDEX, collate

        per_rank = -(-self.cfg.val_num // self.world_size)
        sets = {}
        for length in self.cfg.val_lengths:
            rows = []
            for i in range(per_rank):
                index = self.rank + self.world_size * i
                example = self.task.example(self.cfg.val_seed, min(index, self.cfg.val_num - 1), length, split="val")
                if index >= self.cfg.val_num:  # a filler row: same shape, nothing to score
                    example = type(example)(example.input_ids, [IGNORE_INDEX] * len(example.labels))
                rows.append(example)
            starts = range(0, len(rows), batch_size)
            sets[length] = [collate(rows[s : s + batch_size], self.task.pad_id) for s in starts]
        return sets
