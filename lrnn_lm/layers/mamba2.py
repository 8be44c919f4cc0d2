"""Mamba-2 mixer (Dao & Gu, 2024), the block of transformers' ``Mamba2ForCausalLM``: one input projection to
``(z, xBC, dt)``, a short conv over ``xBC``, the SSD scan with one scalar gate per head, a gated RMSNorm with
``z``, and the output projection. With ``eigval_range="[-1,1]"`` the gate ``a = exp(dt A)`` becomes ``2a - 1``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ..kernels import ssd
from ..param_tags import tag_no_weight_decay
from .base import Mixer, boolean, positive_float, positive_int
from .conv import ShortConv
from .gates import mamba_negative_eigvals
from .norm import GatedGroupRMSNorm
from .registry import register_mixer


@register_mixer("mamba2")
class Mamba2Mixer(Mixer):
    """Heads of ``ssd_head_dim`` channels share one gate each; ``B``/``C`` come in ``ssd_groups`` groups.

    ``d_inner = expand * hidden_size = ssd_num_heads * ssd_head_dim`` (``ssd_num_heads=None`` derives it).
    Shared with ``mamba``: ``state_size`` (N), ``conv_kernel``, ``expand``, ``dt_min``/``dt_max``/``dt_init_floor``
    (the dt init range), ``use_conv_bias``, ``use_bias``. The SSD chunk size is not a model field: it does not
    change the function, and each kernel backend picks its own.
    """

    config_fields = {
        "state_size": 16,
        "conv_kernel": 4,
        "expand": 2,
        "dt_min": 0.001,
        "dt_max": 0.1,
        "dt_init_floor": 1e-4,
        "use_conv_bias": True,
        "use_bias": False,
        "ssd_num_heads": None,
        "ssd_head_dim": 64,
        "ssd_groups": 1,
    }
    eigenvalues_are = "a_t (one scalar gate per head and token, shared by its head_dim x N state)"

    @classmethod
    def validate_config(cls, config, fail, in_use: bool) -> None:
        positive_int(config, "ssd_num_heads", fail, allow_none=True)
        positive_int(config, "ssd_head_dim", fail)
        positive_int(config, "ssd_groups", fail)
        for field in ("state_size", "conv_kernel", "expand"):
            positive_int(config, field, fail)
        for field in ("dt_min", "dt_max", "dt_init_floor"):
            positive_float(config, field, fail)
        for field in ("use_conv_bias", "use_bias"):
            boolean(config, field, fail)
        if not in_use:
            return
        d_inner = config.expand * config.hidden_size
        if d_inner % config.ssd_head_dim:
            fail("ssd_head_dim", f"must divide expand * hidden_size = {d_inner}")
        heads = cls.num_heads_of(config)
        if heads * config.ssd_head_dim != d_inner:
            fail("ssd_num_heads", f"ssd_num_heads * ssd_head_dim must equal expand * hidden_size = {d_inner}")
        if heads % config.ssd_groups:
            fail("ssd_groups", f"must divide the number of heads ({heads})")

    @staticmethod
    def num_heads_of(config) -> int:
        if config.ssd_num_heads is not None:
            return config.ssd_num_heads
        return config.expand * config.hidden_size // config.ssd_head_dim

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        d, N, G = config.hidden_size, config.state_size, config.ssd_groups
        self.d_inner = config.expand * d
        self.num_heads, self.head_dim, self.groups, self.state_size = (
            self.num_heads_of(config),
            config.ssd_head_dim,
            G,
            N,
        )
        self.conv_dim = self.d_inner + 2 * G * N
        self.in_proj = nn.Linear(d, self.d_inner + self.conv_dim + self.num_heads, bias=config.use_bias)
        self.conv = ShortConv(self.conv_dim, config.conv_kernel, bias=config.use_conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
        self.A_log = nn.Parameter(torch.empty(self.num_heads))
        self.D = nn.Parameter(torch.empty(self.num_heads))
        self.norm = GatedGroupRMSNorm(self.d_inner, groups=G, eps=config.norm_eps)
        self.out_proj = nn.Linear(self.d_inner, d, bias=config.use_bias)
        tag_no_weight_decay(self.A_log, self.D, self.dt_bias)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Mamba-2's init: ``A_log = log(1..H)``, ``D = 1``, dt bias = softplus^-1 of a log-uniform dt."""
        cfg = self.config
        A = torch.arange(1, self.num_heads + 1, dtype=torch.float32, device=self.A_log.device)
        init.copy_(self.A_log, torch.log(A))
        init.ones_(self.D)
        u = torch.rand(self.num_heads, device=self.dt_bias.device)
        dt = torch.exp(u * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=cfg.dt_init_floor)
        init.copy_(self.dt_bias, dt + torch.log(-torch.expm1(-dt)))

    def negative_eigvals(self) -> bool:
        return mamba_negative_eigvals(self.config.eigval_range)

    def gates(self, dt: torch.Tensor) -> torch.Tensor:
        """Transition eigenvalues ``a_t: [batch, T, H]`` for softplus'd ``dt: [batch, T, H]``."""
        a = torch.exp(dt.float() * -torch.exp(self.A_log.float()))
        return 2 * a - 1 if self.negative_eigvals() else a

    def transition_eigenvalues(self, hidden, mask, cu_seqlens) -> torch.Tensor:
        dt = self.project(hidden, mask, None, cu_seqlens)[4]
        return self.gates(dt)

    def project(self, hidden: torch.Tensor, mask: torch.Tensor | None, conv_history, cu_seqlens):
        """Everything before the scan: returns ``z, x, B, C, dt`` and the conv input for the cache."""
        batch, T, _ = hidden.shape
        z, xbc, dt = self.in_proj(hidden).split([self.d_inner, self.conv_dim, self.num_heads], dim=-1)
        if mask is not None:
            xbc = xbc * mask
        conv_in = xbc
        xbc = self.conv(xbc, history=conv_history, cu_seqlens=cu_seqlens)
        x, B, C = xbc.split([self.d_inner, self.groups * self.state_size, self.groups * self.state_size], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if mask is not None:
            # dt = 0 makes a padded step the identity (a = 1 in both ranges) with no input.
            dt = dt * mask
        x = x.reshape(batch, T, self.num_heads, self.head_dim)
        B = B.reshape(batch, T, self.groups, self.state_size)
        C = C.reshape(batch, T, self.groups, self.state_size)
        return z, x, B, C, dt, conv_in

    def forward(self, hidden: torch.Tensor, cache=None, mask: torch.Tensor | None = None, cu_seqlens=None):
        conv_history, state = self.read_cache(cache, self.conv)
        z, x, B, C, dt, conv_in = self.project(hidden, mask, conv_history, cu_seqlens)
        self.write_conv_input(cache, conv_in, self.conv)
        y, final = ssd(
            x,
            dt,
            -torch.exp(self.A_log.float()),
            B,
            C,
            self.D,
            negative_eigvals=self.negative_eigvals(),
            initial_state=state,
            output_final_state=cache is not None,
            cu_seqlens=cu_seqlens,
            backend=self.config.kernel_backend,
        )
        self.write_state(cache, final)
        y = self.norm(y.reshape(*hidden.shape[:2], self.d_inner), z)
        return self.out_proj(y.to(hidden.dtype))
