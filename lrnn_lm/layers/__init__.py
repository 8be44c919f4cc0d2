"""Sequence mixers and the blocks around them. Importing this package registers the built-in mixers.

Adding a mixer: one file here with a registered :class:`~lrnn_lm.layers.base.Mixer` subclass, plus its
import line below (see README.md in this folder).
"""

from . import attention, deltanet, deltaproduct, gated_deltanet, mamba, mamba2  # noqa: F401  (each registers its mixer)
from .base import Mixer
from .registry import MIXERS, get_mixer, register_mixer

__all__ = ["MIXERS", "Mixer", "get_mixer", "register_mixer"]
