"""Data pipeline: packing, boundaries, bad inputs."""

import json

import pytest
import torch

from lrnn_lm.training.config import SourceConfig
from lrnn_lm.training.data import DataError, Row, TextPacker, build_text_dataset, collate_rows, load_source


class CharTokenizer:
    """One token per character; id 0 is EOS."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + (ord(c) % 50) for c in text]}


def write_jsonl(path, texts, key="text"):
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps({key: t}) + "\n")
    return path


def packer(path, seq_len=8, **src):
    ds = build_text_dataset([SourceConfig(path=str(path), **src)], 0, 1, 0, 0)
    return TextPacker(ds, CharTokenizer(), seq_len)


def test_packing_records_segments_and_splits_long_docs(tmp_path):
    p = packer(write_jsonl(tmp_path / "a.jsonl", ["abc", "defghijklm", "xy"]), seq_len=8)
    rows = [p.next_row() for _ in range(3)]
    # "abc"+EOS (4), "defghijklm"+EOS (11, split 4 | 7), "xy"+EOS (3, split 1 | 2), then epoch 2 starts.
    assert [r.segments for r in rows] == [[4, 4], [7, 1], [2, 4, 2]]
    assert all(len(r.tokens) == 8 for r in rows)
    assert p.stats.epochs_completed == 1
    assert p.stats.split_long_docs == 2  # the 11-token document, read once per epoch


def test_collate_cu_seqlens_and_no_target_across_boundaries():
    rows = [Row(list(range(1, 9)), [3, 5]), Row(list(range(11, 19)), [8])]
    batch = collate_rows(rows, reset_state=True)
    assert batch["input_ids"].shape == (1, 16)
    assert batch["cu_seqlens"].tolist() == [0, 3, 8, 16]
    labels = batch["labels"][0]
    # Every sequence start (including the start of row 2) has an ignored label, so no logit at the end
    # of one piece is trained to predict the first token of the next.
    assert labels[[0, 3, 8]].tolist() == [-100, -100, -100]
    assert (labels[[1, 2, 4, 5, 6, 7, 9]] != -100).all()
    plain = collate_rows(rows, reset_state=False)
    assert plain["input_ids"].shape == (2, 8) and "cu_seqlens" not in plain


def test_packed_batch_trains_without_cross_document_leakage():
    """Changing document 1 must not change the loss terms of document 2 when packed with cu_seqlens."""
    from .models import tiny_model

    model = tiny_model()
    a = Row([5, 6, 7, 8, 9, 10, 11, 12], [3, 5])
    b = Row([50, 51, 52, 8, 9, 10, 11, 12], [3, 5])
    logits = []
    for row in (a, b):
        batch = collate_rows([row], reset_state=True)
        with torch.no_grad():
            logits.append(model(batch["input_ids"], cu_seqlens=batch["cu_seqlens"], use_cache=False).logits)
    torch.testing.assert_close(logits[0][:, 3:], logits[1][:, 3:])


def test_empty_documents_are_skipped_and_counted(tmp_path):
    p = packer(write_jsonl(tmp_path / "a.jsonl", ["", "  ", "abcdefgh", ""]))
    p.next_row()  # skips "" and "  ", then fills the row from "abcdefgh"
    assert p.stats.skipped_empty == 2 and p.stats.docs == 1
    p.next_row()  # the trailing "", then the next epoch's "" and "  "
    assert p.stats.skipped_empty == 5 and p.stats.docs == 2


def test_non_utf8_text_is_skipped_and_counted(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"good text here\n\nbad \xff\xfe bytes\n\nmore good text")
    p = packer(path, txt_sample_by="paragraph")
    for _ in range(4):
        p.next_row()
    assert p.stats.skipped_invalid_utf8 >= 1 and p.stats.docs >= 2


def test_non_utf8_jsonl_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "bad \xff\xfe bytes"}\n')
    p = packer(path)
    p.name = str(path)
    with pytest.raises(DataError, match="bad.jsonl.*not UTF-8"):
        for _ in range(3):
            p.next_row()


def test_missing_text_column_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ["abc"], key="content")
    with pytest.raises(DataError, match="no text column 'text'.*content"):
        load_source(SourceConfig(path=str(path)))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_source(SourceConfig(path=str(tmp_path / "missing.jsonl")))


def test_no_usable_document_is_a_clear_error(tmp_path):
    p = packer(write_jsonl(tmp_path / "a.jsonl", ["", " "]))
    with pytest.raises(DataError, match="no usable document"):
        p.next_row()


def test_mixture_weights_and_resume_position(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [f"a{i}" * 3 for i in range(50)])
    b = write_jsonl(tmp_path / "b.jsonl", [f"b{i}" * 3 for i in range(50)])
    sources = [SourceConfig(path=str(a), weight=3.0), SourceConfig(path=str(b), weight=1.0)]

    def make():
        return TextPacker(build_text_dataset(sources, 0, 1, 0, 0), CharTokenizer(), 8)

    p = make()
    for _ in range(5):
        p.next_row()
    state = json.loads(json.dumps(p.state_dict()))
    expected = [p.next_row().tokens for _ in range(10)]
    q = make()
    q.load_state_dict(state)
    assert [q.next_row().tokens for _ in range(10)] == expected


def test_sharding_splits_documents_between_processes(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [f"doc{i}" for i in range(10)])
    seen = [[ex["text"] for ex in build_text_dataset([SourceConfig(path=str(path))], r, 2, 0, 0)] for r in (0, 1)]
    assert set(seen[0]).isdisjoint(seen[1]) and len(seen[0]) + len(seen[1]) == 10
