"""Mamba-1 mixer: in-projection, short conv, input-dependent dt/B/C, selective scan, gated output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import initialization as init

from ..kernels import selective_scan
from ..param_tags import tag_no_weight_decay
from . import fused
from .base import Mixer, boolean, positive_float, positive_int
from .conv import ShortConv
from .gates import mamba_negative_eigvals
from .registry import register_mixer


@register_mixer("mamba")
class MambaMixer(Mixer):
    """Mamba-1 (Gu & Dao, 2023) with a diagonal ``[d_inner, N]`` gate per token."""

    config_fields = {
        "state_size": 16,
        "conv_kernel": 4,
        "expand": 2,
        "dt_rank": "auto",
        "dt_min": 0.001,
        "dt_max": 0.1,
        "dt_init_floor": 1e-4,
        "dt_scale": 1.0,
        "use_conv_bias": True,
        "use_bias": False,
    }
    eigenvalues_are = "a_t (diagonal gates, d_inner x N per token)"

    @classmethod
    def validate_config(cls, config, fail, in_use: bool) -> None:
        for field in ("state_size", "conv_kernel", "expand"):
            positive_int(config, field, fail)
        for field in ("dt_min", "dt_max", "dt_init_floor", "dt_scale"):
            positive_float(config, field, fail)
        for field in ("use_conv_bias", "use_bias"):
            boolean(config, field, fail)
        if config.dt_rank != "auto":
            positive_int(config, "dt_rank", fail)
        if not config.dt_min <= config.dt_max:
            fail("dt_min", f"need dt_min <= dt_max={config.dt_max}")

    @staticmethod
    def dt_rank_of(config) -> int:
        return math.ceil(config.hidden_size / 16) if config.dt_rank == "auto" else int(config.dt_rank)

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        d, d_inner, N, r = (
            config.hidden_size,
            config.expand * config.hidden_size,
            config.state_size,
            self.dt_rank_of(config),
        )
        self.d_inner, self.state_size, self.dt_rank = d_inner, N, r
        self.in_proj = nn.Linear(d, 2 * d_inner, bias=config.use_bias)
        self.conv = ShortConv(d_inner, config.conv_kernel, bias=config.use_conv_bias)
        self.x_proj = nn.Linear(d_inner, r + 2 * N, bias=False)
        self.dt_proj = nn.Linear(r, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(d_inner, N))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.out_proj = nn.Linear(d_inner, d, bias=config.use_bias)
        tag_no_weight_decay(self.A_log, self.D, self.dt_proj.bias)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Mamba's init: ``A_log = log(1..N)``, ``D = 1``, dt bias = softplus^-1 of a log-uniform dt.

        ``transformers.initialization`` functions skip parameters already loaded from a checkpoint.
        """
        cfg = self.config
        A = torch.arange(1, self.state_size + 1, dtype=torch.float32, device=self.A_log.device)
        init.copy_(self.A_log, torch.log(A).expand(self.d_inner, -1))
        init.ones_(self.D)
        std = self.dt_rank**-0.5 * cfg.dt_scale
        init.uniform_(self.dt_proj.weight, -std, std)
        u = torch.rand(self.d_inner, device=self.dt_proj.bias.device)
        dt = torch.exp(u * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=cfg.dt_init_floor)
        init.copy_(self.dt_proj.bias, dt + torch.log(-torch.expm1(-dt)))

    def transition_eigenvalues(self, hidden, mask, cu_seqlens) -> torch.Tensor:
        _, dt, *_ = self.project(hidden, mask, None, cu_seqlens)
        return self.gates(dt)

    def gates(self, dt: torch.Tensor) -> torch.Tensor:
        """Transition eigenvalues ``a_t`` for softplus'd ``dt: [batch, T, d_inner]``: ``[batch, T, d_inner, N]``."""
        a = torch.exp(dt.float().unsqueeze(-1) * -torch.exp(self.A_log.float()))
        return 2 * a - 1 if mamba_negative_eigvals(self.config.eigval_range) else a

    def project(self, hidden: torch.Tensor, mask: torch.Tensor | None, conv_history, cu_seqlens):
        """Everything before the scan: returns ``x, dt, B, C, z`` and the conv input for the cache; ``dt`` is the
        step size ``softplus(dt_proj(...))`` in fp32, 0 on padded steps."""
        x, z = self._in_proj(hidden)
        if mask is not None:
            x = x * mask
        x_conv, dt, B, C = self._conv_and_dt(x, mask, conv_history, cu_seqlens, raw_dt=False)
        return x_conv, dt, B, C, z, x

    def _conv_and_dt(self, x, mask, conv_history, cu_seqlens, raw_dt: bool):
        """The conv and the input-dependent ``dt, B, C``. With ``raw_dt``, ``dt`` is ``dt_proj``'s matmul without
        its bias, in the input dtype, for the scan to add the bias and take the softplus inside (``dt_bias``,
        ``dt_softplus``): no fp32 ``dt`` nor its fp32 input is kept for the backward."""
        x = self.conv(x, history=conv_history, cu_seqlens=cu_seqlens)
        dt_r, B, C = self.x_proj(x).split([self.dt_rank, self.state_size, self.state_size], dim=-1)
        if raw_dt:
            return x, F.linear(dt_r, self.dt_proj.weight), B, C
        dt = F.softplus(self.dt_proj(dt_r).float())
        if mask is not None:
            # dt = 0 makes a padded step the identity (a = 1 in both ranges) with no input.
            dt = dt * mask
        return x, dt, B, C

    def _in_proj(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x, z``: the two halves of ``in_proj``, each its own contiguous matmul output on one cast of
        ``hidden`` (a chunk of one output would be a strided view, and the scan's ``z.contiguous()`` a copy kept
        for the backward)."""
        h = hidden.to(fused.autocast_dtype(hidden))
        w, b = self.in_proj.weight, self.in_proj.bias
        halves = [
            (w[i * self.d_inner : (i + 1) * self.d_inner], None if b is None else b[i * self.d_inner :][: self.d_inner])
            for i in (0, 1)
        ]
        x, z = (F.linear(h, wi, bi) for wi, bi in halves)
        return x, z

    def forward(self, hidden: torch.Tensor, cache=None, mask: torch.Tensor | None = None, cu_seqlens=None):
        conv_history, state = self.read_cache(cache, self.conv)
        x, z = self._in_proj(hidden)
        if mask is not None:
            x = x * mask
        args = (x, z, mask, conv_history, state, cache is not None, cu_seqlens)
        if cache is None and torch.is_grad_enabled() and fused.recompute_in_backward(x):
            # Keep only the conv's input and z for the backward; the conv, its silu, dt, B, C and the scan's
            # forward run again there (mamba_ssm's MambaInnerFn recomputes the conv output and dt likewise).
            y = checkpoint(self._conv_scan, *args, use_reentrant=False)[0]
            final = None
        else:
            y, final = self._conv_scan(*args)
        # After the conv: the cache updates its window in place, and the conv read the old one.
        self.write_conv_input(cache, x, self.conv)
        self.write_state(cache, final)
        return self.out_proj(y.to(hidden.dtype))

    def _conv_scan(self, x, z, mask, conv_history, state, output_final_state: bool, cu_seqlens):
        """From the conv input ``x`` and the gate ``z`` to the scan's output: ``(y, final state or None)``."""
        in_scan = mask is None  # with padding, dt is masked after the softplus, so it comes softplus'd
        x, dt, B, C = self._conv_and_dt(x, mask, conv_history, cu_seqlens, raw_dt=in_scan)
        return selective_scan(
            x,
            dt,
            -torch.exp(self.A_log.float()),
            B,
            C,
            self.D,
            z,
            negative_eigvals=mamba_negative_eigvals(self.config.eigval_range),
            dt_bias=self.dt_proj.bias if in_scan else None,
            dt_softplus=in_scan,
            initial_state=state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
            backend=self.config.kernel_backend,
        )
