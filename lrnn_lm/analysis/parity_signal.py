"""How much parity a model's final hidden state carries, measured over every bit string of one length.

Parity is uncorrelated with every function of fewer than all the bits, so gradient descent on the final answer
starts from exactly this signal: the Walsh coefficient of the full parity in the last hidden state,
``E[(-1)^(sum of bits) * (h - E h)]``, relative to the typical size of ``h - E h``. At initialisation it is what
decides whether a CPU-sized run leaves chance at all (docs/state_tracking.md has the measured values).

    python -m lrnn_lm.analysis.parity_signal configs/state_tracking/cpu_parity_*.yaml
    python -m lrnn_lm.analysis.parity_signal configs/state_tracking/cpu_parity_mamba_neg.yaml --set model.dt_scale=1
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from ..configuration_lrnn import LRNNConfig
from ..modeling_lrnn import LRNNForCausalLM
from ..tasks import get_task


@torch.no_grad()
def parity_signal(model: LRNNForCausalLM, n_bits: int = 8) -> float:
    """``|Walsh coefficient of parity| / mean |h - E h|`` over all ``2**n_bits`` inputs ``b_1 .. b_n =``.

    0 means the final hidden state is blind to parity; values near 1 mean parity dominates its variation.
    """
    task = get_task("parity")
    zero, one, eq = (task.token_id(t) for t in ("0", "1", "="))
    strings = list(itertools.product([0, 1], repeat=n_bits))
    ids = torch.tensor([[one if b else zero for b in bits] + [eq] for bits in strings])
    sign = torch.tensor([(-1.0) ** sum(bits) for bits in strings])
    hidden = model.model(input_ids=ids).last_hidden_state[:, -1].float()
    centred = hidden - hidden.mean(0)
    coefficient = (sign[:, None] * centred).mean(0)
    return (coefficient.norm() / centred.norm(dim=1).mean().clamp_min(1e-30)).item()


def parity_signal_at_init(config: LRNNConfig, n_bits: int = 8, seeds: int = 3) -> float:
    """Mean :func:`parity_signal` of ``seeds`` freshly initialised models built from ``config``."""
    values = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        values.append(parity_signal(LRNNForCausalLM(config).eval(), n_bits))
    return sum(values) / len(values)


def config_from_train_yaml(path: str, overrides: list[str] = ()) -> LRNNConfig:
    """The model a train.py YAML (plus ``key.sub=value`` overrides) would build for the parity task."""
    from ..training.config import load_config

    model = load_config(["--config", path, *(f"--{o}" for o in overrides)]).model
    if not isinstance(model, dict):
        raise ValueError(f"{path}: the model section must be a mapping, got {model!r}")
    model = dict(model)
    model["vocab_size"] = get_task("parity").vocab_size
    return LRNNConfig(**model)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="train.py YAML files; their model sections are used")
    parser.add_argument("--bits", type=int, default=8, help="string length (all 2**bits strings are used)")
    parser.add_argument("--seeds", type=int, default=3, help="initialisations averaged per config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. model.dt_scale=1")
    parser.add_argument("--output", help="write the values to this JSON file")
    args = parser.parse_args(argv)
    results = {}
    for path in args.configs:
        results[path] = parity_signal_at_init(config_from_train_yaml(path, args.set), args.bits, args.seeds)
        print(f"{results[path]:.2e}  {path}", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
