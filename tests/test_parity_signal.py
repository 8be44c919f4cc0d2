"""The parity-signal diagnostic: exact on hand-made features, and it orders the shipped CPU configs."""

from pathlib import Path

import torch

from lrnn_lm.analysis.parity_signal import config_from_train_yaml, parity_signal, parity_signal_at_init

ROOT = Path(__file__).resolve().parents[1]


class _FixedHidden(torch.nn.Module):
    """Stands in for ``model.model``: the final hidden state is a given function of the bits."""

    def __init__(self, features):
        super().__init__()
        self.features = features

    def forward(self, input_ids):
        bits = (input_ids[:, :-1] == 2).float()  # parity vocab: <pad>, 0, 1, =
        h = self.features(bits)
        return type("Out", (), {"last_hidden_state": h[:, None, :].expand(-1, input_ids.shape[1], -1)})


class _Stub(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.model = _FixedHidden(features)


def test_signal_is_one_for_pure_parity_and_zero_for_lower_order_features():
    parity = _Stub(lambda b: (1 - 2 * (b.sum(1, keepdim=True) % 2)).repeat(1, 3))
    first_bits = _Stub(lambda b: torch.cat([b[:, :1], b[:, 1:2] * b[:, 2:3], b.sum(1, keepdim=True)], 1))
    assert abs(parity_signal(parity, n_bits=6) - 1.0) < 1e-6
    assert parity_signal(first_bits, n_bits=6) < 1e-6


def test_shipped_neg_configs_start_with_a_parity_signal_and_lm_init_does_not():
    mamba = str(ROOT / "configs/state_tracking/cpu_parity_mamba_neg.yaml")
    deltanet = str(ROOT / "configs/state_tracking/cpu_parity_deltanet_neg.yaml")
    shipped_mamba = parity_signal_at_init(config_from_train_yaml(mamba), n_bits=6, seeds=1)
    lm_init_mamba = parity_signal_at_init(
        config_from_train_yaml(mamba, ["model.initializer_range=0.02", "model.dt_scale=1.0"]), n_bits=6, seeds=1
    )
    assert shipped_mamba > 1e-2
    assert lm_init_mamba < 1e-4
    assert parity_signal_at_init(config_from_train_yaml(deltanet), n_bits=6, seeds=1) > 1e-2
