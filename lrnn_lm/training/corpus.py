"""The built-in offline corpus (Python's own documentation) and a BPE tokenizer trained on it.

Every Python ships its documentation: ``pydoc_data.topics`` holds the language reference (about 750 KB of
English prose) and the standard library's docstrings add several MB more. Both are read from disk, so the
default run needs no download. Files are built once and cached.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sysconfig
from pathlib import Path

CORPUS_VERSION = "v1"
EOS = "<|endoftext|>"
MIN_DOC_CHARS = 400
MIN_VOCAB_SIZE = 256 + 1  # the byte-level alphabet and EOS: what the BPE tokenizer holds before any merge


def cache_root() -> Path:
    return Path(os.environ.get("LRNN_CACHE", Path.home() / ".cache" / "lrnn_lm"))


def _pydoc_topics() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(f"pydoc:{name}", text) for name, text in sorted(topics.items())]


def _stdlib_docstrings() -> list[tuple[str, str]]:
    """One document per stdlib module: its module, class and function docstrings in source order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in ("test", "tests", "idlelib", "site-packages", "lib2to3") for part in rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        parts = [ast.get_docstring(tree) or ""]
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    parts.append(doc)
        text = "\n\n".join(p.strip() for p in parts if p.strip())
        docs.append((f"stdlib:{rel}", text))
    return docs


def build_corpus(root: Path | None = None) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``val.jsonl`` (about 5% of documents, chosen by a hash of their name) once.

    Returns their paths. Rebuilding is skipped when both files exist.
    """
    out = (root or cache_root()) / f"python_docs_{CORPUS_VERSION}"
    train, val = out / "train.jsonl", out / "val.jsonl"
    if train.is_file() and val.is_file():
        return train, val
    out.mkdir(parents=True, exist_ok=True)
    docs = [(name, text) for name, text in _pydoc_topics() + _stdlib_docstrings() if len(text) >= MIN_DOC_CHARS]
    splits = {"train": [], "val": []}
    for name, text in docs:
        held_out = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 20 == 0
        splits["val" if held_out else "train"].append({"text": text, "source": name})
    for split, path in (("train", train), ("val", val)):
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in splits[split]:
                f.write(json.dumps(row) + "\n")
        os.replace(tmp, path)
    return train, val


def build_tokenizer(train_file: Path, vocab_size: int, root: Path | None = None):
    """A byte-level BPE tokenizer trained on ``train_file``, saved in HF format and cached."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = (root or cache_root()) / f"bpe_{vocab_size}_{CORPUS_VERSION}"
    if not (out / "tokenizer.json").is_file():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )

        def texts():
            with open(train_file, encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)["text"]

        tok.train_from_iterator(texts(), trainer=trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        fast.save_pretrained(tmp)
        # Another process may have finished first; either copy is the same deterministic tokenizer.
        try:
            os.replace(tmp, out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return PreTrainedTokenizerFast.from_pretrained(out)
