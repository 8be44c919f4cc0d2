"""Export fixed state-tracking test sets as lm-eval tasks (JSONL + task YAML, and a group YAML).

    python -m lrnn_lm.experiments.export_lm_eval --out configs/lm_eval_tasks
    lm_eval --model hf --model_args pretrained=CKPT --include_path configs/lm_eval_tasks \
        --tasks lrnn_state_tracking        # or lrnn_parity,lrnn_s5,...

Each document is loglikelihood multiple choice over the task's answer tokens: the context is the rendered
problem (tokens joined by spaces, see :meth:`~lrnn_lm.tasks.Task.render`) and each choice follows it after a
space. lm-eval hands ``data_files`` to ``datasets.load_dataset("json", ...)``, which resolves a relative path
against the working directory, so the YAMLs hold the path as given by ``--out``: run lm_eval from the
directory the export ran in (the repository root for the committed files).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ..tasks import get_task, sample_length

EXPORTED = ["parity", "mod_arith", "mod_arith_brackets", "s3", "s5"]
GROUP = "lrnn_state_tracking"


def export_rows(name: str, num: int, min_len: int, max_len: int, seed: int) -> list[dict]:
    """Documents of task ``name``: length of doc ``i`` is ``sample_length(seed, i, ...)``, split ``"lm_eval"``."""
    task = get_task(name)
    rows = []
    for i in range(num):
        length = sample_length(seed, i, min_len, max_len)
        context, answer, choices = task.render(task.example(seed, i, length, split="lm_eval"))
        rows.append(
            {"context": context, "answer": choices.index(answer), "answer_text": answer}
            | {"length": task.valid_length(length)}
        )
    return rows


def task_config(name: str, data_file: str) -> dict:
    """lm-eval task config; the choices are the task's answer tokens, the same for every document."""
    return {
        "task": f"lrnn_{name}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "context",  # a column name: lm-eval reads doc["context"]
        "doc_to_choice": list(get_task(name).answer_tokens),
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def export(out: str, num: int = 256, min_len: int = 8, max_len: int = 40, seed: int = 2024) -> list[Path]:
    """Write ``lrnn_<task>.jsonl`` and ``lrnn_<task>.yaml`` per exported task and ``_lrnn_state_tracking.yaml``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in EXPORTED:
        data = folder / f"lrnn_{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in export_rows(name, num, min_len, max_len, seed)))
        config = folder / f"lrnn_{name}.yaml"
        config.write_text(yaml.safe_dump(task_config(name, data.as_posix()), sort_keys=False))
        written += [data, config]
    group = {
        "group": GROUP,
        "task": [f"lrnn_{name}" for name in EXPORTED],
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": False}],
        "metadata": {"version": 1.0},
    }
    written.append(folder / f"_{GROUP}.yaml")
    written[-1].write_text(yaml.safe_dump(group, sort_keys=False))
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="configs/lm_eval_tasks", help="output folder (path kept as given in the YAMLs)")
    p.add_argument("--num", type=int, default=256, help="documents per task")
    p.add_argument("--min_len", type=int, default=8)
    p.add_argument("--max_len", type=int, default=40)
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args(argv)
    written = export(args.out, args.num, args.min_len, args.max_len, args.seed)
    print("\n".join(str(p) for p in written))
    return written


if __name__ == "__main__":
    main()
