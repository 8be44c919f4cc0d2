"""Training data: text sources through ``datasets`` (Hub streaming or local files), sharded per process,
tokenised, and packed into fixed-length rows that record document boundaries.

The position in the data is a small state (the datasets iterator state, the epoch, and the tokens left
over from a partly packed document), saved with every checkpoint so that a resumed run continues exactly
where it stopped, with nothing repeated or skipped.
"""

from __future__ import annotations

import codecs
import glob
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .config import SourceConfig

logger = logging.getLogger(__name__)

LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """Bad training data: the message names the source and the problem."""


# .txt files are decoded with this error handler: each undecodable byte run becomes U+FDD0, a Unicode
# noncharacter (reserved for a program's internal use), so a document holding it had bytes that are not UTF-8,
# while a valid U+FFFD (common in web text) is kept as the character it is.
INVALID_UTF8_MARK = "\ufdd0"
INVALID_UTF8_HANDLER = "lrnn_lm_mark_invalid_utf8"
codecs.register_error(INVALID_UTF8_HANDLER, lambda err: (INVALID_UTF8_MARK, err.end))


def first_bad_json_line(files: list[str]) -> tuple[str, int, str] | None:
    """The first line of the ``.jsonl``/``.json`` ``files`` that is not a JSON object in UTF-8: (file, line
    number from 1, why); None when every line reads."""
    for path in files:
        if os.path.splitext(path)[1] not in (".jsonl", ".json"):
            continue
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as e:
                    return path, number, f"{type(e).__name__}: {e}"
                if not isinstance(row, dict):
                    return path, number, f"a JSON {type(row).__name__}, not an object"
    return None


def local_files(path: str | list[str]) -> list[str] | None:
    """Resolve local files or globs; None when ``path`` does not look local (then it is a Hub dataset name)."""
    patterns = path if isinstance(path, list) else [path]
    # "org/name" is a Hub dataset unless it exists here; an absolute or ./ path, a glob or a file suffix is local.
    explicit = ("/", "./", "../", "~")
    looks_local = any(os.path.exists(p) or any(c in p for c in "*?[") or p.startswith(explicit) for p in patterns)
    looks_local = looks_local or any(os.path.splitext(p)[1] in LOCAL_BUILDERS for p in patterns)
    if not looks_local:
        return None
    files = []
    for p in patterns:
        matched = sorted(glob.glob(p, recursive=True))
        if not matched:
            raise DataError(f"data source {p!r}: no such file (or the glob matches nothing)")
        files.extend(matched)
    return files


def load_source(src: SourceConfig):
    """One source as a streaming ``datasets.IterableDataset`` with a single ``text`` column."""
    from datasets import load_dataset

    files = local_files(src.path)
    if files is not None:
        exts = {os.path.splitext(f)[1] for f in files}
        if len(exts) != 1 or next(iter(exts)) not in LOCAL_BUILDERS:
            raise DataError(f"data source {src.path!r}: files must all be one of {sorted(LOCAL_BUILDERS)}, got {exts}")
        builder = LOCAL_BUILDERS[exts.pop()]
        empty = [f for f in files if os.path.getsize(f) == 0]
        if empty:
            raise DataError(f"data source {empty[0]}: the file is empty")
        kwargs = {"sample_by": src.txt_sample_by, "encoding_errors": INVALID_UTF8_HANDLER} if builder == "text" else {}
        try:
            ds = load_dataset(builder, data_files=files, split="train", streaming=True, **kwargs)
        except (StopIteration, ValueError) as e:  # datasets' json reader meets no row it can read
            raise DataError(f"data source {src.path!r}: {builder} files could not be read: {e!r}") from e
    else:
        try:
            ds = load_dataset(src.path, src.name, split=src.split, streaming=True)
        except Exception as e:  # datasets raises many types; all mean "cannot open this dataset"
            raise DataError(
                f"data source {src.path!r} (name={src.name!r}, split={src.split!r}) could not be opened: {e}. "
                "Offline? Set HF_DATASETS_OFFLINE=1 and use local files, or check the name."
            ) from e
    if ds.column_names is not None and src.text_column not in ds.column_names:
        raise DataError(
            f"data source {src.path!r}: no text column {src.text_column!r}; columns are {ds.column_names}. "
            "Set text_column."
        )
    ds = ds.select_columns([src.text_column])
    return ds.rename_column(src.text_column, "text") if src.text_column != "text" else ds


def build_text_dataset(sources: list[SourceConfig], rank: int, world_size: int, seed: int, shuffle_buffer: int):
    """The mixture of ``sources`` (weights normalised), sharded for process ``rank`` of ``world_size``."""
    from datasets import interleave_datasets
    from datasets.distributed import split_dataset_by_node

    parts = [load_source(s) for s in sources]
    if len(parts) == 1:
        ds = parts[0]
    else:
        total = sum(s.weight for s in sources)
        probs = [s.weight / total for s in sources]
        ds = interleave_datasets(parts, probabilities=probs, seed=seed, stopping_strategy="all_exhausted")
    ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
    if shuffle_buffer > 0:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return ds


@dataclass
class DataStats:
    """Counted problems and facts about the stream; logged and saved with checkpoints."""

    docs: int = 0
    tokens: int = 0
    skipped_empty: int = 0
    skipped_invalid_utf8: int = 0
    split_long_docs: int = 0
    epochs_completed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Row:
    """One packed row: ``tokens`` and the lengths of the document pieces it holds, in order."""

    tokens: list[int]
    segments: list[int]


@dataclass
class TextPacker:
    """Documents -> tokens (+ EOS) -> rows of ``seq_len`` tokens, with resumable position.

    A document longer than the space left in a row continues at the start of the next row. A long document is
    tokenized in pieces of about ``chunk_chars`` characters (cut before a whitespace, where byte-level BPE
    pre-tokenization starts a new word anyway), so the tokens in memory and in the saved state stay bounded
    by the piece size, whatever the document's length. The saved position of a document in progress is the
    dataset's state before it plus the character offset of the current piece and the tokens left of it.
    """

    dataset: object
    tokenizer: object
    seq_len: int
    stats: DataStats = field(default_factory=DataStats)
    epoch: int = 0
    pending: list[int] = field(default_factory=list)  # tokens of the current piece not yet packed
    name: str = "training data"  # for error messages
    files: list[str] = field(default_factory=list)  # the local files behind the stream, to locate a bad line
    chunk_chars: int = 0  # 0: max(4096, 16 * seq_len)

    def __post_init__(self) -> None:
        self._docs: Iterator | None = None
        self.chunk_chars = self.chunk_chars or max(4096, 16 * self.seq_len)
        self._doc: str | None = None  # the document being packed, while it has tokens left
        self._doc_state: dict | None = None  # the dataset's state before that document was read
        self._piece = (0, 0)  # character span of the piece whose tokens are in ``pending``
        self._doc_tokens = 0  # tokens of the document so far

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "stats": self.stats.as_dict()}
        if self._doc is None:
            return {**state, "dataset": self.dataset.state_dict(), "doc": None}
        doc = {"piece": list(self._piece), "left": len(self.pending), "tokens": self._doc_tokens}
        return {**state, "dataset": self._doc_state, "doc": doc}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.stats = DataStats(**state["stats"])
        self.dataset.set_epoch(self.epoch)
        self.dataset.load_state_dict(state["dataset"])
        self._docs, self._doc, self.pending = None, None, []
        if state["doc"] is not None:  # read the document in progress again and cut the same piece
            text, self._doc_state = self._read_doc()
            self._doc, self._doc_tokens = text, state["doc"]["tokens"]
            start, end = state["doc"]["piece"]
            self._piece = (start, end)
            piece = self._tokenize_piece(start, end)
            self.pending = piece[len(piece) - state["doc"]["left"] :]

    def _read_doc(self) -> tuple[str, dict]:
        """The next usable document and the dataset's state just before it."""
        empty_epoch = True
        while True:
            if self._docs is None:
                self.dataset.set_epoch(self.epoch)
                self._docs = iter(self.dataset)
            before = self.dataset.state_dict()
            try:
                text = next(self._docs)["text"]
            except UnicodeDecodeError as e:
                raise DataError(
                    f"data source {self.name!r} holds bytes that are not UTF-8 ({e}); .txt sources replace them "
                    "and skip the document, json/parquet files must be re-encoded"
                ) from e
            except ValueError as e:  # pyarrow's ArrowInvalid: a json row it cannot parse (no file, no line)
                raise self._bad_json(e) from e
            except StopIteration:
                if empty_epoch and self.stats.docs == 0:
                    raise DataError(f"data source {self.name!r} holds no usable document") from None
                self.epoch += 1
                self.stats.epochs_completed += 1
                self._docs = None
                empty_epoch = True
                continue
            if not isinstance(text, str) or not text.strip():
                self.stats.skipped_empty += 1
                continue
            if INVALID_UTF8_MARK in text:
                # .txt files mark undecodable bytes (INVALID_UTF8_HANDLER); such a document is skipped.
                self.stats.skipped_invalid_utf8 += 1
                continue
            return text, before

    def _bad_json(self, error: Exception) -> DataError:
        found = first_bad_json_line(self.files)
        if found is None:
            return DataError(f"data source {self.name!r} could not be read: {type(error).__name__}: {error}")
        path, number, why = found
        return DataError(
            f"data source {path}: line {number} is not a valid JSON document ({why}); the run stops here, and a "
            "resume would stop at the same line. Fix or delete that line, then resume with --allow_changed=[data] "
            "(the file's content changed; recorded in metrics.jsonl)."
        )

    def _piece_end(self, start: int) -> int:
        text, limit = self._doc, start + self.chunk_chars
        if len(text) <= limit:
            return len(text)
        cut = max(text.rfind(c, start + self.chunk_chars // 2, limit) for c in " \n\t")
        return cut if cut > start else limit

    def _tokenize_piece(self, start: int, end: int) -> list[int]:
        ids = self.tokenizer(self._doc[start:end], add_special_tokens=False)["input_ids"]
        return ids + [self.tokenizer.eos_token_id] if end == len(self._doc) else ids

    def _next_piece(self) -> bool:
        """Fill ``pending`` with the next piece: of the current document, or the first of the next one.

        Returns whether the piece continues the current document."""
        continues = self._doc is not None
        if self._doc is None:
            self._doc, self._doc_state = self._read_doc()
            self._piece, self._doc_tokens = (0, 0), 0
            self.stats.docs += 1
        start = self._piece[1]
        end = self._piece_end(start)
        self._piece = (start, end)
        self.pending = self._tokenize_piece(start, end)
        before = self._doc_tokens
        self._doc_tokens += len(self.pending)
        self.stats.tokens += len(self.pending)
        if before <= self.seq_len < self._doc_tokens:
            self.stats.split_long_docs += 1
        return continues

    def next_row(self) -> Row:
        tokens: list[int] = []
        segments: list[int] = []
        while len(tokens) < self.seq_len:
            same_doc = self._next_piece() if not self.pending else True
            take = self.pending[: self.seq_len - len(tokens)]
            self.pending = self.pending[len(take) :]
            if not self.pending and self._piece[1] == len(self._doc):
                self._doc = None  # the document is done: the position is the dataset's own again
            if segments and same_doc:
                segments[-1] += len(take)  # the next piece of the same document: one segment, no state reset
            else:
                segments.append(len(take))
            tokens.extend(take)
        return Row(tokens, segments)


def collate_rows(rows: list[Row], reset_state: bool) -> dict:
    """Stack packed rows into a batch.

    ``reset_state``: flatten to one packed sequence ``[1, B*T]`` with ``cu_seqlens`` at every document piece,
    and mask the label at every piece start, so the loss never predicts across a boundary (labels are
    shifted inside the model). Otherwise ``[B, T]`` rows with ordinary causal-LM labels.
    """
    ids = torch.tensor([r.tokens for r in rows], dtype=torch.long)
    if not reset_state:
        return {"input_ids": ids, "labels": ids.clone()}
    flat = ids.reshape(1, -1)
    labels = flat.clone()
    lengths = [n for r in rows for n in r.segments]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    labels[0, cu[:-1].long()] = -100
    return {"input_ids": flat, "labels": labels, "cu_seqlens": cu}


def unigram_loss(train_counts: Counter, val_tokens: list[int], vocab_size: int) -> float:
    """Cross-entropy (nats/token) of ``val_tokens`` under the add-one-smoothed unigram of ``train_counts``."""
    total = sum(train_counts.values()) + vocab_size
    logp = torch.tensor(
        [float(train_counts.get(t, 0) + 1) for t in range(vocab_size)], dtype=torch.float64
    ).log() - torch.log(torch.tensor(float(total), dtype=torch.float64))
    return float(-logp[torch.tensor(val_tokens, dtype=torch.long)].mean())
