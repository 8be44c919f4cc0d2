import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import lrnn_lm
from lrnn_lm import LRNNConfig, LRNNForCausalLM, LRNNModel, param_groups
from lrnn_lm.layers.deltanet import DeltaNetMixer
from lrnn_lm.layers.mamba import MambaMixer

from .models import MIXERS, RANGES, tiny_config, tiny_model


def test_auto_registration():
    assert AutoConfig.for_model("lrnn").__class__ is LRNNConfig
    assert type(AutoModel.from_config(tiny_config())) is LRNNModel
    assert type(AutoModelForCausalLM.from_config(tiny_config())) is LRNNForCausalLM


@pytest.mark.parametrize("mixer", MIXERS + [["mamba", "deltanet"]])
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
        hidden = args[0]
        if isinstance(module, MambaMixer):
            _, dt, *_ = module.project(hidden, None, None, None)
            values.append(module.gates(dt).flatten())
        elif isinstance(module, DeltaNetMixer):
            values.append(1 - module.betas(hidden).flatten())

    handles = [layer.mixer.register_forward_hook(hook, with_kwargs=True) for layer in model.model.layers]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return torch.cat(values)


@pytest.mark.parametrize("mixer", MIXERS)
def test_eigenvalue_range_on_actual_gates(mixer):
    ids = torch.randint(0, 61, (4, 64))
    signed = tiny_model(mixer=mixer, eigval_range="[-1,1]")
    unsigned = tiny_model(mixer=mixer, eigval_range="[0,1]")
    # Push gates towards the negative side: large dt for Mamba, large beta logits for DeltaNet.
    with torch.no_grad():
        for m in (signed, unsigned):
            for layer in m.model.layers:
                if mixer == "mamba":
                    layer.mixer.dt_proj.bias.fill_(3.0)
                else:
                    layer.mixer.b_proj.weight.mul_(50.0)
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
