"""Activation memory of training: saved bytes per token per block, and the predicted peak of every shipped config.

What it measures: the tensors autograd keeps for the backward (``torch.autograd.graph.saved_tensors_hooks``), one
storage counted once, parameters left out, under bf16 autocast, on CPU. Per token, as the difference between two
sequence lengths divided by the extra tokens, so whatever does not grow with the tokens (autocast's weight copies,
states, a weight-sized gradient) drops out.

Two code paths:

- ``cpu``: what runs on CPU (the ``chunk`` backends, the channels-last conv).
- ``cuda``: what runs on a GPU, on CPU. Every Triton launch (fla's kernels and ours) is made a no-op, so the
  host code of the Triton backends (their allocations, ``.contiguous()`` copies and ``save_for_backward`` calls)
  runs exactly as on the GPU and only the kernels' values are missing (the buffers they would write read as
  zeros). The layers take their CUDA paths too: fla's fused norms, short conv, SwiGLU and linear cross
  entropy (``lrnn_lm/layers/fused.py``), and the non-CPU short conv where fla's is not used (decode).
  tests/kernels/test_triton_saved_bytes.py checks, under ``TRITON_INTERPRET=1``, that each Triton backend and
  fused module saves the same bytes with real kernels as with no-op ones.
  Autocast is CPU autocast, whose op lists are close to, not identical with, CUDA's.

Peak prediction for a config at its micro-batch (one GPU, no sharding):
``16 B x params`` (fp32 weights, grads, AdamW's two moments) ``+ tokens x (layers x block + head and loss +
embedding)`` saved activations ``+ tokens x one block`` (the backward's working set at the largest block: the
gradients in flight and the recomputed pieces). The last term is an estimate, not a measurement; no GPU peak has
been measured against this table yet.

Usage::

    python benchmarks/memory.py                 # both paths, every shipped config, a table
    python benchmarks/memory.py --json out.json # the same figures as JSON too
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import yaml
from torch.utils.checkpoint import checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lrnn_lm import LRNNConfig, LRNNForCausalLM  # noqa: E402
from lrnn_lm.layers import Mixer  # noqa: E402
from lrnn_lm.linear_cross_entropy import linear_causal_lm_loss  # noqa: E402
from lrnn_lm.modeling_lrnn import LRNNBlock  # noqa: E402

KB = 1024
GIB = 1024**3
SHORT, LONG = 128, 256  # the two lengths of the per-token difference (multiples of every kernel's chunk)


def saved_bytes(fn: Callable[[], object], exclude: tuple[torch.Tensor, ...] = ()) -> int:
    """Bytes of the distinct storages autograd saves while ``fn()`` runs, without those of ``exclude``
    (parameters). What ``fn`` returns is dropped after the count."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}
    keep = []  # hold every saved tensor so no storage is freed and its address reused during the count

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and storage.nbytes():
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    keep.clear()
    return sum(seen.values())


def per_token(measure: Callable[[int], int], batch: int = 1) -> float:
    """Saved bytes per token: ``(measure(LONG) - measure(SHORT)) / (batch * (LONG - SHORT))``."""
    return (measure(LONG) - measure(SHORT)) / (batch * (LONG - SHORT))


def _zero_filled(empty: Callable) -> Callable:
    def zeros(*args, **kwargs):
        return empty(*args, **kwargs).zero_()

    return zeros


@contextlib.contextmanager
def cuda_code_path() -> Iterator[None]:
    """Run the GPU code path on CPU with no-op Triton kernels (see the module docstring)."""
    from triton.runtime import jit

    from lrnn_lm.kernels import backend
    from lrnn_lm.layers import conv, fused

    patches = [
        (jit.KernelInterface, "__getitem__", lambda self, grid: lambda *a, **k: None),
        (backend, "triton_usable", lambda device: True),
        (conv, "conv2d_channels_last", conv.shifted_multiply_add),
        (fused, "use_fla", lambda x: fused.fla_available()),
        (fused, "recompute_in_backward", lambda x: True),
        # Buffers the skipped kernels would have written read as zeros, not as uninitialised memory, so the value
        # checks of the ops downstream (finite inputs) pass; what is allocated and saved does not change.
        (torch, "empty", _zero_filled(torch.empty)),
        (torch, "empty_like", _zero_filled(torch.empty_like)),
        (torch.Tensor, "new_empty", _zero_filled(torch.Tensor.new_empty)),
    ]
    try:
        from triton.runtime import interpreter

        patches.append((interpreter.InterpretedFunction, "__getitem__", lambda self, grid: lambda *a, **k: None))
    except ImportError:
        pass
    old = [(obj, name, obj.__dict__[name] if name in obj.__dict__ else getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, new in patches:
            setattr(obj, name, new)
        yield
    finally:
        for obj, name, value in old:
            setattr(obj, name, value)


def block_bytes(
    config: LRNNConfig, layer: int, T: int, batch: int = 1, dtype=torch.bfloat16, checkpointing: bool = False
) -> int:
    """Saved bytes of one training forward of block ``layer`` on a ``[batch, T, d]`` fp32 residual stream (with
    ``checkpointing``: as under ``train.activation_checkpointing: blocks``)."""
    block = LRNNBlock(config, layer).train()
    if checkpointing:  # what PreTrainedModel.activation_checkpointing_enable sets on every such layer
        block.gradient_checkpointing = True
        block._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
    for module in block.modules():  # the model's own init of mixer parameters (A_log, D, dt bias, ...)
        if isinstance(module, Mixer):
            module.init_weights()
    hidden = torch.randn(batch, T, config.hidden_size, requires_grad=True)

    def run():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return block(hidden)

    return saved_bytes(run, exclude=tuple(block.parameters()))


def head_bytes(config: LRNNConfig, T: int, batch: int = 1, dtype=torch.bfloat16, fused: bool = False) -> int:
    """Saved bytes of the final norm, the LM head and the training loss on ``[batch, T, d]`` (fused: the
    loss the training step uses without logits; otherwise the model's logits and its loss)."""
    model = _head_model(config)
    hidden = torch.randn(batch, T, config.hidden_size, requires_grad=True)
    labels = torch.randint(0, config.vocab_size, (batch, T))

    def run():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return head_loss(model, hidden, labels, fused)

    return saved_bytes(run, exclude=tuple(model.parameters()))


def head_loss(model: LRNNForCausalLM, hidden: torch.Tensor, labels: torch.Tensor, fused: bool) -> torch.Tensor:
    """The training step's loss from the last block's output: ``norm_f``, ``lm_head`` and the loss."""
    hidden = model.model.norm_f(hidden)
    if fused:
        return linear_causal_lm_loss(hidden, model.lm_head.weight, labels)
    logits = model.lm_head(hidden).float()
    return model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size)


def _head_model(config: LRNNConfig) -> LRNNForCausalLM:
    small = LRNNConfig(**{**config.to_diff_dict(), "num_hidden_layers": 1, "mixer": "deltanet"})
    return LRNNForCausalLM(small).train()


def model_bytes(config: LRNNConfig, T: int, batch: int = 1, dtype=torch.bfloat16) -> int:
    """Saved bytes of a whole model's training forward and loss (the model's own loss)."""
    model = LRNNForCausalLM(config).train()
    ids = torch.randint(0, config.vocab_size, (batch, T))

    def run():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return model(input_ids=ids, labels=ids, use_cache=False).loss

    return saved_bytes(run, exclude=tuple(model.parameters()))


def predicted_model_bytes(config: LRNNConfig, T: int, batch: int = 1, dtype=torch.bfloat16) -> dict:
    """Saved bytes of a whole model predicted from one-block and head figures: per token
    ``sum over layers of block + head and loss + 8`` (the embedding keeps the int64 token ids)."""
    per_layer = {}
    for i, mixer in enumerate(config.layer_mixers):
        if mixer not in per_layer:
            per_layer[mixer] = per_token(lambda n, i=i: block_bytes(config, i, n, batch, dtype), batch)
    head = per_token(lambda n: head_bytes(config, n, batch, dtype), batch)
    blocks = sum(per_layer[m] for m in config.layer_mixers)
    return {"per_block": per_layer, "head": head, "per_token": blocks + head + 8, "total": (blocks + head + 8) * T}


# ----------------------------------------------------------------------------------------------- shipped configs


def shipped_configs() -> dict[str, dict]:
    """``{name: {"model": LRNNConfig kwargs, "micro_batch": int, "seq_len": int}}`` of configs/train/*.yaml
    (one of each ``_neg``/``_pos`` pair: they differ only in the eigenvalue range, measured separately)."""
    out = {}
    for path in sorted((ROOT / "configs" / "train").glob("*_neg.yaml")):
        raw = yaml.safe_load(path.read_text())
        out[path.stem.removesuffix("_neg")] = {
            "model": raw["model"],
            "micro_batch": raw["train"]["micro_batch_size"],
            "seq_len": raw["data"]["seq_len"],
        }
    return out


def config_of(model: dict, eigval_range: str, path: str = "cpu", **extra) -> LRNNConfig:
    """The config with ``eigval_range``; on the ``cuda`` path with the Triton backends, as ``auto`` picks on a GPU."""
    backend = {"kernel_backend": "triton"} if path == "cuda" else {}
    return LRNNConfig(**{**model, "eigval_range": eigval_range, **backend, **extra})


def n_params(config: LRNNConfig) -> int:
    with torch.device("meta"):
        model = LRNNForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


# The per-block memory bars (docs/memory.md) are at d 1024; the shipped Gated DeltaNet and DeltaProduct configs
# are 1.3B (d 2048).
# Their shape scaled to d 1024: heads x head_dim = 0.75 d (3 heads of 256, values 2x wider), MLP 2.75 d.
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
    """Predicted peak GiB of a config at its micro-batch on one GPU (see the module docstring)."""
    config = config_of(spec["model"], "[-1,1]")
    tokens = spec["micro_batch"] * spec["seq_len"]
    blocks = [results["blocks"].get(f"{name} {m} [-1,1] {path}") for m in config.layer_mixers]
    if any(b is None for b in blocks):
        return {}
    out = {"tokens": tokens, "params": n_params(config)}
    for head in ("logits", "chunked"):
        head_b = results["head"].get(f"{head} {path}")
        if head_b is None:
            continue
        saved = tokens * (sum(blocks) + head_b + 8)
        static = 16 * out["params"]
        working = tokens * max(blocks)
        out[head] = {"saved_gib": saved / GIB, "peak_gib": (static + saved + working) / GIB}
    ckpt = [results["blocks checkpointed"].get(f"{name} {m} [-1,1] {path}") for m in config.layer_mixers]
    if "chunked" in out and all(c is not None for c in ckpt):
        saved = tokens * (sum(ckpt) + results["head"][f"chunked {path}"] + 8)
        # the backward recomputes one block at a time: its full saved set is live on top
        peak = 16 * out["params"] + saved + 2 * tokens * max(blocks)
        out["chunked + blocks checkpointing"] = {
            "saved_gib": saved / GIB,
            "peak_gib": peak / GIB,
            "blocks_saved_ratio": sum(blocks) / sum(ckpt),
        }
    return out


# ------------------------------------------------------------------------------------------------------- peers


def measure_peers() -> dict:
    """The peers' blocks measured the same way, at d 1024: transformers' Mamba and Mamba-2 (their torch paths, as
    on CPU; on a GPU transformers runs mamba_ssm's kernels when installed), and fla's DeltaNet and Gated DeltaNet
    blocks through the GPU path (fla's own host code, no-op Triton launches, as ours)."""
    out = {}
    try:
        out.update(_fla_peers())
    except ImportError as err:  # pragma: no cover - fla is a requirement
        out["fla"] = str(err)
    try:
        from transformers import Mamba2Config, MambaConfig
        from transformers.models.mamba.modeling_mamba import MambaBlock
        from transformers.models.mamba2.modeling_mamba2 import Mamba2Block
    except ImportError as err:  # pragma: no cover - transformers is a requirement
        return {"error": str(err)}
    peers = {
        "transformers Mamba (torch path)": (MambaBlock, MambaConfig(hidden_size=1024, state_size=16, expand=2)),
        "transformers Mamba2 (torch path)": (
            Mamba2Block,
            Mamba2Config(hidden_size=1024, state_size=128, expand=2, head_dim=64, num_heads=32, n_groups=1),
        ),
    }
    for label, (cls, cfg) in peers.items():
        block = cls(cfg, layer_idx=0).train()

        def measure(T, block=block):
            hidden = torch.randn(1, T, 1024, requires_grad=True)

            def run():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return block(hidden)

            return saved_bytes(run, exclude=tuple(block.parameters()))

        out[label] = per_token(measure)
    return out


def _fla_peers() -> dict:
    from fla.models import DeltaNetConfig, GatedDeltaNetConfig
    from fla.models.delta_net.modeling_delta_net import DeltaNetBlock
    from fla.models.gated_deltanet.modeling_gated_deltanet import GatedDeltaNetBlock

    peers = {
        "fla DeltaNet (allow_neg_eigval, GPU path)": (
            DeltaNetBlock,
            DeltaNetConfig(hidden_size=1024, num_heads=8, intermediate_size=2816, allow_neg_eigval=True),
        ),
        "fla GatedDeltaNet at d 1024 (allow_neg_eigval, GPU path)": (
            GatedDeltaNetBlock,
            GatedDeltaNetConfig(
                hidden_size=1024, num_heads=3, head_dim=256, expand_v=2, intermediate_size=2816, allow_neg_eigval=True
            ),
        ),
    }
    out = {}
    with cuda_code_path():
        for label, (cls, cfg) in peers.items():
            block = cls(cfg, 0).train()

            def measure(T, block=block):
                hidden = torch.randn(1, T, 1024, requires_grad=True)

                def run():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return block(hidden)[0]

                return saved_bytes(run, exclude=tuple(block.parameters()))

            out[label] = per_token(measure)
    return out


# -------------------------------------------------------------------------------------------------------- main


def print_table(results: dict) -> None:
    print("Saved bytes per token per block (KB), bf16 autocast, B 1, per-token difference of T 128 and 256")
    print(f"{'block':58s} {'KB/token':>9s}")
    for key, value in results["blocks"].items():
        print(f"{key:58s} {value / KB:9.1f}")
    print(f"\n{'block, with blocks checkpointing':58s} {'KB/token':>9s}")
    for key, value in results["blocks checkpointed"].items():
        print(f"{key:58s} {value / KB:9.1f}")
    print(f"\n{'head + loss (vocab 32000, d 1024)':58s} {'KB/token':>9s}")
    for key, value in results["head"].items():
        print(f"{key:58s} {value / KB:9.1f}")
    if results["peers"]:
        print(f"\n{'peer block (d 1024)':58s} {'KB/token':>9s}")
        for key, value in results["peers"].items():
            print(f"{key:58s} {value / KB:9.1f}" if isinstance(value, float) else f"{key}: {value}")
    print("\nPredicted peak of each shipped config at its micro-batch, one GPU, no sharding, CUDA path (GiB)")
    print(
        f"{'config':22s} {'tokens':>7s} {'params':>7s} {'saved/peak logits':>18s} {'saved/peak chunked':>19s} "
        f"{'saved/peak chunked+blocks ckpt':>31s} {'blocks saved ratio':>19s}"
    )
    for name, pred in results["configs"].items():
        if not pred:
            continue
        cols = []
        for head in ("logits", "chunked", "chunked + blocks checkpointing"):
            v = pred.get(head, {})
            cols.append(f"{v.get('saved_gib', 0):.1f} / {v.get('peak_gib', 0):.1f}")
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
