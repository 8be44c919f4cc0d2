"""transformers' Mamba and Mamba-2 (their CPU torch paths) as oracles: converted models compute the same logits."""

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from lrnn_lm import LRNNForCausalLM
from lrnn_lm.convert import convert_model
from lrnn_lm.convert.__main__ import main as convert_cli


def _perturb(model) -> None:
    # Move every weight off its init value (D = 1, norms = 1, zero biases) so the match cannot be an accident.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))


def tiny_mamba(tied: bool) -> MambaForCausalLM:
    torch.manual_seed(0)
    config = MambaConfig(
        vocab_size=67, hidden_size=24, num_hidden_layers=2, state_size=5, expand=2, conv_kernel=3,
        time_step_rank=3, use_conv_bias=True, tie_word_embeddings=tied, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    model = MambaForCausalLM(config).eval()
    _perturb(model)
    return model


def tiny_mamba2(tied: bool) -> Mamba2ForCausalLM:
    torch.manual_seed(0)
    config = Mamba2Config(
        vocab_size=67, hidden_size=24, num_hidden_layers=2, state_size=7, expand=2, conv_kernel=4,
        num_heads=6, head_dim=8, n_groups=2, chunk_size=16, tie_word_embeddings=tied, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    model = Mamba2ForCausalLM(config).eval()
    _perturb(model)
    return model


PEERS = {"mamba": tiny_mamba, "mamba2": tiny_mamba2}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("peer", sorted(PEERS))
def test_converted_logits_and_greedy_generate_match(peer, tied):
    hf = PEERS[peer](tied)
    ours = convert_model(hf)
    assert ours.config.layer_mixers == [peer] * 2 and ours.config.eigval_range == "[0,1]"
    ids = torch.randint(2, 67, (2, 37))  # T = 37 crosses the peer's Mamba-2 chunk of 16
    with torch.no_grad():
        ref, got = hf(ids).logits, ours(ids).logits
    err = (got - ref).abs().max().item()
    assert err <= 1e-4, f"max |logit difference| {err:.2e}"
    prompt = ids[:, :9]
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, **kw), hf.generate(prompt, **kw))


def test_signed_conversion_changes_only_the_gate():
    hf = tiny_mamba2(tied=True)
    pos, neg = convert_model(hf), convert_model(hf, eigval_range="[-1,1]")
    assert neg.config.eigval_range == "[-1,1]"
    for (n1, p1), (n2, p2) in zip(pos.state_dict().items(), neg.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    ids = torch.randint(2, 67, (1, 20))
    with torch.no_grad():
        assert not torch.allclose(pos(ids).logits, neg(ids).logits)


def test_cli_round_trip(tmp_path):
    hf = tiny_mamba(tied=True)
    hf.save_pretrained(tmp_path / "hf")
    convert_cli([str(tmp_path / "hf"), str(tmp_path / "ours")])
    ours = LRNNForCausalLM.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(2, 67, (1, 15))
    with torch.no_grad():
        assert (ours(ids).logits - hf(ids).logits).abs().max() <= 1e-4


def test_unknown_model_type_is_a_clear_error():
    class Fake(torch.nn.Module):
        config = type("C", (), {"model_type": "gpt2"})()

    with pytest.raises(ValueError, match="no converter for model_type 'gpt2'"):
        convert_model(Fake())
