"""Load transformers checkpoints of peer architectures into ``LRNNForCausalLM``.

Each converter maps one transformers ``model_type`` to an ``LRNNConfig`` and a state dict, with the
eigenvalue range ``[0,1]`` (the peer's own function). The converted model computes the same logits; a test
holds each converter to that. ``python -m lrnn_lm.convert SRC DST`` converts a checkpoint folder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..configuration_lrnn import LRNNConfig
from ..modeling_lrnn import LRNNForCausalLM

# model_type -> function(hf_config) -> (LRNNConfig kwargs, function(hf_state_dict) -> our state dict)
Converter = Callable[[object], tuple[dict, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]]]
CONVERTERS: dict[str, Converter] = {}
# model_type -> the transformers class a checkpoint folder is loaded with. Named explicitly, not looked up through
# AutoModelForCausalLM: other packages (fla, once imported) register their own classes for "mamba" there.
SOURCE_CLASSES: dict[str, str] = {}


def register_converter(model_type: str, source_class: str):
    """Register a converter for transformers' ``model_type``, whose checkpoints load as ``source_class``."""

    def register(fn: Converter) -> Converter:
        CONVERTERS[model_type] = fn
        SOURCE_CLASSES[model_type] = source_class
        return fn

    return register


def load_source(path: str):
    """A local transformers checkpoint folder, loaded with the transformers class of its ``model_type``."""
    import json
    from pathlib import Path

    import transformers

    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json; expected a local transformers checkpoint folder")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in SOURCE_CLASSES:
        raise ValueError(f"{config_file}: no converter for model_type {model_type!r}; available: {sorted(CONVERTERS)}")
    return getattr(transformers, SOURCE_CLASSES[model_type]).from_pretrained(path)


def convert_model(hf_model, **overrides) -> LRNNForCausalLM:
    """An ``LRNNForCausalLM`` computing what ``hf_model`` (a transformers causal LM) computes.

    ``overrides`` replace config fields after conversion, e.g. ``eigval_range="[-1,1]"`` to fine-tune a
    converted model into the signed range (which changes its function; see docs/convert.md).
    """
    hf_config = hf_model.config
    if hf_config.model_type not in CONVERTERS:
        raise ValueError(f"no converter for model_type {hf_config.model_type!r}; available: {sorted(CONVERTERS)}")
    config_kwargs, map_state = CONVERTERS[hf_config.model_type](hf_config)
    config = LRNNConfig(**{**config_kwargs, **overrides})
    model = LRNNForCausalLM(config)
    state = map_state({k: v.detach().clone() for k, v in hf_model.state_dict().items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The tied lm_head may be absent from the source; everything else must map one to one.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"conversion of {hf_config.model_type!r} left missing={missing} unexpected={unexpected}")
    return model.to(next(hf_model.parameters()).dtype).eval()


# Each module registers its converters on import.
from . import llama, mamba  # noqa: E402, F401
