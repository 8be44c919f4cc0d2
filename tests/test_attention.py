"""The attention mixer alone and in hybrids: packing, left-padded generation, GQA, the sliding window, and the
analyses (spectrum, probes) that skip it. Registry-driven tests (tests/models.py) cover the rest."""

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm import LRNNConfig, LRNNForCausalLM, param_groups
from lrnn_lm.analysis.probes import ProbeSettings, run_linear_probe
from lrnn_lm.analysis.spectrum import collect_spectrum
from lrnn_lm.kernels.testing import rel_rmse
from lrnn_lm.layers import attention
from lrnn_lm.tasks import get_task
from lrnn_lm.tasks.tokenizer import task_tokenizer

from .models import RANGES, tiny_model
from .test_generation import stepwise_logits

TOL = 1e-5
HYBRID = ["deltanet", "deltanet", "deltanet", "attention"]
MODELS = {"attention": "attention", "hybrid": HYBRID, "gqa": "attention", "window": "attention"}
EXTRA = {"gqa": dict(num_heads=4, num_key_value_heads=2, head_dim=6), "window": dict(sliding_window=4)}


def model_for(kind: str, eigval_range: str = "[-1,1]", **kw) -> LRNNForCausalLM:
    return tiny_model(mixer=MODELS[kind], eigval_range=eigval_range, **{**EXTRA.get(kind, {}), **kw})


def left_pad(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(p.shape[1] for p in prompts)
    ids = torch.cat([F.pad(p, (width - p.shape[1], 0)) for p in prompts])
    mask = torch.cat([F.pad(torch.ones_like(p), (width - p.shape[1], 0)) for p in prompts])
    return ids, mask


@pytest.mark.parametrize("span", [2048, 8])
@pytest.mark.parametrize("kind", list(MODELS))
def test_packed_equals_separate(kind, span, monkeypatch):
    """Block-diagonal causal attention: no token sees another sequence; RoPE positions restart per sequence.
    With a span of 8 tokens the packed row is attended in spans [0, 7), [7, 9), [9, 20), [20, 21)."""
    monkeypatch.setattr(attention, "PACKED_SPAN", span)
    model = model_for(kind)
    seqs = [torch.randint(0, 61, (1, n)) for n in (7, 2, 11, 1)]
    cu = torch.tensor([0, 7, 9, 20, 21])
    with torch.no_grad():
        packed = model(torch.cat(seqs, dim=1), cu_seqlens=cu, use_cache=False).logits
        for start, seq in zip(cu[:-1], seqs):
            ref = model(seq, use_cache=False).logits
            assert rel_rmse(packed[:, start : start + seq.shape[1]], ref) <= TOL


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("eigval_range", RANGES)
def test_left_padded_generate_equals_full_forward(kind, eigval_range):
    """Batched left-padded greedy generate == a greedy loop of full forwards over each unpadded prompt, and the
    padded prefill logits == the unpadded ones."""
    model = model_for(kind, eigval_range)
    model.generation_config.pad_token_id = 0
    prompts = [torch.randint(1, 61, (1, n)) for n in (3, 9, 6)]
    ids, mask = left_pad(prompts)
    new = 8
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, use_cache=False).logits
        batched = model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False)
        for row, p in enumerate(prompts):
            n = p.shape[1]
            assert rel_rmse(padded[row : row + 1, -n:], model(p, use_cache=False).logits) <= TOL
            seq = p
            for _ in range(new):
                nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
            assert torch.equal(batched[row, ids.shape[1] :], seq[0, n:]), (row, batched[row], seq)


@pytest.mark.parametrize("kind", list(MODELS))
def test_left_padded_prefill_plus_decode_equals_unpadded(kind):
    """Decoding from a left-padded cache with the full mask (as generate passes it) == the unpadded forward."""
    model = model_for(kind)
    prompts = [torch.randint(1, 61, (1, n)) for n in (4, 10)]
    ids, mask = left_pad(prompts)
    more = torch.randint(1, 61, (2, 5))
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=True)
        steps = []
        for t in range(more.shape[1]):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
            out = model(more[:, t : t + 1], attention_mask=mask, cache=out.cache, use_cache=True)
            steps.append(out.logits)
        steps = torch.cat(steps, dim=1)
        for row, p in enumerate(prompts):
            ref = model(torch.cat([p, more[row : row + 1]], dim=1), use_cache=False).logits[:, -more.shape[1] :]
            assert rel_rmse(steps[row : row + 1], ref) <= TOL


def test_gqa_shapes_and_equivalence_to_repeated_heads():
    """2 key/value heads for 4 query heads: smaller k/v projections and cache, and the same function as full
    multi-head attention whose k/v weights repeat each shared head for its group."""
    gqa = model_for("gqa", num_hidden_layers=1)
    mixer = gqa.model.layers[0].mixer
    assert mixer.q_proj.weight.shape == (24, 24) and mixer.k_proj.weight.shape == (12, 24)
    assert mixer.v_proj.weight.shape == (12, 24) and mixer.o_proj.weight.shape == (24, 24)
    ids = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        cache = gqa(ids, use_cache=True).cache
    keys, values = cache.layers[0].keys, cache.layers[0].values
    assert keys.shape == values.shape == (2, 2, 9, 6)

    mha = LRNNForCausalLM(LRNNConfig(**{**gqa.config.to_diff_dict(), "num_key_value_heads": None})).eval()
    state = gqa.state_dict()
    for name in ("k_proj", "v_proj"):
        w = state[f"model.layers.0.mixer.{name}.weight"]
        state[f"model.layers.0.mixer.{name}.weight"] = w.view(2, 6, 24).repeat_interleave(2, dim=0).reshape(24, 24)
    mha.load_state_dict(state)
    with torch.no_grad():
        assert rel_rmse(mha(ids).logits, gqa(ids).logits) <= TOL


def reference_attention(mixer, x: torch.Tensor, window: int | None) -> torch.Tensor:
    """Softmax attention written out with an explicit [T, T] score matrix, for one unpadded sequence."""
    B, T, _ = x.shape
    H, Hkv, D = mixer.num_heads, mixer.num_kv_heads, mixer.head_dim
    q = mixer.q_proj(x).view(B, T, H, D)
    k = mixer.k_proj(x).view(B, T, Hkv, D).repeat_interleave(H // Hkv, dim=2)
    v = mixer.v_proj(x).view(B, T, Hkv, D).repeat_interleave(H // Hkv, dim=2)
    cos, sin = attention.rope_cos_sin(torch.arange(T)[None], D, mixer.config.rope_theta, x.dtype)
    cos, sin = cos[:, :, None], sin[:, :, None]
    q, k = q * cos + attention.rotate_half(q) * sin, k * cos + attention.rotate_half(k) * sin
    scores = torch.einsum("bthd,bshd->bhts", q, k) / D**0.5
    i, j = torch.arange(T)[:, None], torch.arange(T)[None]
    allowed = (j <= i) & ((i - j < window) if window else True)
    scores = scores.masked_fill(~allowed, float("-inf"))
    o = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)
    return mixer.o_proj(o.reshape(B, T, H * D))


@pytest.mark.parametrize("window", [None, 1, 3, 50])
def test_mixer_equals_written_out_attention(window):
    model = model_for("gqa", sliding_window=window, num_hidden_layers=1)
    mixer = model.model.layers[0].mixer
    x = torch.randn(2, 13, 24)
    with torch.no_grad():
        assert rel_rmse(mixer(x), reference_attention(mixer, x, window)) <= TOL


def test_sliding_window_sees_exactly_the_last_w_tokens():
    """One attention layer with window 4: changing token 0 changes outputs at positions 0-3 only."""
    model = model_for("window", num_hidden_layers=1)
    ids = torch.randint(1, 61, (1, 12))
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] % 60) + 1
    with torch.no_grad():
        a, b = model(ids, use_cache=False).logits, model(changed, use_cache=False).logits
    differs = (a - b).abs().amax(-1)[0] > 1e-6
    assert differs[:4].all() and not differs[4:].any(), differs


@pytest.mark.parametrize("prefill,chunk", [(1, 1), (5, 3), (9, 1)])
def test_sliding_window_prefill_plus_decode(prefill, chunk):
    model = model_for("window")
    ids = torch.randint(0, 61, (2, 17))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
    assert rel_rmse(stepwise_logits(model, ids, prefill, chunk), full) <= TOL


def test_packed_spans_group_whole_sequences():
    spans = attention.packed_spans(torch.tensor([0, 3000, 3100, 5000, 8000]), span=2048)
    assert [(a, b) for a, b, _ in spans] == [(0, 3000), (3000, 5000), (5000, 8000)]
    assert spans[0][2] is None and spans[1][2].tolist() == [0, 100, 2000] and spans[2][2] is None


def test_windowed_cache_layer_decodes_exactly(monkeypatch):
    """The mixer also works with transformers' windowed cache layer (which keeps only the last window - 1 keys),
    should LRNNConfig.layer_types ever give it "sliding_attention": decode and left-padded generate stay exact."""
    monkeypatch.setattr(attention.AttentionMixer, "cache_layer_type", "sliding_attention")
    model = tiny_model(mixer=["deltanet", "attention"], sliding_window=4)
    ids = torch.randint(0, 61, (2, 17))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        assert type(model(ids[:, :3]).cache.layers[1]).__name__ == "DynamicSlidingWindowLayer"
    for prefill, chunk in [(1, 1), (5, 3), (9, 1)]:
        assert rel_rmse(stepwise_logits(model, ids, prefill, chunk), full) <= TOL
    model.generation_config.pad_token_id = 0
    prompts = [torch.randint(1, 61, (1, n)) for n in (3, 9)]
    padded, mask = left_pad(prompts)
    with torch.no_grad():
        batched = model.generate(padded, attention_mask=mask, max_new_tokens=8, do_sample=False)
        for row, p in enumerate(prompts):
            single = model.generate(p, max_new_tokens=8, do_sample=False)
            assert torch.equal(batched[row, padded.shape[1] :], single[0, p.shape[1] :])


def test_mask_covering_only_new_tokens_is_refused():
    model = model_for("attention")
    ids = torch.randint(1, 61, (1, 6))
    with torch.no_grad():
        cache = model(ids, use_cache=True).cache
        with pytest.raises(ValueError, match="attention_mask covers 1 tokens"):
            model(ids[:, :1], attention_mask=torch.ones(1, 1, dtype=torch.long), cache=cache)


def test_config_checks_name_the_field():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        LRNNConfig(mixer="attention", hidden_size=24, num_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="sliding_window"):
        LRNNConfig(mixer="attention", sliding_window=0)
    with pytest.raises(ValueError, match="head_dim"):
        LRNNConfig(mixer="attention", hidden_size=20, num_heads=4)  # head_dim 5: RoPE needs it even


def test_biases_and_norms_take_no_weight_decay():
    model = model_for("hybrid", attention_bias=True)
    groups = param_groups(model.named_parameters(), model.no_weight_decay(), weight_decay=0.1)
    no_decay_ids = {id(p) for p in groups[1]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in no_decay_ids}
    prefix = "model.layers.3."
    assert {f"{prefix}mixer.{p}_proj.bias" for p in "qkvo"} | {f"{prefix}mixer_norm.weight"} <= names
    assert f"{prefix}mixer.q_proj.weight" not in names


def test_spectrum_skips_attention_layers(capsys):
    model = model_for("hybrid")
    windows = [torch.randint(1, 61, (n,)).tolist() for n in (9, 4)]
    layers = collect_spectrum(model, windows, batch_size=2)
    assert "layer 4 (attention) has no state transitions; skipped" in capsys.readouterr().out
    assert [s["count"] for s in layers] == [13 * 2] * 3 + [0]  # DeltaNet: one value per head and token
    assert layers[3]["skipped"] and layers[3]["frac_negative"] is None
    assert all("skipped" not in s for s in layers[:3])


def test_probes_skip_attention_layers(capsys):
    tokenizer = task_tokenizer(get_task("parity"))
    model = tiny_model(mixer=["deltanet", "attention"], vocab_size=len(tokenizer))
    settings = ProbeSettings(train_seqs=16, eval_seqs=8, min_len=4, max_len=6, long_len=10)
    result = run_linear_probe(model, tokenizer, "parity", settings)
    assert "probe parity: layer 2 (attention) has no recurrent state; skipped" in capsys.readouterr().out
    embeddings, deltanet, attention = result["layers"]
    assert attention["skipped"] and attention["short"] is None
    assert deltanet["short"] is not None and "skipped" not in deltanet
