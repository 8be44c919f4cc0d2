"""End-to-end CPU training throughput (forward + backward + AdamW step) of our models against transformers' at the
same sizes, all models of a suite in one run, taking steps in turns (benchmarks/timing.py). Prints JSON.

    python benchmarks/train_throughput.py [--suite mamba|attention] [--steps 5]

- ``mamba``: transformers' ``MambaForCausalLM`` and ``Mamba2ForCausalLM`` (their CPU reference paths) against
  ours converted from them (the same weights) in both ranges, and our [-1,1] DeltaNet; hidden 128, 2 layers,
  state 16, expand 2; Mamba-2: 4 heads of 64, 1 group.
- ``attention``: our all-attention model converted from transformers' ``LlamaForCausalLM`` (SDPA), the same
  weights, 4 heads and GQA with 2 key/value heads; hidden 128, 2 layers, SwiGLU MLP 352.

T 256, batch 4, vocab 1000, fp32. Tokens/s from each model's fastest step; time ratios best of steps against best
of steps and as the median over rounds of the ratio within a round.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from timing import paired_ratio, time_all
from transformers import LlamaConfig, LlamaForCausalLM, Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.convert import convert_model

HIDDEN, LAYERS, STATE, EXPAND, T, BATCH, VOCAB = 128, 2, 16, 2, 256, 4, 1000
SSD_HEAD_DIM, HEADS, MLP = 64, 4, 352  # Mamba-2: d_inner 256 in 4 heads; attention: 4 heads, SwiGLU 352
BASE = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS)


def trainer(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    """A function running one full training step of ``model`` on ``ids``."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def race(models: dict[str, torch.nn.Module], steps: int, pairs: dict[str, tuple[str, str]]) -> dict:
    """Every model's step times, in turns after one warm-up step each: parameters, tokens/s from each model's
    fastest step, and for each ``pairs`` entry ``(a, b)`` the time ratio a / b, best of steps against best of
    steps and as the median over rounds of the ratio within a round."""
    ids = torch.randint(0, VOCAB, (BATCH, T), generator=torch.Generator().manual_seed(0))
    times = time_all({n: trainer(m, ids) for n, m in models.items()}, dict.fromkeys(models, steps))
    return {
        "params": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()},
        "tokens_per_s": {n: BATCH * T / min(ts) for n, ts in times.items()},
        "ratios": {k: min(times[a]) / min(times[b]) for k, (a, b) in pairs.items()},
        "ratios_median_of_rounds": {k: paired_ratio(times[a], times[b]) for k, (a, b) in pairs.items()},
    }


def mamba_suite(steps: int) -> dict:
    ssm = dict(BASE, state_size=STATE, expand=EXPAND)
    heads = dict(num_heads=EXPAND * HIDDEN // SSD_HEAD_DIM, head_dim=SSD_HEAD_DIM, n_groups=1)
    peers = {
        "mamba": MambaForCausalLM(MambaConfig(**ssm, use_mambapy=False)),
        "mamba2": Mamba2ForCausalLM(Mamba2Config(**ssm, **heads, tie_word_embeddings=True)),  # tied, as ours
    }
    models = {}
    for name, peer in peers.items():
        # Ours converted from the peer (lrnn_lm.convert): the same weights, so [0,1] computes the peer's function
        # (tests/test_convert.py) and [-1,1] differs from it only in the range; their time ratio is the cost of the
        # sign, not of another random draw of dt (which sets how many decays flush to 0).
        neg, pos = convert_model(peer, eigval_range="[-1,1]"), convert_model(peer)
        models |= {f"transformers_{name}": peer, f"ours_{name}_[-1,1]": neg, f"ours_{name}_[0,1]": pos}
    deltanet = LRNNConfig(**BASE, mixer="deltanet", num_heads=4, intermediate_size=0, eigval_range="[-1,1]")
    models["ours_deltanet_[-1,1]"] = LRNNForCausalLM(deltanet)
    # Time over time.
    pairs = {
        "ours_mamba_over_transformers": ("transformers_mamba", "ours_mamba_[-1,1]"),
        "ours_mamba2_over_transformers": ("transformers_mamba2", "ours_mamba2_[-1,1]"),
        "ours_mamba2_[0,1]_over_transformers": ("transformers_mamba2", "ours_mamba2_[0,1]"),
        "ours_mamba2_signed_over_unsigned_time": ("ours_mamba2_[-1,1]", "ours_mamba2_[0,1]"),
    }
    shape = {"hidden": HIDDEN, "layers": LAYERS, "state": STATE, "expand": EXPAND, "T": T, "batch": BATCH}
    return {"shape": shape, **race(models, steps, pairs)}


def attention_suite(steps: int) -> dict:
    runs = []
    for kv_heads in (HEADS, HEADS // 2):
        torch.manual_seed(0)
        attention = dict(num_attention_heads=HEADS, num_key_value_heads=kv_heads, attn_implementation="sdpa")
        llama = LlamaForCausalLM(LlamaConfig(**BASE, **attention, intermediate_size=MLP, tie_word_embeddings=False))
        models = {"transformers_llama": llama, "ours_attention": convert_model(llama).float()}
        pair = {"ours_over_llama": ("transformers_llama", "ours_attention")}
        runs.append({"kv_heads": kv_heads, **race(models, steps, pair)})
    return {
        "shape": {"hidden": HIDDEN, "layers": LAYERS, "heads": HEADS, "mlp": MLP, "T": T, "batch": BATCH},
        "runs": runs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("mamba", "attention"), default="mamba")
    p.add_argument("--steps", type=int, default=5, help="timed rounds; each model takes one step per round")
    args = p.parse_args()
    torch.manual_seed(0)
    suite = mamba_suite if args.suite == "mamba" else attention_suite
    print(json.dumps({"threads": torch.get_num_threads(), **suite(args.steps)}, indent=2))


if __name__ == "__main__":
    main()
