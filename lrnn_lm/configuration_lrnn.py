"""LRNNConfig: one config for every LRNN language model, with the mixer chosen per layer."""

from __future__ import annotations

import math

from transformers import PretrainedConfig

MIXERS = ("mamba", "deltanet")
EIGVAL_RANGES = ("[0,1]", "[-1,1]")
KERNEL_BACKENDS = ("auto", "triton", "chunk", "naive")
QK_NORMS = ("l2", "none")


class LRNNConfig(PretrainedConfig):
    """Configuration of :class:`~lrnn_lm.LRNNForCausalLM`.

    ``mixer`` is ``"mamba"``, ``"deltanet"`` or a list with one entry per layer. ``eigval_range``
    (``"[0,1]"`` or ``"[-1,1]"``) sets the range of the state-transition eigenvalues of every layer;
    it is interpreted in :mod:`lrnn_lm.layers.gates` only. ``intermediate_size > 0`` adds a SwiGLU
    MLP after each mixer (0 means none, as in Mamba). Invalid values raise ``ValueError`` naming the field.
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
    # Mamba-1
    state_size: int = 16
    conv_kernel: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    use_conv_bias: bool = True
    use_bias: bool = False
    # DeltaNet
    num_heads: int = 4
    head_dim: int | None = None
    use_short_conv: bool = True
    conv_size: int = 4
    use_output_gate: bool = False
    qk_norm: str = "l2"

    def __post_init__(self, **kwargs):
        self._validate()
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        def fail(field: str, msg: str) -> None:
            raise ValueError(f"LRNNConfig.{field}: {msg} (got {getattr(self, field)!r})")

        for field in ("vocab_size", "hidden_size", "num_hidden_layers", "state_size", "conv_kernel", "expand"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(field, "must be a positive integer")
        for field in ("num_heads", "conv_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(field, "must be a positive integer")
        if not isinstance(self.intermediate_size, int) or self.intermediate_size < 0:
            fail("intermediate_size", "must be an integer >= 0 (0 means no MLP)")
        mixers = self.mixer if isinstance(self.mixer, list) else [self.mixer]
        if any(m not in MIXERS for m in mixers):
            fail("mixer", f"must be one of {MIXERS} or a list of them")
        if isinstance(self.mixer, list) and len(self.mixer) != self.num_hidden_layers:
            fail("mixer", f"a per-layer list needs num_hidden_layers={self.num_hidden_layers} entries")
        if self.eigval_range not in EIGVAL_RANGES:
            fail("eigval_range", f"must be one of {EIGVAL_RANGES}")
        if self.kernel_backend not in KERNEL_BACKENDS:
            fail("kernel_backend", f"must be one of {KERNEL_BACKENDS}")
        if self.qk_norm not in QK_NORMS:
            fail("qk_norm", f"must be one of {QK_NORMS}")
        if "deltanet" in mixers:
            if self.head_dim is None and self.hidden_size % self.num_heads:
                fail("num_heads", f"must divide hidden_size={self.hidden_size} when head_dim is not set")
            if self.head_dim is not None and (not isinstance(self.head_dim, int) or self.head_dim <= 0):
                fail("head_dim", "must be a positive integer or None")
            if self.eigval_range == "[-1,1]" and self.qk_norm != "l2":
                # beta in (0, 2) gives eigenvalue 1 - beta ||k||^2 in (-1, 1) only when ||k|| = 1.
                fail("qk_norm", "DeltaNet with eigval_range='[-1,1]' needs L2-normalised keys (qk_norm='l2')")
        if self.dt_rank != "auto" and (not isinstance(self.dt_rank, int) or self.dt_rank <= 0):
            fail("dt_rank", "must be 'auto' or a positive integer")
        if not 0 < self.dt_min <= self.dt_max:
            fail("dt_min", f"need 0 < dt_min <= dt_max={self.dt_max}")
        if self.norm_eps <= 0:
            fail("norm_eps", "must be positive")

    @property
    def layer_mixers(self) -> list[str]:
        """The mixer of each layer."""
        return list(self.mixer) if isinstance(self.mixer, list) else [self.mixer] * self.num_hidden_layers

    @property
    def layer_types(self) -> list[str]:
        # Makes DynamicCache(config=...) build one recurrent (conv + state) cache layer per layer.
        return ["linear_attention"] * self.num_hidden_layers

    @property
    def mamba_inner_size(self) -> int:
        return self.expand * self.hidden_size

    @property
    def mamba_dt_rank(self) -> int:
        return math.ceil(self.hidden_size / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def deltanet_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads
