"""The mixer contract: what every sequence mixer of an ``LRNNForCausalLM`` layer provides.

A mixer is one file in ``lrnn_lm/layers/`` holding one :class:`Mixer` subclass decorated with
:func:`lrnn_lm.layers.registry.register_mixer`. The class owns everything about itself: its config fields and
their defaults, their validation, its init, the eigenvalues of its transitions and its use of the cache.
The model, the config, the spectrum and the tests read all of that from the registry. See ``README.md``
beside this file for the checklist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

Fail = Callable[[str, str], None]


class Mixer(nn.Module):
    """Base class of every mixer. Subclasses set the class attributes and implement ``forward``."""

    #: Name used in ``LRNNConfig.mixer`` (set by ``register_mixer``).
    name: ClassVar[str] = ""
    #: Config fields this mixer reads, with their defaults. Fields may be shared by several mixers (for
    #: example ``conv_kernel``); then their defaults must agree.
    config_fields: ClassVar[dict[str, Any]] = {}
    #: Entry of ``config.layer_types``: which ``DynamicCache`` layer it gets ("linear_attention" holds a
    #: conv window and a recurrent state; "full_attention" / "sliding_attention" hold keys and values).
    cache_layer_type: ClassVar[str] = "linear_attention"
    #: What :meth:`transition_eigenvalues` returns, in words, for the spectrum report; None if the mixer has
    #: no state transitions (attention), so the spectrum and probes skip it.
    eigenvalues_are: ClassVar[str | None] = None
    #: True for a mixer that needs token positions and the padding of the cached tokens too (attention): then
    #: ``forward`` also receives ``attention_mask`` (``[batch, past + T]``, 1 = token, or None) and
    #: ``position_ids`` (``[batch, T]`` or None) as keyword arguments. Recurrent mixers leave it False and never
    #: see them.
    takes_positions: ClassVar[bool] = False

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx

    @classmethod
    def validate_config(cls, config, fail: Fail, in_use: bool) -> None:
        """Check this mixer's fields; call ``fail(field, message)`` for a bad one.

        Checks of single fields run for every config (a bad value is bad even when unused); checks that tie a
        field to the model's shape should run only when ``in_use`` (some layer uses this mixer).
        """

    def init_weights(self) -> None:
        """Mixer-specific init, run after the generic one (normal weights, zero biases). Use
        ``transformers.initialization`` functions so parameters loaded from a checkpoint are left alone."""

    def transition_eigenvalues(
        self, hidden: torch.Tensor, mask: torch.Tensor | None, cu_seqlens: torch.Tensor | None
    ) -> torch.Tensor:
        """``[batch, T, ...]`` fp32: the transition eigenvalues this mixer uses on its input ``hidden``."""
        raise NotImplementedError(f"{type(self).__name__} has no state transitions")

    def read_cache(self, cache, conv: nn.Module | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(conv window, recurrent state)`` this layer left in ``cache``: both None without a cache, and no
        window for a layer without a short conv."""
        if cache is None:
            return None, None
        history = cache.get_conv_state(self.layer_idx) if conv is not None else None
        return history, cache.get_recurrent_state(self.layer_idx)

    def write_conv_input(self, cache, conv_in: torch.Tensor, conv: nn.Module | None) -> None:
        """Record the conv input ``[batch, T, channels]`` of this step in ``cache`` (if any)."""
        if cache is None:
            return
        # transformers marks a linear-attention cache layer as holding state only through update_conv_state, so a
        # conv-less layer records a width-1 window too; without it the next step would start from zero.
        width = conv.kernel_size if conv is not None else 1
        cache.update_conv_state(conv_in.transpose(1, 2), self.layer_idx, conv_kernel_size=width)

    def write_state(self, cache, state: torch.Tensor | None) -> None:
        """Store the fp32 recurrent state after this step in ``cache`` (if any)."""
        if cache is not None:
            cache.update_recurrent_state(state, self.layer_idx)

    def forward(
        self,
        hidden: torch.Tensor,
        cache=None,
        mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden [batch, T, d] -> [batch, T, d]``. ``cache``: a ``DynamicCache`` to read and update at
        ``self.layer_idx``; ``mask``: ``[batch, T, 1]`` (1 = token, 0 = padding) or None; ``cu_seqlens``: packed
        sequence offsets (batch 1), never together with a cache. A mixer with ``takes_positions`` also gets
        ``attention_mask`` and ``position_ids`` (see there)."""
        raise NotImplementedError


def positive_int(config, field: str, fail: Fail, allow_none: bool = False) -> None:
    value = getattr(config, field)
    if allow_none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        fail(field, "must be a positive integer" + (" or None" if allow_none else ""))


def positive_float(config, field: str, fail: Fail) -> None:
    value = getattr(config, field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        fail(field, "must be a positive number")


def boolean(config, field: str, fail: Fail) -> None:
    if not isinstance(getattr(config, field), bool):
        fail(field, "must be true or false")
