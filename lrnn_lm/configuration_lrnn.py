"""LRNNConfig: one config for every LRNN language model, with the mixer chosen per layer.

The config holds the fields every model has. Each mixer declares its own fields, defaults and checks
(``config_fields`` and ``validate_config`` of its class in ``lrnn_lm/layers/``); the config takes them from the
mixer registry, so adding a mixer never touches this file.
"""

from __future__ import annotations

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from .layers.registry import MIXERS, mixer_field_defaults

EIGVAL_RANGES = ("[0,1]", "[-1,1]")
KERNEL_BACKENDS = ("auto", "triton", "chunk", "naive")


class LRNNConfig(PretrainedConfig):
    """Configuration of :class:`~lrnn_lm.LRNNForCausalLM`.

    ``mixer`` is a registered mixer name (``lrnn_lm.layers.MIXERS``) or a list with one per layer.
    ``eigval_range`` (``"[0,1]"`` or ``"[-1,1]"``) sets the range of the state-transition eigenvalues of every
    layer; it is interpreted in :mod:`lrnn_lm.layers.gates` only. ``intermediate_size > 0`` adds a gated MLP
    (``down(act(gate(x)) * up(x))`` with ``hidden_act``, SwiGLU for ``silu``) after each mixer; 0 means none, as
    in Mamba. Mixer fields (``state_size``, ``num_heads``, ...) and their defaults come from the mixer classes.
    Invalid values raise ``ValueError`` naming the field.
    """

    model_type = "lrnn"

    vocab_size: int = 32000
    hidden_size: int = 256
    num_hidden_layers: int = 4
    mixer: str | list[str] = "deltanet"
    eigval_range: str = "[-1,1]"
    intermediate_size: int = 0
    hidden_act: str = "silu"
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    kernel_backend: str = "auto"
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        # Mixer fields: a value given now wins, then one already set (a loaded config), then the default.
        for field, default in mixer_field_defaults().items():
            if field in kwargs:
                setattr(self, field, kwargs.pop(field))
            elif not hasattr(self, field):
                setattr(self, field, default)
        self._validate()
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        def fail(field: str, msg: str) -> None:
            raise ValueError(f"LRNNConfig.{field}: {msg} (got {getattr(self, field)!r})")

        for field in ("vocab_size", "hidden_size", "num_hidden_layers"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(field, "must be a positive integer")
        if not isinstance(self.intermediate_size, int) or self.intermediate_size < 0:
            fail("intermediate_size", "must be an integer >= 0 (0 means no MLP)")
        if self.hidden_act not in ACT2FN:
            fail("hidden_act", "must be an activation name of transformers.activations.ACT2FN, e.g. 'silu'")
        mixers = self.mixer if isinstance(self.mixer, list) else [self.mixer]
        if not mixers or any(not isinstance(m, str) or m not in MIXERS for m in mixers):
            fail("mixer", f"must be one of {tuple(MIXERS)} or a list of them")
        if isinstance(self.mixer, list) and len(self.mixer) != self.num_hidden_layers:
            fail("mixer", f"a per-layer list needs num_hidden_layers={self.num_hidden_layers} entries")
        if self.eigval_range not in EIGVAL_RANGES:
            fail("eigval_range", f"must be one of {EIGVAL_RANGES}")
        if self.kernel_backend not in KERNEL_BACKENDS:
            fail("kernel_backend", f"must be one of {KERNEL_BACKENDS}")
        for field in ("norm_eps", "initializer_range"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                fail(field, "must be a positive number")
        for name, cls in MIXERS.items():
            cls.validate_config(self, fail, in_use=name in mixers)

    @property
    def layer_mixers(self) -> list[str]:
        """The mixer of each layer."""
        return list(self.mixer) if isinstance(self.mixer, list) else [self.mixer] * self.num_hidden_layers

    @property
    def layer_types(self) -> list[str]:
        # Makes DynamicCache(config=...) build the cache layer each mixer asks for (recurrent or key/value).
        return [MIXERS[m].cache_layer_type for m in self.layer_mixers]
