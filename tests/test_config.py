import pytest

from lrnn_lm import LRNNConfig


def test_defaults_are_valid():
    c = LRNNConfig()
    assert c.model_type == "lrnn" and c.layer_mixers == ["deltanet"] * c.num_hidden_layers


def test_per_layer_mixers():
    c = LRNNConfig(num_hidden_layers=3, mixer=["mamba", "deltanet", "mamba"])
    assert c.layer_mixers == ["mamba", "deltanet", "mamba"]


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"mixer": "transformer"}, "mixer"),
        ({"mixer": ["mamba"], "num_hidden_layers": 2}, "mixer"),
        ({"eigval_range": "[-2,1]"}, "eigval_range"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_hidden_layers": -1}, "num_hidden_layers"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"state_size": 0}, "state_size"),
        ({"intermediate_size": -4}, "intermediate_size"),
        ({"hidden_size": 30, "num_heads": 4}, "num_heads"),
        ({"head_dim": 0}, "head_dim"),
        ({"kernel_backend": "cuda"}, "kernel_backend"),
        ({"qk_norm": "none", "eigval_range": "[-1,1]"}, "qk_norm"),
        ({"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
        ({"dt_min": "abc"}, "dt_min"),
        ({"hidden_act": "swishh"}, "hidden_act"),
        ({"norm_eps": 0}, "norm_eps"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"LRNNConfig\.{field}"):
        LRNNConfig(**kwargs)


def test_unnormalised_keys_allowed_only_in_unit_range():
    assert LRNNConfig(qk_norm="none", eigval_range="[0,1]").qk_norm == "none"


def test_head_dim_independent_of_hidden_size():
    from lrnn_lm.layers.deltanet import DeltaNetMixer

    assert DeltaNetMixer.head_dim_of(LRNNConfig(hidden_size=30, num_heads=4, head_dim=8)) == 8


def test_round_trip(tmp_path):
    c = LRNNConfig(mixer=["mamba", "deltanet"], num_hidden_layers=2, eigval_range="[0,1]")
    c.save_pretrained(tmp_path)
    c2 = LRNNConfig.from_pretrained(tmp_path)
    assert c2.layer_mixers == ["mamba", "deltanet"] and c2.eigval_range == "[0,1]"


def test_mixer_fields_come_from_the_registry():
    from lrnn_lm.layers import MIXERS

    c = LRNNConfig()
    for cls in MIXERS.values():
        for field, default in cls.config_fields.items():
            assert getattr(c, field) == default, field
            assert field in c.to_dict()


def test_hidden_act_is_used_by_the_mlp():
    import torch

    from lrnn_lm import LRNNForCausalLM

    torch.manual_seed(0)
    silu = LRNNForCausalLM(LRNNConfig(vocab_size=11, hidden_size=8, num_heads=2, intermediate_size=16))
    gelu = LRNNForCausalLM(
        LRNNConfig(vocab_size=11, hidden_size=8, num_heads=2, intermediate_size=16, hidden_act="gelu")
    )
    gelu.load_state_dict(silu.state_dict())
    ids = torch.randint(0, 11, (1, 5))
    assert not torch.allclose(silu(ids).logits, gelu(ids).logits)
