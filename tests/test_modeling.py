import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import lrnn_lm
from lrnn_lm import LRNNConfig, LRNNForCausalLM, LRNNModel, param_groups

from .models import MIXERS, PUSH_NEGATIVE, RANGES, RECURRENT_MIXERS, push_gates_negative, tiny_config, tiny_model

# Models and inputs on the --device device (tests/conftest.py).
pytestmark = pytest.mark.on_device


def test_auto_registration():
    assert AutoConfig.for_model("lrnn").__class__ is LRNNConfig
    assert type(AutoModel.from_config(tiny_config())) is LRNNModel
    assert type(AutoModelForCausalLM.from_config(tiny_config())) is LRNNForCausalLM


@pytest.mark.parametrize("mixer", MIXERS + [MIXERS])
def test_save_and_from_pretrained_identical_logits(tmp_path, mixer):
    model = tiny_model(mixer=mixer)
    ids = torch.randint(0, 61, (2, 19))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is LRNNForCausalLM
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert loaded.no_weight_decay() == model.no_weight_decay()


@pytest.mark.parametrize("mixer", MIXERS)
def test_loss_with_labels_and_ignore_index(mixer):
    model = tiny_model(mixer=mixer).train()
    ids = torch.randint(0, 61, (2, 16))
    labels = ids.clone()
    labels[:, :5] = -100
    out = model(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 61)
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("mixer", MIXERS)
def test_packed_sequences_equal_separate_forwards(mixer):
    """With cu_seqlens neither the state nor the short conv leaks across sequence starts."""
    model = tiny_model(mixer=mixer)
    seqs = [torch.randint(0, 61, (1, n)) for n in (7, 2, 11)]
    packed = torch.cat(seqs, dim=1)
    cu = torch.tensor([0, 7, 9, 20])
    logits = model(packed, cu_seqlens=cu, use_cache=False).logits
    for s, seq in zip(cu[:-1], seqs):
        ref = model(seq, use_cache=False).logits
        torch.testing.assert_close(logits[:, s : s + seq.shape[1]], ref, rtol=1e-5, atol=1e-5)


def _gate_eigenvalues(model, ids) -> torch.Tensor:
    """The transition eigenvalues each layer actually uses on ``ids`` (Mamba: a_t; DeltaNet: 1 - beta_t)."""
    values = []

    def hook(module, args, kwargs, output):
        values.append(module.transition_eigenvalues(args[0], None, None).flatten())

    handles = [layer.mixer.register_forward_hook(hook, with_kwargs=True) for layer in model.model.layers]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return torch.cat(values)


def test_every_recurrent_mixer_has_a_negative_push():
    assert set(RECURRENT_MIXERS) <= set(PUSH_NEGATIVE), "add the new mixer to tests/models.py PUSH_NEGATIVE"


@pytest.mark.parametrize("mixer", RECURRENT_MIXERS)
def test_eigenvalue_range_on_actual_gates(mixer):
    ids = torch.randint(0, 61, (4, 64))
    signed = tiny_model(mixer=mixer, eigval_range="[-1,1]")
    unsigned = tiny_model(mixer=mixer, eigval_range="[0,1]")
    # Push gates towards the negative side: large dt for Mamba, large beta logits for DeltaNet.
    for m in (signed, unsigned):
        push_gates_negative(m)
    ev_signed, ev_unsigned = _gate_eigenvalues(signed, ids), _gate_eigenvalues(unsigned, ids)
    assert (ev_signed < 0).any() and ev_signed.min() >= -1 and ev_signed.max() <= 1
    assert (ev_unsigned >= 0).all() and ev_unsigned.max() <= 1


def test_param_groups_follow_tags():
    model = tiny_model(mixer=["mamba", "deltanet"])
    groups = param_groups(model.named_parameters(), model.no_weight_decay(), weight_decay=0.1)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    no_decay_ids = {id(p) for p in groups[1]["params"]}
    no_decay = {n for n, p in model.named_parameters() if id(p) in no_decay_ids}
    for n in no_decay:
        assert n.endswith(("A_log", ".D", "bias", "norm.weight", "norm_f.weight")), n
    expected = {
        "model.layers.0.mixer.A_log",
        "model.layers.0.mixer.D",
        "model.layers.0.mixer.dt_proj.bias",
        "model.layers.0.mixer.conv.conv1d.bias",
        "model.layers.0.mixer_norm.weight",
        "model.layers.0.mlp_norm.weight",
        "model.layers.1.mixer.o_norm.weight",
        "model.norm_f.weight",
    }
    assert expected <= no_decay
    decay = {n for n, p in model.named_parameters() if id(p) not in no_decay_ids}
    assert {"model.layers.0.mixer.in_proj.weight", "model.layers.1.mixer.q_proj.weight"} <= decay


def test_mamba_init_follows_mamba():
    torch.manual_seed(0)
    model = LRNNForCausalLM(tiny_config(mixer="mamba", dt_min=0.001, dt_max=0.1))
    mixer = model.model.layers[0].mixer
    torch.testing.assert_close(mixer.A_log[3], torch.log(torch.arange(1, 6, dtype=torch.float32)))
    assert (mixer.D == 1).all()
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001


@pytest.mark.parametrize("eigval_range", RANGES)
def test_import_registers_in_fresh_process(tmp_path, eigval_range):
    tiny_model(eigval_range=eigval_range).save_pretrained(tmp_path)
    code = (
        "import lrnn_lm, sys\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})\n"
        f"assert m.config.eigval_range == {eigval_range!r}, m.config.eigval_range\n"
        "print(type(m).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("LRNNForCausalLM")
    assert lrnn_lm.__name__ == "lrnn_lm"


def _hand_set_parity_mamba(eigval_range: str) -> LRNNForCausalLM:
    """A 1-layer Mamba whose gate is ~ -1 on bit 1 and ~ +1 on bit 0 in the signed range (tokens 1 = "0", 2 = "1").

    Bit 1 gives dt ~ 15 (exp(dt A) ~ 0), bit 0 gives dt ~ 0, and the input term is dt * const, so with the signed
    gate the state of channel 0 alternates between ~17 and ~0 with the parity of the ones so far. With the unit
    gate the same weights reset the state on every 1 instead.
    """
    config = LRNNConfig(
        vocab_size=3,
        hidden_size=4,
        num_hidden_layers=1,
        mixer="mamba",
        eigval_range=eigval_range,
        state_size=1,
        expand=1,
        dt_rank=1,
        conv_kernel=4,
        use_conv_bias=False,
        intermediate_size=0,
    )
    model = LRNNForCausalLM(config).eval()
    mixer = model.model.layers[0].mixer
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embeddings.weight[1] = torch.tensor([-1.0, 1.0, 0.0, 0.0])  # bit 0
        model.model.embeddings.weight[2] = torch.tensor([1.0, 1.0, 0.0, 0.0])  # bit 1
        model.model.layers[0].mixer_norm.weight.fill_(1.0)  # normalised input: [+-1.41, 1.41, 0, 0]
        mixer.in_proj.weight[0, 1] = 1.0  # x0: constant 1.41 -> silu -> 1.14
        mixer.in_proj.weight[1, 0] = 5.0  # x1: +-7.07 by bit -> silu -> 7.06 or ~0
        mixer.in_proj.weight[4:, 1] = 10.0  # z: constant, silu(z) ~ 14
        mixer.conv.conv1d.weight[:, 0, -1] = 1.0  # identity: only the current token
        mixer.x_proj.weight[0, 1] = 1.0  # dt_r = x1
        mixer.x_proj.weight[1, 0] = 1.0 / torch.nn.functional.silu(torch.tensor(2**0.5))  # B = 1
        mixer.x_proj.weight[2, 0] = 1.0 / torch.nn.functional.silu(torch.tensor(2**0.5))  # C = 1
        mixer.dt_proj.weight.fill_(5.0)
        mixer.dt_proj.bias.fill_(-20.0)  # dt = softplus(5 x1 - 20): ~15 for bit 1, ~2e-9 for bit 0
        mixer.A_log.zero_()  # A = -1
        mixer.out_proj.weight.copy_(torch.eye(4))
    return model


@pytest.mark.parametrize("eigval_range", RANGES)
def test_hand_set_mamba_tracks_parity_only_with_negative_eigenvalues(eigval_range):
    bits = torch.randint(0, 2, (8, 256), generator=torch.Generator().manual_seed(0), device="cpu")
    bits = bits.to(torch.get_default_device())
    parity = bits.cumsum(1) % 2
    model = _hand_set_parity_mamba(eigval_range)
    captured = []
    model.model.layers[0].mixer.register_forward_hook(lambda mod, args, out: captured.append(out))
    with torch.no_grad():
        model(bits + 1, use_cache=False)
    readout = captured[0][..., 0] > 100.0  # mixer output channel 0: ~ 17 * 14 = 240 when the state holds a 1
    acc = (readout.long() == parity).float().mean().item()
    if eigval_range == "[-1,1]":
        assert acc == 1.0
    else:
        # The same weights in [0,1] only remember whether a 1 has occurred: on random bits, about chance.
        assert acc < 0.6
