"""Every shipped YAML parses, and its model section builds a valid LRNNConfig."""

from pathlib import Path

import pytest

from lrnn_lm import LRNNConfig
from lrnn_lm.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "train").glob("*.yaml")) + sorted(
    (ROOT / "configs" / "state_tracking").glob("*.yaml")
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_model_is_valid(path):
    cfg = load_config(["--config", str(path)])
    model = dict(cfg.model)
    model.setdefault("vocab_size", 100)
    LRNNConfig(**model)
    if "state_tracking" in str(path):
        # The paper's training lengths: up to 40 (Table 3 tasks, S3), up to 32 for S5 (Fig. 4).
        assert cfg.data.task is not None and cfg.data.task.max_len == (32 if cfg.data.task.name == "s5" else 40)


def test_paper_ranges_come_in_pairs():
    names = {p.stem for p in CONFIGS}
    for stem in names:
        if stem.endswith("_neg"):
            assert stem[:-4] + "_pos" in names
    for required in ("default", "deltanet_340m_neg", "mamba_370m_pos", "deltanet_1.3b_neg", "parity_mamba_neg"):
        assert required in names


@pytest.mark.parametrize("neg", [p for p in CONFIGS if p.stem.endswith("_neg")], ids=lambda p: p.name)
def test_range_pairs_differ_only_in_the_range(neg):
    """A [0,1] vs [-1,1] comparison is fair only if nothing else changes between the two runs."""
    pos = neg.with_name(neg.stem[:-4] + "_pos.yaml")
    a, b = load_config(["--config", str(neg)]).to_dict(), load_config(["--config", str(pos)]).to_dict()
    assert a["model"].pop("eigval_range") == "[-1,1]" and b["model"].pop("eigval_range") == "[0,1]"
    assert a.pop("out_dir") != b.pop("out_dir")
    assert a == b
