"""The gate ``alpha`` a gated model (Gated DeltaNet, gated DeltaProduct, Mamba-2) learned, measured on a task's inputs.

Per layer and head: ``alpha`` and ``|alpha|`` for each input token (min / mean / max over every position it occurs
at), the eigenvalue along the key ``alpha (1 - beta)``, and per length ``L`` the **retention**: the product of
``|alpha_t|`` over the positions the answer is read from (for parity the ``L`` bits and ``=``), averaged over the
sequences. For Mamba-2 ``alpha`` is the head's whole transition (``2 exp(dt A) - 1`` in ``[-1,1]``), so it is
also the eigenvalue and the retention scales the whole state. For the delta rules, everything off the key direction
is scaled by exactly that product, so a head whose retention at ``L`` is
small has forgotten the start of the sequence by the answer; ``alpha_bar`` (the geometric mean of ``|alpha|`` over
those positions) gives the same as ``alpha_bar ** (L + 1)``. docs/state_tracking.md compares it with the accuracy.

    python -m lrnn_lm.analysis.gate_stats runs/gdn_probe/shipped_s3/final --task parity --lengths 40,128,256,512 \
        --split val --num 64 --output outputs/gate_stats.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ..experiments.evaluate import DEFAULT_SEEDS, build_test_set
from ..layers.gated_deltanet import GatedDeltaNetMixer
from ..layers.mamba2 import Mamba2Mixer
from ..tasks import Task, get_task


def _has_gate(mixer) -> bool:
    """A scalar gate per head and token: Mamba-2's, or a gated delta rule's ``alpha``."""
    return isinstance(mixer, Mamba2Mixer) or (isinstance(mixer, GatedDeltaNetMixer) and mixer.a_proj is not None)


def gated_layers(model) -> list[tuple[int, GatedDeltaNetMixer | Mamba2Mixer]]:
    """``(layer number from 1, mixer)`` for every layer with a gate ``alpha``; an error naming the model if none."""
    found = [(i + 1, layer.mixer) for i, layer in enumerate(model.model.layers) if _has_gate(layer.mixer)]
    if not found:
        mixers = sorted({type(layer.mixer).__name__ for layer in model.model.layers})
        raise ValueError(f"gate_stats: the model has no layer with a gate alpha (its mixers: {mixers})")
    return found


@torch.no_grad()
def collect_gates(model, input_ids: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (alpha [B, T, H], eigenvalue along k [B, T, H])}`` for a batch of unpadded ``input_ids [B, T]``."""
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for number, mixer in gated_layers(model):

        def hook(module, args, kwargs, output, number=number):
            # The mixer's own code, on the hidden state it was given: the gate is not restated here.
            mask, cu_seqlens = kwargs.get("mask"), kwargs.get("cu_seqlens")
            if isinstance(module, Mamba2Mixer):  # the gate is the transition: alpha is the eigenvalue
                alpha = module.transition_eigenvalues(args[0], mask, cu_seqlens).float()
                out[number] = (alpha, alpha)
                return
            _, _, _, beta, alpha, _ = module.project(args[0], mask, None, cu_seqlens)
            out[number] = (alpha.float(), (alpha * (1 - beta[:, :, 0])).float())

        handles.append(mixer.register_forward_hook(hook, with_kwargs=True))
    try:
        model(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out


def _stats(values: torch.Tensor) -> dict:
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


@torch.no_grad()
def gate_report(
    model, task: Task, lengths: list[int], num: int = 64, seed: int | None = None, split: str = "val"
) -> dict:
    """Gate statistics of ``model`` on ``num`` sequences per length of ``task``'s ``split`` stream.

    The answer is read at the position before the first target, so the retention multiplies ``|alpha|`` over the
    positions up to and including that one (each sequence of one bucket has the same length: no padding).
    """
    model.eval()
    seed = DEFAULT_SEEDS[split] if seed is None else seed
    examples = build_test_set(task, lengths, num, seed, split)
    layers = [n for n, _ in gated_layers(model)]
    per_token: dict[int, dict[int, list]] = {n: {} for n in layers}  # layer -> token id -> [alpha, eig] chunks
    retention: dict[int, dict[int, torch.Tensor]] = {n: {} for n in layers}  # layer -> length -> [num, H]
    log_alpha: dict[int, list[torch.Tensor]] = {n: [] for n in layers}
    for length, bucket in examples.items():
        ids = torch.tensor([e.input_ids for e in bucket])
        labels = torch.tensor([e.labels for e in bucket])
        read_at = int((labels[0] != -100).nonzero()[0]) - 1  # the position whose output predicts the answer
        for number, (alpha, eig) in collect_gates(model, ids).items():
            seen = slice(0, read_at + 1)
            log_abs = alpha[:, seen].abs().clamp_min(1e-30).log()  # [num, positions, H]
            retention[number][length] = log_abs.sum(1).exp()
            log_alpha[number].append(log_abs.reshape(-1, log_abs.shape[-1]))
            for token in ids[:, seen].unique().tolist():
                where = ids[:, seen] == token
                chunks = per_token[number].setdefault(token, [])
                chunks.append((alpha[:, seen][where], eig[:, seen][where]))
    report = {"task": task.label, "split": split, "seed": seed, "num": num, "lengths": lengths, "layers": []}
    for number in layers:
        all_log = torch.cat(log_alpha[number])  # [positions, H]
        heads = []
        for h in range(all_log.shape[-1]):
            tokens = {}
            for token, chunks in sorted(per_token[number].items()):
                a = torch.cat([c[0][:, h] for c in chunks])
                e = torch.cat([c[1][:, h] for c in chunks])
                tokens[task.vocab[token]] = {"alpha": _stats(a), "abs_alpha": _stats(a.abs()), "eig_along_k": _stats(e)}
            alpha_bar = math.exp(float(all_log[:, h].mean()))
            heads.append(
                {
                    "head": h,
                    "alpha_bar": alpha_bar,
                    "one_minus_alpha_bar": 1.0 - alpha_bar,
                    "tokens": tokens,
                    "retention": {str(L): _stats(retention[number][L][:, h]) for L in lengths},
                }
            )
        report["layers"].append({"layer": number, "heads": heads})
    return report


def format_report(name: str, report: dict) -> str:
    """A markdown table per layer: each head's ``1 - alpha_bar``, its ``|alpha|`` per token and mean retention."""
    lines = [f"### {name} ({report['task']}, {report['split']} seed {report['seed']}, {report['num']} per length)"]
    for layer in report["layers"]:
        tokens = list(layer["heads"][0]["tokens"])
        head = ["head", "1 - alpha_bar"] + [f"\\|alpha\\| on `{t}`" for t in tokens]
        head += [f"retention {L}" for L in report["lengths"]]
        lines += [f"layer {layer['layer']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for h in layer["heads"]:
            row = [str(h["head"]), f"{h['one_minus_alpha_bar']:.2e}"]
            row += [f"{h['tokens'][t]['abs_alpha']['mean']:.5f}" for t in tokens]
            row += [f"{h['retention'][str(L)]['mean']:.3f}" for L in report["lengths"]]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from ..modeling_lrnn import LRNNForCausalLM

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="HF checkpoint directories of models with a gated layer")
    p.add_argument("--task", default="parity")
    p.add_argument("--lengths", default="40,64,128,256,512", help="comma-separated sequence lengths")
    p.add_argument("--num", type=int, default=64, help="sequences per length")
    p.add_argument("--split", default="val", choices=["val", "test"], help="the stream to draw them from")
    p.add_argument("--seed", type=int, default=None, help="default: the split's (val 4242, test 1234)")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args(argv)
    task = get_task(args.task)
    lengths = [int(x) for x in args.lengths.split(",")]
    out = {}
    for path in args.checkpoints:
        out[path] = gate_report(LRNNForCausalLM.from_pretrained(path), task, lengths, args.num, args.seed, args.split)
        print(format_report(path, out[path]))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
