"""Evaluation: the plain lm_eval CLI on a train.py checkpoint, batching invariance under lm-eval, linear probes,
the eigenvalue spectrum, and eval.py end to end (offline, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.analysis.probe_data import probe_sequences
from lrnn_lm.analysis.probes import ProbeSettings, accuracy, fit_linear_probe, run_linear_probe
from lrnn_lm.analysis.spectrum import collect_spectrum
from lrnn_lm.tasks import get_task
from lrnn_lm.tasks.tokenizer import task_tokenizer

from .models import MIXERS, RECURRENT_MIXERS, push_gates_negative, tiny_model
from .training_utils import ROOT, TINY_MODEL, data_args, make_corpus, run_train

# Subprocesses run offline (no Hub) and on one thread: tiny models run faster on one, much faster when other jobs
# load the machine.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def checkpoint(corpus, tmp_path_factory) -> Path:
    """A [-1,1] DeltaNet checkpoint with a 300-token BPE tokenizer, as train.py writes it (OUT/final)."""
    out = tmp_path_factory.mktemp("run") / "neg"
    args = data_args(corpus) + [TINY_MODEL, f"--out_dir={out}", "--data.seq_len=64", "--train.micro_batch_size=4"]
    args += ["--train.max_steps=2", "--train.eval_batches=1", "--logging.progress=false", "--train.threads=1"]
    r = run_train(args)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "final"


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
    return model, AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)


def direct_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) from one unpadded forward, split into tokens as lm-eval does."""
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    n_ctx = len(tokenizer(context, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logp = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(n_ctx, len(whole))))


def test_plain_lm_eval_cli_scores_our_model(checkpoint, loaded, tmp_path):
    """`lm_eval --model hf` in a fresh process (no lrnn_lm import before loading: the checkpoint's remote code
    does it), batched, and its per-choice loglikelihoods equal a direct unpadded forward."""
    lm_eval = Path(sys.executable).parent / "lm_eval"
    cmd = [str(lm_eval)] if lm_eval.exists() else [sys.executable, "-m", "lm_eval"]
    cmd += ["--model", "hf", "--model_args", f"pretrained={checkpoint},trust_remote_code=True"]
    cmd += ["--include_path", "configs/lm_eval_tasks", "--tasks", "lrnn_parity", "--limit", "6", "--device", "cpu"]
    cmd += ["--batch_size", "4", "--output_path", str(tmp_path), "--log_samples"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **ONE_THREAD_ENV})
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    assert result["n-samples"]["lrnn_parity"]["effective"] == 6
    samples = [json.loads(line) for line in next(tmp_path.rglob("samples_lrnn_parity_*.jsonl")).open()]
    model, tokenizer = loaded
    correct = 0
    for s in samples:
        scores = [float(resp[0][0]) for resp in s["resps"]]
        for (_, args), score in zip(sorted(s["arguments"].items()), scores):
            assert abs(score - direct_loglikelihood(model, tokenizer, args["arg_0"], args["arg_1"])) < 1e-4
        correct += int(max(range(len(scores)), key=scores.__getitem__) == s["doc"]["answer"])
    assert result["results"]["lrnn_parity"]["acc,none"] == pytest.approx(correct / len(samples))


def _requests(kind: str, pairs: list[tuple]) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(pairs)]


@pytest.mark.parametrize("mixer", MIXERS)
def test_batched_lm_eval_equals_unbatched(mixer, loaded, corpus):
    """Right-padded loglikelihood batches and left-padded generate_until batches give the batch-size-1 results.

    A randomly perturbed model (not the 2-step checkpoint, whose greedy outputs barely depend on the context)
    makes generate_until sensitive to padding leaking into the state.
    """
    from lm_eval.models.huggingface import HFLM

    tokenizer = loaded[1]
    model = tiny_model(mixer=mixer, vocab_size=len(tokenizer))
    texts = [json.loads(line)["text"] for line in open(corpus["val"])]
    parity = [json.loads(line) for line in open(ROOT / "configs/lm_eval_tasks/lrnn_parity.jsonl")][:6]
    pairs = [(d["context"], f" {c}") for d in parity for c in ("0", "1")]
    pairs += [(t[: 40 + 37 * i], t[40 + 37 * i : 70 + 41 * i]) for i, t in enumerate(texts)]  # multi-token answers
    context_lengths = {len(tokenizer(c).input_ids) for c, _ in pairs}
    assert len(context_lengths) > 3  # the batches really are padded
    one, five = (HFLM(pretrained=model, tokenizer=tokenizer, batch_size=b) for b in (1, 5))
    single = one.loglikelihood(_requests("loglikelihood", pairs))
    batched = five.loglikelihood(_requests("loglikelihood", pairs))
    direct = [direct_loglikelihood(model, tokenizer, c, x) for c, x in pairs]
    # fp32 sums of up to ~60 token log-probs: 1e-4 absolute plus 1e-6 relative (measured: at most 3e-5)
    for a, b, d in zip(single, batched, direct):
        assert abs(a[0] - b[0]) <= 1e-4 + 1e-6 * abs(a[0]) and abs(a[0] - d) <= 1e-4 + 1e-6 * abs(d), (a, b, d)

    gen = {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}
    prompts = [(t[: 20 + 50 * i], gen) for i, t in enumerate(texts[:3])]
    out1 = one.generate_until(_requests("generate_until", prompts))
    out3 = five.generate_until(_requests("generate_until", prompts))  # 3 prompts: one left-padded batch
    assert out1 == out3
    assert all(out1), out1  # something was generated, so the comparison is not between empty strings


def parity_tracker(eigval_range: str):
    """A 1-layer DeltaNet set by hand to track parity when its range is [-1,1]: k = q = e1 for every token,
    v constant and positive, beta = 2 sigmoid(+-28) = 2 for "1" and 0 for "0". The e1-row of the state then
    follows s_t = (1 - beta) s_{t-1} + beta v, flipping between 0 and 2v with the parity; o_proj writes it
    to hidden dimension 4. In [0,1], beta = 1 for "1" resets the row to v instead ("a 1 was seen")."""
    tokenizer = task_tokenizer(get_task("parity"))
    zero, one = tokenizer.convert_tokens_to_ids(["0", "1"])
    config = LRNNConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        num_hidden_layers=1,
        num_heads=1,
        mixer="deltanet",
        eigval_range=eigval_range,
        use_short_conv=False,
        intermediate_size=0,
        pad_token_id=0,
        eos_token_id=0,
    )
    model = LRNNForCausalLM(config).eval()
    mixer = model.model.layers[0].mixer
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in (model.model.layers[0].mixer_norm, mixer.o_norm, model.model.norm_f):
            norm.weight.fill_(1.0)
        emb = model.model.embeddings.weight
        emb[zero, 0] = emb[one, 1] = 1.0  # after the RMSNorm: sqrt(8) e0 or sqrt(8) e1
        mixer.q_proj.weight[0, :2] = mixer.k_proj.weight[0, :2] = 5.0  # silu, then L2 norm: e1
        mixer.v_proj.weight[:, :2] = 1.0
        mixer.b_proj.weight[0, 0], mixer.b_proj.weight[0, 1] = -10.0, 10.0  # beta logits -28 for "0", +28 for "1"
        mixer.o_proj.weight[4, 0] = 1.0
    return model, tokenizer


def test_linear_probe_recovers_parity_from_hand_set_deltanet():
    settings = ProbeSettings(train_seqs=96, eval_seqs=48, min_len=4, max_len=16, long_len=64)
    signed = run_linear_probe(*parity_tracker("[-1,1]"), "parity", settings)
    embeddings, layer = signed["layers"]
    assert layer["short"] >= 0.99 and layer["long"] >= 0.99, layer
    assert signed["n"]["long"] >= 2000
    # Controls on the same pipeline: the current token alone says nothing about the parity of a long prefix,
    # and the [0,1] twin of the model only remembers whether a 1 was seen.
    assert abs(embeddings["long"] - 0.5) < 0.1, embeddings
    unsigned = run_linear_probe(*parity_tracker("[0,1]"), "parity", settings)
    assert abs(unsigned["layers"][1]["long"] - 0.5) < 0.1, unsigned["layers"]


def test_linear_probe_on_random_features_is_at_chance():
    """Gaussian features with random labels: the probe fits its training set, and held out it is at chance."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2300, 256, generator=g), torch.randint(0, 2, (2300,), generator=g)
    probe = fit_linear_probe(x[:300], y[:300], num_classes=2)
    assert accuracy(probe, x[:300], y[:300]) > 0.95  # it can overfit: held-out accuracy measures something
    assert abs(accuracy(probe, x[300:], y[300:]) - 0.5) < 0.1


@pytest.mark.parametrize("name", ["parity", "mod_arith", "s3"])
def test_probe_labels_end_with_the_task_answer(name):
    """The running-state labels are built independently of the generators; at the end they must agree."""
    task, sequences = probe_sequences(name, 40, 5, 15, split="check", seed=3)
    for i, seq in enumerate(sequences):
        _, answer, choices = task.render(task.example(3, i, 5 + i % 11, split="check"))
        assert seq.labels[-1] == choices.index(answer)
        assert len(seq.labels) == len(seq.pieces)


@pytest.mark.parametrize("mixer", RECURRENT_MIXERS)
def test_spectrum_signs_and_padding(mixer):
    windows = [torch.randint(1, 61, (n,)).tolist() for n in (17, 5, 30)]
    unsigned = tiny_model(mixer=mixer, eigval_range="[0,1]")
    signed = tiny_model(mixer=mixer, eigval_range="[-1,1]")
    for m in (unsigned, signed):  # push the gates to the negative side, as in test_modeling
        push_gates_negative(m)
    # Eigenvalues per token, read off the mixer itself (Mamba: d_inner x N gates; DeltaNet: one per head).
    probe = unsigned.model.layers[0].mixer.transition_eigenvalues(torch.zeros(1, 1, 24), None, None)
    per_token = probe[0, 0].numel()
    for layer in collect_spectrum(unsigned, windows, batch_size=3):
        assert layer["count"] == 52 * per_token  # padded positions are not counted
        assert layer["frac_negative"] == 0 and layer["min"] >= 0 and layer["max"] <= 1
        assert sum(layer["hist"]["counts"]) == layer["count"]
    batched = collect_spectrum(signed, windows, batch_size=3)
    assert all(layer["frac_negative"] > 0 and -1 <= layer["min"] < 0 for layer in batched)
    assert any(layer["frac_near_minus_one"] > 0 for layer in batched)
    for b, s in zip(batched, collect_spectrum(signed, windows, batch_size=1)):
        assert b["count"] == s["count"] and b["mean"] == pytest.approx(s["mean"], abs=1e-5)
        assert b["frac_negative"] == pytest.approx(s["frac_negative"], abs=1e-3)


def test_eval_py_writes_all_outputs(checkpoint, corpus, tmp_path):
    """Two checkpoints, local tasks plus one Hub task that must fail cleanly offline, probes and spectrum."""
    pos = tmp_path / "pos" / "final"
    torch.manual_seed(0)
    config = LRNNConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, mixer="mamba", eigval_range="[0,1]")
    LRNNForCausalLM(config).save_pretrained(pos)
    AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True).save_pretrained(pos)
    out = tmp_path / "eval"
    cmd = [sys.executable, str(ROOT / "eval.py"), "--checkpoint", str(checkpoint), str(pos), "--output", str(out)]
    cmd += ["--tasks", "lrnn_parity,lambada_openai", "--probes", "parity", "--limit", "4", "--batch_size", "8"]
    cmd += ["--probe_train_seqs", "32", "--probe_eval_seqs", "8", "--probe_long_length", "24"]
    cmd += ["--spectrum", "--spectrum_text", str(corpus["val"]), "--spectrum_tokens", "300", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **ONE_THREAD_ENV})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'lambada_openai' FAILED" in r.stdout + r.stderr

    results = json.loads((out / "results.json").read_text())["checkpoints"]
    assert list(results) == ["neg", "pos"]
    for run in results.values():
        assert not run["tasks"]["lambada_openai"]["ok"] and "lambada_openai" in run["tasks"]["lambada_openai"]["error"]
        parity = run["tasks"]["lrnn_parity"]
        assert parity["ok"] and parity["n_samples"]["lrnn_parity"]["effective"] == 4
        assert 0 <= parity["results"]["lrnn_parity"]["acc,none"] <= 1
    table = (out / "table.md").read_text()
    assert "| neg | deltanet [-1,1] 2L d32 | n/a | n/a | n/a |" in table and "| pos | mamba [0,1] 2L d32 |" in table
    assert "lambada_openai failed" in table and "| lrnn_parity | acc |" in table

    probes = json.loads((out / "probes.json").read_text())
    for label in ("neg", "pos"):
        layers = probes[label]["linear"]["parity"]["layers"]
        assert [entry["layer"] for entry in layers] == [0, 1, 2]
        assert all(0 <= entry[k] <= 1 for entry in layers for k in ("train", "short", "long"))
        assert probes[label]["in_context"]["lrnn_parity"]["ok"]
    assert "| layer | neg short | neg long | pos short | pos long |" in (out / "probes.md").read_text()

    spectrum = json.loads((out / "spectrum.json").read_text())["checkpoints"]
    assert [s["mixer"] for s in spectrum["neg"]] == ["deltanet"] * 2 and len(spectrum["pos"]) == 2
    assert all(s["count"] > 0 and s["frac_negative"] == 0 for s in spectrum["pos"])
    assert (out / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "frac < 0" in (out / "spectrum.md").read_text()
