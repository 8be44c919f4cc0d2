"""Parameter tags: parameters tagged here take no weight decay, and the optimizer groups follow the tags."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

NO_WEIGHT_DECAY = "_no_weight_decay"


def tag_no_weight_decay(*params: nn.Parameter | None) -> None:
    """Mark parameters (A_log, D, dt bias, norm weights, biases) as exempt from weight decay."""
    for p in params:
        if p is not None:
            setattr(p, NO_WEIGHT_DECAY, True)


def tag_biases(module: nn.Module) -> None:
    """Tag every ``bias`` parameter below ``module``."""
    for m in module.modules():
        bias = getattr(m, "bias", None)
        if isinstance(bias, nn.Parameter):
            tag_no_weight_decay(bias)


def tagged_names(module: nn.Module) -> set[str]:
    """Names of the parameters that currently carry the no-weight-decay tag."""
    return {n for n, p in module.named_parameters() if getattr(p, NO_WEIGHT_DECAY, False)}


def param_groups(
    named_params: Iterable[tuple[str, torch.Tensor]], no_decay: set[str], weight_decay: float
) -> list[dict]:
    """AdamW groups: names in ``no_decay`` get no weight decay, all other trainable ones get ``weight_decay``."""
    decay, skip = [], []
    for name, p in named_params:
        if p.requires_grad:
            (skip if name in no_decay else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "group": "decay"},
        {"params": skip, "weight_decay": 0.0, "group": "no_decay"},
    ]
