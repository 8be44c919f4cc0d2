"""The training loss of train.py when it is not the model's own: causal-LM cross entropy with label smoothing.

The model's ``loss`` (transformers' ``ForCausalLMLoss``) takes no smoothing, so, as transformers' ``Trainer`` does
with ``label_smoothing_factor``, train.py then pops the labels and scores the logits here. Validation keeps the
model's plain loss, so val losses stay comparable across recipes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..tasks import IGNORE_INDEX


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross entropy of ``logits [B, T, V]`` against ``labels [B, T]`` shifted by one, as in the model's loss
    (position ``t`` predicts ``labels[:, t + 1]``; ``-100`` is ignored).

    ``label_smoothing`` ``eps`` spreads ``eps`` of the target mass uniformly over the vocabulary
    (``torch.nn.functional.cross_entropy``'s definition): the loss keeps a gradient on every logit after the
    argmax is right, instead of fading as the margins grow.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)} without the vocab")
    shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].to(logits.device)
    return F.cross_entropy(
        logits.float().flatten(0, -2), shifted.flatten(), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing
    )
