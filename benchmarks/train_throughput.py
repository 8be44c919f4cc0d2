"""End-to-end CPU training throughput (forward + backward + AdamW step) of our Mamba and Mamba-2 against
transformers' ``MambaForCausalLM`` and ``Mamba2ForCausalLM`` (their reference paths on CPU) at the same sizes,
and of our [-1,1] DeltaNet. Mamba-2: 4 heads of 64 channels, 1 group (d_inner 256), transformers' chunk 256.
Tokens/s come from each model's fastest step; the ratios are given from those and as the median over rounds of
the ratio within a round (``benchmarks/timing.py``). Prints JSON.

    python benchmarks/train_throughput.py [--steps 5]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from timing import paired_ratio, time_all
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from lrnn_lm import LRNNConfig, LRNNForCausalLM

HIDDEN, LAYERS, STATE, EXPAND, T, BATCH, VOCAB = 128, 2, 16, 2, 256, 4, 1000
SSD_HEAD_DIM = 64  # Mamba-2: d_inner 256 in 4 heads


def step_times(models: dict[str, torch.nn.Module], rounds: int) -> dict[str, list[float]]:
    """Seconds of each of ``rounds`` full training steps per model, after one warm-up step each.

    The models take turns, one step each per round, so a slow spell of the machine (other jobs, clock changes)
    lands on all of them rather than on whichever happened to be timed then; the ratios stay comparable.
    """
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (BATCH, T), generator=g)
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}

    for model in models.values():
        model.train()

    def step(name: str) -> Callable[[], None]:
        def run() -> None:
            models[name](input_ids=ids, labels=ids, use_cache=False).loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)

        return run

    return time_all({name: step(name) for name in models}, dict.fromkeys(models, rounds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=5, help="timed rounds; each model takes one step per round")
    args = p.parse_args()
    torch.manual_seed(0)
    peer = MambaForCausalLM(
        MambaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            state_size=STATE,
            expand=EXPAND,
            use_mambapy=False,
        )
    )
    peer2 = Mamba2ForCausalLM(
        Mamba2Config(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            state_size=STATE,
            expand=EXPAND,
            num_heads=EXPAND * HIDDEN // SSD_HEAD_DIM,
            head_dim=SSD_HEAD_DIM,
            n_groups=1,
            tie_word_embeddings=True,  # as ours, so both have the same parameters
        )
    )
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, intermediate_size=0)
    ours_mamba = LRNNForCausalLM(
        LRNNConfig(mixer="mamba", state_size=STATE, expand=EXPAND, eigval_range="[-1,1]", **common)
    )
    ours_mamba_pos = LRNNForCausalLM(
        LRNNConfig(mixer="mamba", state_size=STATE, expand=EXPAND, eigval_range="[0,1]", **common)
    )
    mamba2 = dict(mixer="mamba2", state_size=STATE, expand=EXPAND, ssd_head_dim=SSD_HEAD_DIM, ssd_groups=1)
    ours_mamba2 = LRNNForCausalLM(LRNNConfig(**mamba2, eigval_range="[-1,1]", **common))
    ours_mamba2_pos = LRNNForCausalLM(LRNNConfig(**mamba2, eigval_range="[0,1]", **common))
    ours_delta = LRNNForCausalLM(LRNNConfig(mixer="deltanet", num_heads=4, eigval_range="[-1,1]", **common))
    # Each [0,1] model takes its [-1,1] twin's weights, so the pair differs only in eigval_range and their time
    # ratio is the cost of the sign, not of another random draw of dt (which sets how many decays flush to 0).
    ours_mamba_pos.load_state_dict(ours_mamba.state_dict())
    ours_mamba2_pos.load_state_dict(ours_mamba2.state_dict())
    result = {
        "threads": torch.get_num_threads(),
        "shape": {"hidden": HIDDEN, "layers": LAYERS, "state": STATE, "expand": EXPAND, "T": T, "batch": BATCH},
        "params": {
            "transformers_mamba": sum(p.numel() for p in peer.parameters()),
            "ours_mamba": sum(p.numel() for p in ours_mamba.parameters()),
            "transformers_mamba2": sum(p.numel() for p in peer2.parameters()),
            "ours_mamba2": sum(p.numel() for p in ours_mamba2.parameters()),
            "ours_deltanet": sum(p.numel() for p in ours_delta.parameters()),
        },
    }
    times = step_times(
        {
            "transformers_mamba": peer,
            "ours_mamba_[-1,1]": ours_mamba,
            "ours_mamba_[0,1]": ours_mamba_pos,
            "transformers_mamba2": peer2,
            "ours_mamba2_[-1,1]": ours_mamba2,
            "ours_mamba2_[0,1]": ours_mamba2_pos,
            "ours_deltanet_[-1,1]": ours_delta,
        },
        args.steps,
    )
    result["tokens_per_s"] = tps = {name: BATCH * T / min(ts) for name, ts in times.items()}
    result["ratio_ours_mamba_over_transformers"] = tps["ours_mamba_[-1,1]"] / tps["transformers_mamba"]
    result["ratio_ours_mamba2_over_transformers"] = tps["ours_mamba2_[-1,1]"] / tps["transformers_mamba2"]
    # [0,1] computes transformers' function (tests/test_convert.py matches their logits); [-1,1] is the bar's model.
    result["ratio_ours_mamba2_[0,1]_over_transformers"] = tps["ours_mamba2_[0,1]"] / tps["transformers_mamba2"]
    result["ratio_ours_mamba2_signed_over_unsigned_time"] = tps["ours_mamba2_[0,1]"] / tps["ours_mamba2_[-1,1]"]
    # The same ratios as medians over rounds of the ratio within a round (benchmarks/timing.py).
    result["ratios_median_of_rounds"] = {
        "ours_mamba_over_transformers": paired_ratio(times["transformers_mamba"], times["ours_mamba_[-1,1]"]),
        "ours_mamba2_over_transformers": paired_ratio(times["transformers_mamba2"], times["ours_mamba2_[-1,1]"]),
        "ours_mamba2_[0,1]_over_transformers": paired_ratio(times["transformers_mamba2"], times["ours_mamba2_[0,1]"]),
        "ours_mamba2_signed_over_unsigned_time": paired_ratio(times["ours_mamba2_[-1,1]"], times["ours_mamba2_[0,1]"]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
