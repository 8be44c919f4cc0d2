import pytest

from lrnn_lm.training import checkpoint as ckpt

from .training_utils import fake_checkpoint


def make(root, step):
    return fake_checkpoint(root, step, "run")


def test_finalize_is_complete_and_verifiable(tmp_path):
    path = make(tmp_path, 4)
    assert ckpt.verify(path) == 4 and not (tmp_path / ".tmp-step-00000004").exists()


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "no_manifest", "missing_file"])
def test_damaged_newest_is_refused_and_previous_used(tmp_path, damage, caplog):
    make(tmp_path, 4)
    newest = make(tmp_path, 8)
    f = newest / "model.safetensors"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:10])
    elif damage == "corrupt":
        data = bytearray(f.read_bytes())
        data[3] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "no_manifest":
        (newest / ckpt.MANIFEST).unlink()
    else:
        f.unlink()
    with pytest.raises(ckpt.CheckpointError):
        ckpt.verify(newest)
    assert ckpt.newest_valid(tmp_path) == tmp_path / "step-00000004"
    assert "refusing checkpoint" in caplog.text


def test_unfinished_temporary_folder_is_ignored_and_pruned(tmp_path):
    make(tmp_path, 4)
    (tmp_path / ".tmp-step-00000008").mkdir()
    assert ckpt.newest_valid(tmp_path) == tmp_path / "step-00000004"
    make(tmp_path, 12)
    make(tmp_path, 16)
    ckpt.prune(tmp_path, keep_last=2, run_id="run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000012", "step-00000016"]
