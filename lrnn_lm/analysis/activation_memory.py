"""Activation memory of training: the bytes autograd saves for the backward, per token, of a block, the head and
loss, or a whole model, under bf16 autocast on CPU, on the CPU code path or on the GPU's (:func:`cuda_code_path`).
benchmarks/memory.py tabulates them for every shipped config; docs/memory.md says how to read them."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from unittest import mock

import torch
from torch.utils.checkpoint import checkpoint

from lrnn_lm.configuration_lrnn import LRNNConfig
from lrnn_lm.layers import Mixer
from lrnn_lm.linear_cross_entropy import linear_causal_lm_loss
from lrnn_lm.modeling_lrnn import LRNNBlock, LRNNForCausalLM

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


def per_token(measure: Callable[[int], int]) -> float:
    """Saved bytes per token: ``(measure(LONG) - measure(SHORT)) / (LONG - SHORT)``, batch 1."""
    return (measure(LONG) - measure(SHORT)) / (LONG - SHORT)


def _zero_filled(empty: Callable) -> Callable:
    return lambda *args, **kwargs: empty(*args, **kwargs).zero_()


@contextlib.contextmanager
def cuda_code_path() -> Iterator[None]:
    """Run the GPU code path on CPU: every Triton launch (fla's and ours) is a no-op, so the host code of the
    Triton backends and fla's fused modules (allocations, ``.contiguous()`` copies, ``save_for_backward``) runs as
    on a GPU and only the kernels' values are missing (tests/kernels/test_triton_saved_bytes.py checks, under the
    interpreter, that each saves the same bytes with real kernels)."""
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
    with contextlib.ExitStack() as stack:
        for obj, name, new in patches:
            stack.enter_context(mock.patch.object(obj, name, new))
        yield


def autocast_saved(fn: Callable[[], object], module: torch.nn.Module) -> int:
    """:func:`saved_bytes` of ``fn()`` under bf16 CPU autocast, without ``module``'s parameters."""

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    return saved_bytes(run, exclude=tuple(module.parameters()))


def block_bytes(config: LRNNConfig, layer: int, T: int, checkpointing: bool = False) -> int:
    """Saved bytes of one training forward of block ``layer`` on a ``[1, T, d]`` fp32 residual stream (with
    ``checkpointing``: as under ``train.activation_checkpointing: blocks``)."""
    block = LRNNBlock(config, layer).train()
    if checkpointing:  # what PreTrainedModel.activation_checkpointing_enable sets on every such layer
        block.gradient_checkpointing = True
        block._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
    for module in block.modules():  # the model's own init of mixer parameters (A_log, D, dt bias, ...)
        if isinstance(module, Mixer):
            module.init_weights()
    hidden = torch.randn(1, T, config.hidden_size, requires_grad=True)
    return autocast_saved(lambda: block(hidden), block)


def head_bytes(config: LRNNConfig, T: int, fused: bool = False) -> int:
    """Saved bytes of the training step's loss from the last block's output: ``norm_f``, ``lm_head`` and the loss
    (fused: the chunked loss without logits; otherwise the model's logits and its loss)."""
    small = LRNNConfig(**{**config.to_diff_dict(), "num_hidden_layers": 1, "mixer": "deltanet"})
    model = LRNNForCausalLM(small).train()
    hidden = torch.randn(1, T, config.hidden_size, requires_grad=True)
    labels = torch.randint(0, config.vocab_size, (1, T))

    def loss() -> torch.Tensor:
        h = model.model.norm_f(hidden)
        if fused:
            return linear_causal_lm_loss(h, model.lm_head.weight, labels)
        return model.loss_function(logits=model.lm_head(h).float(), labels=labels, vocab_size=config.vocab_size)

    return autocast_saved(loss, model)


def model_bytes(config: LRNNConfig, T: int) -> int:
    """Saved bytes of a whole model's training forward and loss (the model's own loss)."""
    model = LRNNForCausalLM(config).train()
    ids = torch.randint(0, config.vocab_size, (1, T))
    return autocast_saved(lambda: model(input_ids=ids, labels=ids, use_cache=False).loss, model)


def predicted_model_bytes(config: LRNNConfig, T: int) -> dict:
    """Saved bytes of a whole model predicted from one-block and head figures: per token
    ``sum over layers of block + head and loss + 8`` (the embedding keeps the int64 token ids)."""
    per_layer = {}
    for i, mixer in enumerate(config.layer_mixers):
        if mixer not in per_layer:
            per_layer[mixer] = per_token(lambda n, i=i: block_bytes(config, i, n))
    head = per_token(lambda n: head_bytes(config, n))
    blocks = sum(per_layer[m] for m in config.layer_mixers)
    return {"per_block": per_layer, "head": head, "per_token": blocks + head + 8, "total": (blocks + head + 8) * T}
