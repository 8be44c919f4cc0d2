"""Packed variable-length sequences (fla's ``cu_seqlens`` convention), shared by all backends.

A packed batch has ``batch == 1`` and ``cu_seqlens = [0, l_0, l_0 + l_1, ..., total]`` (N + 1 offsets).
The recurrent state restarts at every offset, from ``initial_state[i]`` or from zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


def check_cu_seqlens(cu_seqlens: torch.Tensor, batch: int, total: int, initial_state: torch.Tensor | None) -> int:
    """Validate ``cu_seqlens`` against a packed batch and return the number of sequences."""
    if batch != 1:
        raise ValueError(f"cu_seqlens requires batch == 1 (a packed batch), got batch={batch}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be a 1-D tensor of N+1 >= 2 offsets, got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.is_floating_point():
        raise ValueError(f"cu_seqlens must be an integer tensor, got {cu_seqlens.dtype}")
    offsets = cu_seqlens.tolist()
    if offsets[0] != 0 or offsets[-1] != total:
        raise ValueError(f"cu_seqlens must start at 0 and end at T={total}, got {offsets[0]}..{offsets[-1]}")
    if any(b < a for a, b in zip(offsets[:-1], offsets[1:])):
        raise ValueError("cu_seqlens must be non-decreasing")
    n = len(offsets) - 1
    if initial_state is not None and initial_state.shape[0] != n:
        raise ValueError(f"initial_state has {initial_state.shape[0]} rows but cu_seqlens holds {n} sequences")
    return n


def run_per_sequence(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    cu_seqlens: torch.Tensor,
    sequence: Mapping[str, torch.Tensor | None],
    initial_state: torch.Tensor | None,
    state_shape: tuple[int, ...],
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``fn`` once per packed sequence and stitch the results back together.

    ``sequence`` holds the ``[1, T, ...]`` tensors to split along time, by keyword (``None`` passes through).
    ``fn(**pieces, initial_state=..., output_final_state=True, **kwargs)`` must return ``(o, state)``.
    Total sequential work stays T steps, so this costs no more than one long call.
    """
    offsets = cu_seqlens.tolist()
    outs, states = [], []
    for i, (s, e) in enumerate(zip(offsets[:-1], offsets[1:])):
        h0 = None if initial_state is None else initial_state[i : i + 1]
        if e == s:
            # An empty sequence produces no output; its final state is its initial state.
            ref = next(t for t in sequence.values() if t is not None)
            state = torch.zeros((1, *state_shape), dtype=torch.float32, device=ref.device) if h0 is None else h0.float()
            states.append(state)
            continue
        pieces = {name: None if t is None else t[:, s:e] for name, t in sequence.items()}
        o, state = fn(**pieces, initial_state=h0, output_final_state=True, **kwargs)
        outs.append(o)
        states.append(state)
    return torch.cat(outs, dim=1), torch.cat(states, dim=0)


def as_padded_batch(
    cu_seqlens: torch.Tensor,
) -> tuple[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """``(unpack, scatter)`` between a packed row ``[1, total, ...]`` and a padded batch ``[N, longest, ...]``.

    ``unpack(t, fill=0.0)`` lays each sequence in its own row, the tail after its end filled with ``fill`` (choose
    a value that makes a padded step the identity, such as a gate of 1 with no input, so that no loop over
    sequences is needed); ``scatter(x)`` puts a per-token ``[N, longest, ...]`` result back as ``[1, total, ...]``
    in fp32, dropping the padding.
    """
    starts, ends = cu_seqlens[:-1].long(), cu_seqlens[1:].long()
    lengths = ends - starts
    width = max(int(lengths.max()), 1) if lengths.numel() else 1
    offsets = torch.arange(width, device=cu_seqlens.device)
    valid = offsets[None, :] < lengths[:, None]  # [N, width]
    index = torch.where(valid, starts[:, None] + offsets[None, :], torch.zeros_like(valid, dtype=torch.long))
    total = int(cu_seqlens[-1])

    def unpack(t: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        rows = t[0][index]  # [N, width, ...]
        return rows.masked_fill(~valid.view(*valid.shape, *([1] * (rows.dim() - 2))), fill)

    def scatter(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((1, total, *x.shape[2:]), dtype=torch.float32)
        out[0, index[valid]] = x[valid].float()
        return out

    return unpack, scatter
