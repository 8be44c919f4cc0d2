"""lm-eval through its Python API: one ``simple_evaluate`` call per task, so that a task whose dataset cannot
be fetched (offline, gated, renamed) records its error and the other tasks still run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

# The paper's Table 4 (Grazzi et al. 2025, as in the DeltaNet and Mamba papers).
TABLE4_TASKS = ["wikitext", "lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge"]
# The repository's local tasks, relative to the working directory (the repository root, as every documented command
# runs); eval.py --include_path names another folder. Never found by climbing up from the installed package.
LOCAL_TASKS_DIR = Path("configs") / "lm_eval_tasks"
# Perplexity stderrs are bootstrapped; lm-eval's default of 100k resamples takes minutes for one ± column.
BOOTSTRAP_ITERS = 1000


def make_lm(model, tokenizer, batch_size: int):
    """``HFLM`` on an already loaded model: its device and dtype are the model's."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


class LazyTaskManager:
    """Resolves names against the local task folder first and indexes lm-eval's few thousand built-in task
    YAMLs (10-20 s) only when a name is not local."""

    def __init__(self, include_path: str | Path | None) -> None:
        self.include_path = str(include_path) if include_path else None
        self._local = self._full = None

    def for_task(self, name: str):
        from lm_eval.tasks import TaskManager

        if self.include_path is not None:
            if self._local is None:
                self._local = TaskManager(include_path=self.include_path, include_defaults=False)
            if name in self._local.all_tasks:
                return self._local
        if self._full is None:
            self._full = TaskManager(include_path=self.include_path)
        return self._full


def run_task(lm, task: str, tasks: LazyTaskManager, limit: int | None) -> dict[str, Any]:
    """``{"ok": True, "results": {task_or_subtask: metrics}, "n_samples": ...}`` or ``{"ok": False, "error": msg}``."""
    from lm_eval import simple_evaluate

    try:
        out = simple_evaluate(
            model=lm,
            tasks=[task],
            limit=limit,
            task_manager=tasks.for_task(task),
            log_samples=False,
            bootstrap_iters=BOOTSTRAP_ITERS,
        )
    except Exception as e:  # any failure of one task (dataset, config, model) is reported, not raised
        return {"ok": False, "error": f"{type(e).__name__}: {_first_line(str(e))}"}
    if out is None:  # simple_evaluate returns None on non-zero ranks only; we run single-process
        return {"ok": False, "error": "lm-eval returned no results"}
    return {"ok": True, "results": _clean(out["results"]), "n_samples": _clean(out.get("n-samples", {}))}


def run_tasks(lm, names: list[str], tasks: LazyTaskManager, limit: int | None, label: str = "") -> dict[str, dict]:
    """Every task in ``names``, each in its own call; failures are printed as they happen."""
    results = {}
    for name in tqdm(names, desc=f"lm-eval {label}".strip(), unit="task"):
        results[name] = run_task(lm, name, tasks, limit)
        if not results[name]["ok"]:
            tqdm.write(f"[{label}] task {name!r} FAILED: {results[name]['error']}")
    return results


def metric(task_results: dict[str, dict], task: str, name: str) -> float | None:
    """The value of ``name`` (e.g. ``"acc"``; lm-eval stores ``"acc,none"``) for ``task``, or None if missing."""
    entry = task_results.get(task)
    if not entry or not entry.get("ok"):
        return None
    value = entry["results"].get(task, {}).get(f"{name},none")
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


def _clean(obj: Any) -> Any:
    """JSON-safe copy (lm-eval puts "N/A" strings and numpy scalars next to floats)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    try:
        value = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return value if math.isfinite(value) else None
