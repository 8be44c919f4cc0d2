"""Activation memory of training: saved bytes per token per block, and the predicted peak of every shipped config.

    python benchmarks/memory.py [--json out.json] [--path cuda|cpu|both] [--no-peers]

What autograd saves for the backward (parameters left out), under bf16 autocast on CPU, per token: the difference
between two sequence lengths over the extra tokens, on the ``cpu`` code path and on the ``cuda`` one (the GPU's
host code run on CPU, every Triton launch a no-op), measured by ``lrnn_lm.analysis.activation_memory``. How it
measures, what the peak prediction assumes, and the figures: docs/memory.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's lrnn_lm, not an installed copy's

from lrnn_lm import LRNNConfig, LRNNForCausalLM  # noqa: E402
from lrnn_lm.analysis.activation_memory import (  # noqa: E402
    autocast_saved,
    block_bytes,
    cuda_code_path,
    head_bytes,
    per_token,
)

KB = 1024
GIB = 1024**3


def shipped_configs() -> dict[str, dict]:
    """``{name: {"model": LRNNConfig kwargs, "micro_batch": int, "seq_len": int}}`` of configs/train/*.yaml
    (one of each ``_neg``/``_pos`` pair: they differ only in the eigenvalue range, measured separately)."""
    out = {}
    for path in sorted((ROOT / "configs" / "train").glob("*_neg.yaml")):
        raw = yaml.safe_load(path.read_text())
        spec = {"micro_batch": raw["train"]["micro_batch_size"], "seq_len": raw["data"]["seq_len"]}
        out[path.stem.removesuffix("_neg")] = {"model": raw["model"], **spec}
    return out


def config_of(model: dict, eigval_range: str, path: str = "cpu") -> LRNNConfig:
    """The config with ``eigval_range``; on the ``cuda`` path with the Triton backends, as ``auto`` picks on a GPU."""
    backend = {"kernel_backend": "triton"} if path == "cuda" else {}
    return LRNNConfig(**{**model, "eigval_range": eigval_range, **backend})


def n_params(config: LRNNConfig) -> int:
    with torch.device("meta"):
        return LRNNForCausalLM(config).num_parameters()


# The per-block memory bars (docs/memory.md) are at d 1024; the shipped Gated DeltaNet and DeltaProduct configs are
# 1.3B (d 2048). Their shape scaled to d 1024: heads x head_dim 0.75 d (3 heads of 256, values 2x wider), MLP 2.75 d.
D1024 = {
    "gated_deltanet_1.3b": {"hidden_size": 1024, "num_heads": 3, "intermediate_size": 2816},
    "deltaproduct_1.3b": {"hidden_size": 1024, "num_heads": 3, "intermediate_size": 2816},
}


def measure_all(paths: tuple[str, ...] = ("cuda", "cpu"), peers: bool = True) -> dict:
    """Every figure of the table: per-block bytes per token by config, range and path; head and loss; peers."""
    torch.manual_seed(0)
    results: dict = {"blocks": {}, "blocks checkpointed": {}, "head": {}, "peers": {}, "configs": {}}
    configs = shipped_configs()
    for path in paths:
        ctx = cuda_code_path if path == "cuda" else contextlib.nullcontext
        with ctx():
            for name, spec in configs.items():
                for rng in ("[-1,1]", "[0,1]"):
                    config = config_of(spec["model"], rng, path)
                    for i, mixer in enumerate(config.layer_mixers):
                        key = f"{name} {mixer} {rng} {path}"
                        if key not in results["blocks"]:
                            results["blocks"][key] = per_token(lambda n, c=config, i=i: block_bytes(c, i, n))
                            results["blocks checkpointed"][key] = per_token(
                                lambda n, c=config, i=i: block_bytes(c, i, n, checkpointing=True)
                            )
                    if name in D1024:
                        small = config_of({**spec["model"], **D1024[name]}, rng, path)
                        key = f"{name} at d 1024 {small.layer_mixers[0]} {rng} {path}"
                        results["blocks"][key] = per_token(lambda n, c=small: block_bytes(c, 0, n))
            some = config_of(next(iter(configs.values()))["model"], "[-1,1]")
            for fused in (False, True):
                results["head"][f"{'chunked' if fused else 'logits'} {path}"] = per_token(
                    lambda n, f=fused, c=some: head_bytes(c, n, fused=f)
                )
    if peers:
        results["peers"] = measure_peers()
    for name, spec in configs.items():
        results["configs"][name] = predict_peak(name, spec, results)
    return results


def predict_peak(name: str, spec: dict, results: dict, path: str = "cuda") -> dict:
    """Predicted peak GiB of a config at its micro-batch on one GPU (docs/memory.md)."""
    config = config_of(spec["model"], "[-1,1]")
    tokens = spec["micro_batch"] * spec["seq_len"]
    blocks = [results["blocks"].get(f"{name} {m} [-1,1] {path}") for m in config.layer_mixers]
    if any(b is None for b in blocks):
        return {}
    out = {"tokens": tokens, "params": n_params(config)}
    ckpt = [results["blocks checkpointed"].get(f"{name} {m} [-1,1] {path}") for m in config.layer_mixers]
    # label: (saved per block, head, blocks' saved sets live in the backward's working memory: with block
    # checkpointing the block being recomputed keeps its full set on top)
    variants = {"logits": (blocks, "logits", 1), "chunked": (blocks, "chunked", 1)}
    variants["chunked + blocks checkpointing"] = (ckpt, "chunked", 2)
    for label, (per_block, head, working) in variants.items():
        head_b = results["head"].get(f"{head} {path}")
        if head_b is not None and None not in per_block:
            saved = tokens * (sum(per_block) + head_b + 8)
            peak = 16 * out["params"] + saved + working * tokens * max(blocks)
            out[label] = {"saved_gib": saved / GIB, "peak_gib": peak / GIB}
    if "chunked + blocks checkpointing" in out:
        out["chunked + blocks checkpointing"]["blocks_saved_ratio"] = sum(blocks) / sum(ckpt)
    return out


def measure_peers() -> dict:
    """The peers' blocks measured the same way, at d 1024: fla's DeltaNet and Gated DeltaNet blocks through the GPU
    path (fla's own host code, no-op Triton launches, as ours), and transformers' Mamba and Mamba-2 (their torch
    paths, as on CPU; on a GPU transformers runs mamba_ssm's kernels when installed)."""
    from fla.models import DeltaNetConfig, GatedDeltaNetConfig
    from fla.models.delta_net.modeling_delta_net import DeltaNetBlock
    from fla.models.gated_deltanet.modeling_gated_deltanet import GatedDeltaNetBlock
    from transformers import Mamba2Config, MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaBlock
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Block

    fla = dict(hidden_size=1024, intermediate_size=2816, allow_neg_eigval=True)
    mamba2 = dict(hidden_size=1024, state_size=128, expand=2, head_dim=64, num_heads=32, n_groups=1)
    peers = {  # a "GPU path" label runs under cuda_code_path
        "fla DeltaNet (allow_neg_eigval, GPU path)": lambda: DeltaNetBlock(DeltaNetConfig(**fla, num_heads=8), 0),
        "fla GatedDeltaNet at d 1024 (allow_neg_eigval, GPU path)": lambda: GatedDeltaNetBlock(
            GatedDeltaNetConfig(**fla, num_heads=3, head_dim=256, expand_v=2), 0
        ),
        "transformers Mamba (torch path)": lambda: MambaBlock(MambaConfig(hidden_size=1024, state_size=16), 0),
        "transformers Mamba2 (torch path)": lambda: Mamba2Block(Mamba2Config(**mamba2), 0),
    }
    out = {}
    for label, build in peers.items():
        with cuda_code_path() if "GPU path" in label else contextlib.nullcontext():
            block = build().train()
            out[label] = per_token(
                lambda T, b=block: autocast_saved(lambda: b(torch.randn(1, T, 1024, requires_grad=True)), b)
            )
    return out


def print_table(results: dict) -> None:
    print("Saved bytes per token per block (KB), bf16 autocast, B 1, per-token difference of T 128 and 256")
    sections = {
        "block": "blocks",
        "block, with blocks checkpointing": "blocks checkpointed",
        "head + loss (vocab 32000, d 1024)": "head",
        "peer block (d 1024)": "peers",
    }
    for i, (title, key) in enumerate(sections.items()):
        if results[key] or key != "peers":
            print(f"{chr(10) * (i > 0)}{title:58s} {'KB/token':>9s}")
        for name, value in results[key].items():
            print(f"{name:58s} {value / KB:9.1f}")
    print("\nPredicted peak of each shipped config at its micro-batch, one GPU, no sharding, CUDA path (GiB)")
    print(
        f"{'config':22s} {'tokens':>7s} {'params':>7s} {'saved/peak logits':>18s} {'saved/peak chunked':>19s} "
        f"{'saved/peak chunked+blocks ckpt':>31s} {'blocks saved ratio':>19s}"
    )
    for name, pred in results["configs"].items():
        if not pred:
            continue
        heads = [pred.get(head, {}) for head in ("logits", "chunked", "chunked + blocks checkpointing")]
        cols = [f"{v.get('saved_gib', 0):.1f} / {v.get('peak_gib', 0):.1f}" for v in heads]
        ratio = pred.get("chunked + blocks checkpointing", {}).get("blocks_saved_ratio", 0)
        print(
            f"{name:22s} {pred['tokens']:7d} {pred['params'] / 1e6:6.0f}M {cols[0]:>18s} {cols[1]:>19s} "
            f"{cols[2]:>31s} {ratio:18.1f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--path", choices=("cuda", "cpu", "both"), default="both")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    paths = ("cuda", "cpu") if args.path == "both" else (args.path,)
    results = measure_all(paths, peers=not args.no_peers)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
