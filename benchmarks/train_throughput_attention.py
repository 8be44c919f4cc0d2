"""CPU training throughput (forward + backward + AdamW step) of our all-attention model against transformers'
``LlamaForCausalLM`` (SDPA attention) of the same shape, measured side by side in one run. Prints JSON.

Shape: hidden 128, 2 layers, 4 heads (and a GQA variant with 2 key/value heads), SwiGLU MLP 352, vocab 1000,
T 256, batch 4, fp32. Our model is the converted Llama (``lrnn_lm.convert``), so both hold the same weights.
Steps alternate between the two models so machine load hits both alike (``benchmarks/timing.py``); each reports
its best step.

    python benchmarks/train_throughput_attention.py [--steps 5]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from timing import time_all
from transformers import LlamaConfig, LlamaForCausalLM

from lrnn_lm.convert import convert_model

HIDDEN, LAYERS, HEADS, MLP, T, BATCH, VOCAB = 128, 2, 4, 352, 256, 4, 1000


def trainer(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    """A function running one full training step of ``model``."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def compare(kv_heads: int, steps: int) -> dict:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=MLP,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    llama = LlamaForCausalLM(config)
    ours = convert_model(llama).float()
    ids = torch.randint(0, VOCAB, (BATCH, T), generator=torch.Generator().manual_seed(0))
    runs = {"transformers_llama": trainer(llama, ids), "ours_attention": trainer(ours, ids)}
    times = time_all(runs, dict.fromkeys(runs, steps))  # after one warm-up step each
    tps = {name: BATCH * T / min(ts) for name, ts in times.items()}
    return {
        "kv_heads": kv_heads,
        "params": {"transformers_llama": sum(p.numel() for p in llama.parameters()), "ours": ours.num_parameters()},
        "tokens_per_s": tps,
        "ratio_ours_over_llama": tps["ours_attention"] / tps["transformers_llama"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    result = {
        "threads": torch.get_num_threads(),
        "shape": {"hidden": HIDDEN, "layers": LAYERS, "heads": HEADS, "mlp": MLP, "T": T, "batch": BATCH},
        "runs": [compare(HEADS, args.steps), compare(HEADS // 2, args.steps)],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
