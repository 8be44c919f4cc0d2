"""Length-generalisation evaluation of trained checkpoints on a state-tracking task.

    python -m lrnn_lm.experiments.evaluate --checkpoints runs/a runs/b --task parity --lengths 40,64,128,256 \
        --num 1000 --output outputs/state_tracking

Each requested length is one bucket of ``--num`` sequences of exactly that length (after the task's
:meth:`~lrnn_lm.tasks.Task.valid_length`, e.g. 40 -> 39 for ``mod_arith``), drawn from the ``"test"`` split
stream with ``--seed``: a fixed test set, disjoint in generator stream from any training data. ``--split val``
draws the buckets from the ``"val"`` stream instead (train.py's validation stream past training: seed 4242,
lengths 64 and 128 by default), so a recipe can be chosen on a finished checkpoint without reading the test
stream; its entry is labelled ``<task> [val]``. Checkpoints
take task token ids directly (no tokenizer). Accuracy is argmax over the task's answer tokens, counted on
every target position (the final answer for parity / mod arith, every running product for the groups).
Results accumulate per task in ``OUTPUT/results.json``, from which ``OUTPUT/<task>.png`` and
``OUTPUT/table.md`` are redrawn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml
from tqdm import tqdm
from transformers import AutoModelForCausalLM

import lrnn_lm  # noqa: F401  (registers the LRNN model with the Auto classes)

from ..tasks import Example, Task, collate, get_task
from ..tasks.metrics import correct_counts, final_answer_hits, scaled_accuracy
from .report import write_plots, write_table

DEFAULT_SEEDS = {"test": 1234, "val": 4242}  # val: train.py's data.task.val_seed default


def build_test_set(
    task: Task, lengths: list[int], num: int, seed: int, split: str = "test"
) -> dict[int, list[Example]]:
    """``{requested length: num examples}``; example ``i`` is ``task.example(seed, i, length, split=split)``."""
    return {n: [task.example(seed, i, n, split=split) for i in range(num)] for n in lengths}


@torch.inference_mode()
def evaluate_model(
    model: torch.nn.Module,
    task: Task,
    test_set: dict[int, list[Example]],
    batch_size: int,
    device: str,
    name: str,
    progress: bool = True,
) -> dict[str, dict]:
    """Per requested length: acc / scaled_acc over target positions, final_acc over sequences, and counts."""
    model.to(device).eval()
    results = {}
    n_batches = sum(-(-len(v) // batch_size) for v in test_set.values())
    bar = tqdm(total=n_batches, desc=name, unit="batch", disable=not progress)
    for length, examples in test_set.items():
        correct = total = final = 0
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size], task.pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
            c, t = correct_counts(logits, batch["labels"], task.answer_ids)
            correct, total = correct + c, total + t
            final += int(final_answer_hits(logits, batch["labels"], task.answer_ids).sum())
            bar.update(1)
        acc, final_acc = correct / total, final / len(examples)
        results[str(length)] = {
            "effective_length": task.valid_length(length),
            "acc": acc,
            "scaled_acc": scaled_accuracy(acc, task.chance),
            "final_acc": final_acc,
            "scaled_final_acc": scaled_accuracy(final_acc, task.chance),
            "n": len(examples),
            "n_targets": total,
        }
    bar.close()
    return results


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True, help="HF checkpoint directories")
    p.add_argument("--task", required=True, help="task name, e.g. parity, mod_arith, s5")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="task option (repeatable)")
    p.add_argument("--lengths", default="40,64,128,256", help="comma-separated test lengths, one bucket each")
    p.add_argument("--num", type=int, default=1000, help="sequences per length")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--seed", type=int, default=None, help="seed of the stream (default: 1234 for test, 4242 for val)")
    p.add_argument(
        "--split", choices=["test", "val"], default="test", help="generator stream: 'val' to choose, 'test' once"
    )
    p.add_argument("--output", default="outputs/state_tracking")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--names", nargs="+", help="model names for the plot and table (default: checkpoint names)")
    args = p.parse_args(argv)
    if args.names and len(args.names) != len(args.checkpoints):
        p.error("--names needs one name per checkpoint")
    return args


def _default_names(checkpoints: list[str]) -> list[str]:
    names = [Path(c).name or c for c in checkpoints]
    return names if len(set(names)) == len(names) else list(checkpoints)


def main(argv: list[str] | None = None) -> dict:
    """Run the evaluation; returns the full (merged) content written to ``results.json``."""
    args = _parse_args(argv)
    options = dict(o.split("=", 1) for o in args.option)
    task = get_task(args.task, **{k: yaml.safe_load(v) for k, v in options.items()})
    lengths = [int(n) for n in args.lengths.split(",")]
    seed = args.seed if args.seed is not None else DEFAULT_SEEDS[args.split]
    test_set = build_test_set(task, lengths, args.num, seed, args.split)
    setup = {"task": task.name, "options": task.options, "chance": task.chance, "lengths": lengths}
    setup |= {"num": args.num, "seed": seed, "split": args.split}
    label = task.label if args.split == "test" else f"{task.label} [val]"

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    entry = results.get(label, {})
    # Models from earlier runs stay only if they saw the same test set.
    models = entry.get("models", {}) if all(entry.get(k) == v for k, v in setup.items()) else {}
    for ckpt, name in zip(args.checkpoints, args.names or _default_names(args.checkpoints)):
        model = AutoModelForCausalLM.from_pretrained(ckpt)
        if model.config.vocab_size < task.vocab_size:
            raise ValueError(f"{ckpt}: vocab_size {model.config.vocab_size} < task vocab size {task.vocab_size}")
        per_length = evaluate_model(model, task, test_set, args.batch_size, args.device, name)
        mean = sum(r["scaled_acc"] for r in per_length.values()) / len(per_length)
        models[name] = {"checkpoint": str(ckpt), "mean_scaled_acc": mean, "per_length": per_length}
        print(f"{name}: {label} scaled accuracy {mean:.3f} (mean over lengths {lengths})")
    results[label] = {**setup, "models": models}
    path.write_text(json.dumps(results, indent=2) + "\n")
    write_plots(out, results)
    write_table(out, results)
    return results


if __name__ == "__main__":
    main()
