"""Training data for train.py behind one interface, for text sources and for state-tracking tasks alike.

``build_data`` returns a :class:`Data`: ``train`` yields micro-batches (``next_batch()``) and saves and restores
its position (``state_dict`` / ``load_state_dict``); ``validation`` is a fixed list of batches; for a task,
``long_validation`` holds its validation stream at lengths past training (``data.task.val_lengths``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .config import RunConfig, SourceConfig
from .corpus import build_corpus, build_tokenizer
from .data import DataError, TextPacker, build_text_dataset, collate_rows, local_files
from .task_data import TaskBatches


class Batches(Protocol):
    """What the loop needs from its training data (TaskBatches and TextBatches)."""

    def next_batch(self) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TextBatches:
    """Micro-batches of ``batch_size`` packed rows of a :class:`TextPacker` (``cu_seqlens`` when resetting)."""

    packer: TextPacker
    batch_size: int
    reset_state: bool

    def next_batch(self) -> dict:
        return collate_rows([self.packer.next_row() for _ in range(self.batch_size)], self.reset_state)

    def state_dict(self) -> dict:
        return self.packer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.packer.load_state_dict(state)


@dataclass
class Data:
    train: Batches
    validation: list[dict]
    row_len: int  # tokens per row: what one example of a micro-batch holds (seq_len, or the task's max_len)
    vocab_size: int
    special: dict  # token ids the model config needs (eos, pad)
    tokenizer: object | None = None  # None for tasks: they feed token ids directly
    task: object | None = None
    sources: list[SourceConfig] = field(default_factory=list)
    long_validation: dict[int, list[dict]] = field(default_factory=dict)  # tasks: {length: batches} past training


def default_sources(cfg: RunConfig) -> None:
    """No sources and no task: train on the built-in corpus, validate on its held-out split."""
    if not cfg.data.sources and cfg.data.task is None:
        train_file, val_file = build_corpus()
        cfg.data.sources = [SourceConfig(path=str(train_file))]
        if not cfg.data.validation:
            cfg.data.validation = [SourceConfig(path=str(val_file))]


def load_tokenizer(cfg: RunConfig):
    if cfg.tokenizer.name_or_path is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.tokenizer.name_or_path)
    else:
        train_file, _ = build_corpus()
        tok = build_tokenizer(train_file, cfg.tokenizer.vocab_size)
    if tok.eos_token_id is None:
        raise DataError(f"tokenizer {cfg.tokenizer.name_or_path!r} has no eos token; documents need a separator")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _names(sources: list[SourceConfig]) -> str:
    return ", ".join(str(s.path) for s in sources)


def _packer(stream, tokenizer, seq_len: int, sources: list[SourceConfig]) -> TextPacker:
    """A packer that names ``sources`` in its errors and knows their local files (to locate a bad line)."""
    files = [f for s in sources for f in (local_files(s.path) or [])]
    return TextPacker(stream, tokenizer, seq_len, name=_names(sources), files=files)


def build_data(cfg: RunConfig, rank: int, world: int, accelerator) -> Data:
    """This process's share of the training data, the validation batches and the vocabulary."""
    mb = cfg.train.micro_batch_size
    if cfg.data.task is not None:
        task = TaskBatches(cfg.data.task, rank, world, mb)
        validation = task.validation_batches(cfg.train.eval_batches)
        special = {"pad_token_id": task.task.pad_id}
        data = Data(task, validation, cfg.data.task.max_len, task.task.vocab_size, special, task=task.task)
        data.long_validation = task.long_validation_sets(mb)
        return data
    with accelerator.main_process_first():  # the main process builds caches (corpus, tokenizer) first
        tokenizer = load_tokenizer(cfg)
    seed, seq_len, reset = cfg.train.seed, cfg.data.seq_len, cfg.data.reset_state_at_doc_boundary
    stream = build_text_dataset(cfg.data.sources, rank, world, seed, cfg.data.shuffle_buffer)
    train = TextBatches(_packer(stream, tokenizer, seq_len, cfg.data.sources), mb, reset)
    validation = []
    if cfg.data.validation:
        val_stream = build_text_dataset(cfg.data.validation, rank, world, seed, 0)
        val = TextBatches(_packer(val_stream, tokenizer, seq_len, cfg.data.validation), mb, reset)
        for _ in range(cfg.train.eval_batches):
            validation.append(val.next_batch())
            if val.packer.stats.epochs_completed:
                break  # the whole validation set fits in fewer batches
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    return Data(train, validation, seq_len, len(tokenizer), special, tokenizer=tokenizer, sources=cfg.data.sources)
