"""How exactly a one-layer DeltaNet has learned S5's transpositions as reflections, per head.

A transposition ``(i j)`` acts on the sum-zero representation of S5 as the reflection ``I - 2 k k^T`` with
``k = (e_i - e_j) / sqrt(2)``: ``beta = 2``, and the keys of two transpositions meet at ``|cos| = 1/2`` when they
share a point and ``0`` when they are disjoint. A head that tracks S5 must get both right; what it gets wrong
compounds with length. For each head whose ``beta`` exceeds ``--beta-above`` on every transposition token this
reports ``max (2 - beta)`` and the largest deviation of the keys' ``|cos|`` from those exact values
(docs/state_tracking.md relates them to accuracy at length 500).

    python -m lrnn_lm.analysis.s5_reflections runs/sweeps/cpu_s5_len32/s5_generators_swaps/deltanet_neg_s*/final
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..layers.deltanet import DeltaNetMixer
from ..modeling_lrnn import LRNNForCausalLM
from ..tasks.groups import symmetric_task


def ideal_abs_cos(perms: list[tuple[int, ...]]) -> torch.Tensor:
    """``|cos|`` between the reflection keys of the transpositions ``perms``: 1, 1/2 (one shared point) or 0."""
    moved = [frozenset(i for i, p in enumerate(perm) if p != i) for perm in perms]
    return torch.tensor([[len(a & b) / 2 if a != b else 1.0 for b in moved] for a in moved])


def key_angle_error(keys: torch.Tensor, perms: list[tuple[int, ...]]) -> float:
    """Largest ``| |cos(k_a, k_b)| - exact |`` over pairs of transpositions; ``keys: [n, head_dim]``."""
    unit = torch.nn.functional.normalize(keys.double(), dim=-1)
    return float(((unit @ unit.T).abs() - ideal_abs_cos(perms).double()).abs().max())


@torch.no_grad()
def reflection_report(model: LRNNForCausalLM, beta_above: float = 1.9) -> dict:
    """Per head of layer 0 (a ``deltanet`` with no short conv, so each token's key is its own): ``beta`` and key
    precision over the 10 transposition tokens of S5, for the heads acting as reflections."""
    layer = model.model.layers[0]
    mixer = layer.mixer
    if not isinstance(mixer, DeltaNetMixer) or mixer.conv is not None:
        raise ValueError("s5_reflections reads layer 0 of a deltanet model without a short conv")
    task = symmetric_task(5, generators="swaps")
    perms = [task.group.elements[g] for g in task.generator_ids]
    ids = torch.tensor([1 + g for g in task.generator_ids])  # element g is token 1 + g
    hidden = layer.mixer_norm(model.get_input_embeddings()(ids)[None])
    _, k, _, beta, _ = mixer.project(hidden, None, None, None)  # k: [1, 10, H, D], beta: [1, 10, H]
    heads = []
    for h in range(mixer.num_heads):
        b = beta[0, :, h].float()
        if b.min() > beta_above:
            heads.append(
                {
                    "head": h,
                    "max_2_minus_beta": float((2 - b).max()),
                    "key_angle_error": key_angle_error(k[0, :, h], perms),
                }
            )
    return {"beta_above": beta_above, "reflection_heads": heads}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="HF checkpoint directories (one deltanet layer, no short conv)")
    p.add_argument("--beta-above", type=float, default=1.9, help="a head counts when beta exceeds this everywhere")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args(argv)
    out = {c: reflection_report(LRNNForCausalLM.from_pretrained(c).eval(), args.beta_above) for c in args.checkpoints}
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
