"""Run configuration: dataclasses filled from one YAML file plus dotted command-line overrides.

Unknown keys and bad values raise :class:`ConfigError` naming the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .corpus import MIN_VOCAB_SIZE

MAX_THREADS = 1024  # train.threads above this is a typo (torch.set_num_threads overflows on huge values)


class ConfigError(ValueError):
    """A bad run configuration; the message names the key."""


class _StrictLoader(yaml.SafeLoader):
    """YAML as a config should be read: a duplicate key is an error (PyYAML keeps the last one in silence), and
    so is an alias (``*name``), which can expand a few lines into gigabytes; configs write values out."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML alias *{event.anchor}: aliases are not allowed in configs "
                "(they can expand without bound); write the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            try:
                key = self.construct_object(key_node, deep=True)
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                where = f"line {line}" if first == line else f"lines {first} and {line}"
                raise ConfigError(
                    f"duplicate key {key!r} on {where}; YAML would keep only the last one. Write each key once."
                )
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML) reads `1e-5` as the string "1e-5" because its float needs a dot; YAML 1.2 and every user read
# it as a number. A config is the place people write `lr: 3e-4` or `--model.dt_min=1e-5`, so exponents without a
# dot are floats here too.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(text: str, where: str) -> Any:
    """``text`` parsed as strict YAML (no duplicate keys, no aliases); any problem is a one-line ConfigError
    that starts with ``where`` (the file or the override)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None


@dataclass
class SourceConfig:
    """One text source: a Hub dataset name, or local ``txt`` / ``jsonl`` / ``parquet`` files or globs."""

    path: str | list[str] = ""
    name: str | None = None  # Hub dataset config, e.g. "sample-10BT"
    split: str = "train"
    text_column: str = "text"
    weight: float = 1.0  # mixture weight (normalised over sources)
    txt_sample_by: Literal["document", "paragraph", "line"] = "document"


@dataclass
class TaskConfig:
    """A state-tracking task from :mod:`lrnn_lm.tasks`, generated online."""

    name: str = ""
    min_len: int = 3
    max_len: int = 40
    seed: int = 0
    options: dict = field(default_factory=dict)
    # A length curriculum: the longest training length grows linearly from min_len to max_len over the first
    # curriculum_steps optimizer steps (0: off). A pure function of the example's index, so resume stays exact.
    curriculum_steps: int = 0
    # Validation at lengths past training, scored every train.eval_every: val_num sequences per length from the
    # task's held-out "val" split stream with its own seed (never the "test" stream). [] turns it off.
    val_lengths: list[int] = field(default_factory=lambda: [64, 128])
    val_seed: int = 4242
    val_num: int = 256


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)  # empty and no task: the built-in offline corpus
    validation: list[SourceConfig] = field(default_factory=list)
    task: TaskConfig | None = None
    seq_len: int = 256
    reset_state_at_doc_boundary: bool = True
    shuffle_buffer: int = 0  # >0: datasets' buffered shuffle of documents (seeded, resumable)


@dataclass
class TokenizerConfig:
    name_or_path: str | None = None  # None: a BPE tokenizer trained offline on the built-in corpus
    vocab_size: int = 4096  # only for the built-in tokenizer


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr: float = 3e-5
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"

    def schedule_args(self) -> dict:
        """The keyword arguments of :func:`lrnn_lm.training.schedule.lr_at` this section sets."""
        return {"lr": self.lr, "min_lr": self.min_lr, "warmup_steps": self.warmup_steps, "schedule": self.schedule}


@dataclass
class TrainConfig:
    max_steps: int = 1000
    micro_batch_size: int = 8
    tokens_per_step: int | None = None  # None: micro_batch_size * seq_len * world_size (no accumulation)
    max_minutes: float | None = None  # stop (and checkpoint) after this much training wall time, resumes included
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    eval_every: int = 100
    eval_batches: int = 20
    log_every: int = 10
    max_consecutive_nonfinite: int = 5
    threads: int | None = None  # CPU threads per process (torch.set_num_threads)
    label_smoothing: float = 0.0  # of the training loss only (lrnn_lm/training/loss.py); validation stays plain
    # chunked: the training loss from the head's chunked linear cross entropy, which never keeps the
    # [tokens, vocab] logits for the backward (lrnn_lm/linear_cross_entropy.py); logits: the model's plain loss
    loss_head: Literal["chunked", "logits"] = "chunked"
    # blocks: recompute each block's forward in the backward (transformers' gradient checkpointing), keeping only
    # the blocks' inputs: a fraction of the activation memory for about one more forward of compute
    activation_checkpointing: Literal["none", "blocks"] = "none"


@dataclass
class CheckpointConfig:
    every: int = 200
    keep_last: int = 2


@dataclass
class LoggingConfig:
    trackers: list[str] = field(default_factory=list)  # e.g. ["tensorboard"], ["wandb"]
    project: str = "lrnn-lm"
    progress: bool = True


@dataclass
class RunConfig:
    out_dir: str = "runs/default"
    model: dict | str = field(default_factory=dict)  # LRNNConfig kwargs, or a path to a config.json
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    resume: str = "none"  # "none", "auto" (newest complete checkpoint in out_dir), or a checkpoint path
    # A fresh run refuses a used out_dir; "move" renames the old run to OUT.old-<time>, "delete" deletes it.
    overwrite: Literal["no", "move", "delete"] = "no"
    # Resume: fields outside the free list (see lrnn_lm/training/resume.py) that may differ from the checkpoint's
    # run, e.g. [optim.lr]; and whether to go on when the random states cannot be restored (no exact resume).
    allow_changed: list[str] = field(default_factory=list)
    resume_inexact: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def completed_with_defaults(saved: dict) -> dict:
    """A run config saved by an older version, with the fields added since filled in from their defaults.

    A field is only ever added with a default that keeps the old behaviour (``data.task.curriculum_steps: 0`` is
    off), so an older run and a new config that leaves the field at its default describe the same run. A saved
    config that no longer builds (a field since removed) is returned as it is, and compares as changed.
    """
    try:
        return _build(RunConfig, saved, "").to_dict()
    except (ConfigError, TypeError):
        return saved


def _build(cls, data: Any, where: str):
    """Instantiate dataclass ``cls`` from a mapping, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {_join(where, unknown[0])!r}; valid keys here: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp, value: Any, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML reads "3e-4" (no dot) as a string; accept it as the number it obviously is.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(argv: list[str]) -> tuple[str | None, list[tuple[str, Any]]]:
    """Split ``[--config PATH] [--key.sub=value | --key.sub value ...]`` into the config path and overrides.

    Values are parsed as YAML, so ``--optim.lr=1e-3`` is a float and ``--data.task=null`` is None.
    """
    config_path, overrides, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; use --key.sub=value")
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise ConfigError(f"{arg} needs a value")
            raw, i = argv[i + 1], i + 1
        if key == "config":
            config_path = raw
        else:
            overrides.append((key, read_yaml(raw, f"--{key}={raw}") if raw != "" else ""))
        i += 1
    return config_path, overrides


def load_config(argv: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Build the run config: ``base`` (the embedded default), then ``--config`` YAML, then overrides."""
    config_path, overrides = parse_overrides(argv or [])
    tree: dict = json.loads(json.dumps(base or {}))
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(f"--config: file not found: {config_path}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"--config {config_path}: not UTF-8 text ({e}); a config is a YAML file") from None
        loaded = read_yaml(text, config_path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: the top level must be a mapping")
        tree = loaded
    for key, value in overrides:
        _set_dotted(tree, key, value)
    cfg = _build(RunConfig, tree, "")
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Value checks that types alone cannot express."""
    checks = [
        ("data.seq_len", cfg.data.seq_len > 0),
        ("train.max_steps", cfg.train.max_steps > 0),
        ("train.micro_batch_size", cfg.train.micro_batch_size > 0),
        ("train.eval_every", cfg.train.eval_every > 0),
        ("train.log_every", cfg.train.log_every > 0),
        ("train.max_consecutive_nonfinite", cfg.train.max_consecutive_nonfinite > 0),
        ("checkpoint.every", cfg.checkpoint.every > 0),
        ("checkpoint.keep_last", cfg.checkpoint.keep_last > 0),
        ("optim.lr", cfg.optim.lr > 0),
        ("optim.min_lr", 0 <= cfg.optim.min_lr <= cfg.optim.lr),
        ("optim.weight_decay", cfg.optim.weight_decay >= 0),
        ("optim.warmup_steps", cfg.optim.warmup_steps >= 0),
        ("optim.betas", len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas)),
        ("optim.grad_clip", cfg.optim.grad_clip >= 0),
        ("optim.eps", cfg.optim.eps >= 0),
        ("data.shuffle_buffer", cfg.data.shuffle_buffer >= 0),
        ("train.eval_batches", cfg.train.eval_batches >= 0),
        ("train.tokens_per_step", cfg.train.tokens_per_step is None or cfg.train.tokens_per_step > 0),
        ("train.threads", cfg.train.threads is None or 1 <= cfg.train.threads <= MAX_THREADS),
        ("train.seed", 0 <= cfg.train.seed < 2**32),  # numpy's seed range, which set_seed also seeds
        ("train.max_minutes", cfg.train.max_minutes is None or cfg.train.max_minutes > 0),
        ("train.label_smoothing", 0 <= cfg.train.label_smoothing < 1),
    ]
    for key, ok in checks:
        if not ok:
            raise ConfigError(f"{key}: invalid value {_lookup(cfg, key)!r}")
    if cfg.tokenizer.name_or_path is None and cfg.tokenizer.vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(
            f"tokenizer.vocab_size: {cfg.tokenizer.vocab_size} is below {MIN_VOCAB_SIZE}, the byte alphabet (256) "
            "plus the end-of-text token, which the built-in BPE tokenizer holds before it learns a single merge"
        )
    if isinstance(cfg.model, dict):
        cfg.model = check_model_keys(cfg.model)
    for i, src in enumerate(cfg.data.sources + cfg.data.validation):
        if not src.path:
            raise ConfigError(f"data.sources[{i}].path: must name a dataset or files")
        if src.weight <= 0:
            raise ConfigError(f"data.sources[{i}].weight: must be positive, got {src.weight}")
    if cfg.data.task is not None:
        if not cfg.data.task.name:
            raise ConfigError("data.task.name: must name a task")
        if not 1 <= cfg.data.task.min_len <= cfg.data.task.max_len:
            raise ConfigError(f"data.task.min_len: need 1 <= min_len <= max_len, got {cfg.data.task}")
        if cfg.data.sources:
            raise ConfigError("data.task: cannot be combined with data.sources")
        ramp = cfg.data.task.curriculum_steps
        if not isinstance(ramp, int) or ramp < 0:
            raise ConfigError(f"data.task.curriculum_steps: need an integer >= 0, got {ramp!r}")
        if any(n < 1 for n in cfg.data.task.val_lengths) or cfg.data.task.val_num < 1:
            raise ConfigError(f"data.task.val_lengths / val_num: need values >= 1, got {cfg.data.task}")
        check_task(cfg.data.task)
    if cfg.overwrite != "no" and cfg.resume != "none":
        raise ConfigError(f"overwrite: --overwrite={cfg.overwrite} starts a fresh run; it cannot go with --resume")
    if cfg.resume not in ("none", "auto") and not Path(cfg.resume).exists():
        raise ConfigError(f"resume: checkpoint not found: {cfg.resume}")


def check_task(task: TaskConfig) -> None:
    """Build the task once, so an unknown task, option or option value stops the run before any work."""
    from ..tasks import get_task

    try:
        get_task(task.name, **task.options)
    except (TypeError, KeyError, ValueError) as e:
        why = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ConfigError(f"data.task: task {task.name!r} with options {task.options}: {why}") from None


def check_model_keys(model: dict) -> dict:
    """Refuse model keys that ``LRNNConfig`` does not have (naming the nearest one), and read the eigenvalue range
    typed on the command line, ``--model.eigval_range=[0,1]``, which YAML parses as the list ``[0, 1]``, as the
    range ``"[0,1]"``."""
    import difflib

    from lrnn_lm import LRNNConfig

    valid = sorted(LRNNConfig().to_dict())  # asked at call time: the mixers own their fields
    for key in model:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean 'model.{near[0]}'?" if near else f"valid keys: {valid}"
            raise ConfigError(f"unknown key 'model.{key}': LRNNConfig has no such field; {hint}")
    rng = model.get("eigval_range")
    if isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, (int, float)) for x in rng):
        model = {**model, "eigval_range": "[{:g},{:g}]".format(*rng)}
    return model


def _lookup(cfg: Any, dotted: str) -> Any:
    for k in dotted.split("."):
        cfg = getattr(cfg, k)
    return cfg
