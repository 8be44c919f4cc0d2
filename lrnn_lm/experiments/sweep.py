"""One command for a state-tracking table: a grid of models x eigenvalue ranges x seeds through ``train.py``, then
through the length evaluation (the validation stream first, the test stream once per finished run).

    python -m lrnn_lm.experiments.sweep configs/sweeps/cpu_parity.yaml [--jobs N] [--dry-run] [--val-only] [--only TEXT]

A sweep file (configs/sweeps/*.yaml)::

    out_root: runs/sweeps/cpu_parity          # one folder per run: OUT_ROOT/<task>/<model>_<neg|pos>_s<seed>
    ranges: ["[-1,1]", "[0,1]"]
    seeds: [0, 1, 2]                          # --train.seed and --data.task.seed
    overrides: {train.eval_every: 500}        # optional: train.py --key=value for every run
    models:
      - name: DeltaNet                        # the row name in the table (with the range)
        config: configs/state_tracking/cpu_parity_deltanet_neg.yaml   # base config: range, seed, out_dir replaced
        overrides: {}                         # optional: this model's runs only
        ranges: ["[0,1]"]                     # optional: this model's ranges (default: the sweep's)
        seeds: [0]                            # optional: this model's seeds (default: the sweep's)
    evaluate:
      val: {lengths: [64, 128], num: 500, seed: 4242}             # the "val" split stream: choose on this
      test: {lengths: [40, 64, 128, 256], num: 1000, seed: 1234}  # the "test" split stream: read once per run
      batch_size: 256

A run is finished when ``final/`` and a ``summary.json`` that reached ``train.max_steps`` (or its
``train.max_minutes``) exist: it is not trained again. Any other run is (re)started with ``--resume auto``, which
continues from its newest complete checkpoint (or starts fresh in an empty folder). Each run's scores are kept in
``<run>/sweep_eval.json`` with the weights' hash, so a rerun evaluates only new or changed runs and the test
stream of a run is read once. ``--jobs N`` runs N jobs side by side: on CPU each child gets
``OMP_NUM_THREADS=1`` and ``--train.threads=1``; with GPUs job slot ``k`` gets GPU ``k % n_gpus`` through
``CUDA_VISIBLE_DEVICES``. Training logs go to ``OUT_ROOT/logs/``. At the end ``OUT_ROOT`` holds ``results.json``,
``table.md`` (Table 3 layout: best of the seeds, as the paper reports, and mean ± std) and one ``<task>.png`` per
task (lines: seed mean; bands: seed min-max; the training lengths shaded).

Run it from the repository root, as every command in the README: config paths in a sweep file are relative to the
working directory, and each run starts ``train.py`` from there (``--train-script`` names another one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EVAL_FILE = "sweep_eval.json"
# transformers' from_pretrained builds the model on the meta device by patching global state: two loads at once in
# two threads break each other ("Cannot copy out of meta tensor", untied heads). Loads take turns; scoring does not.
LOAD_LOCK = threading.Lock()
RANGE_SLUGS = {"[-1,1]": "neg", "[0,1]": "pos"}  # the configs' _neg / _pos naming
DEFAULT_EVAL = {
    "val": {"lengths": [64, 128], "num": 500, "seed": 4242},
    "test": {"lengths": [40, 64, 128, 256], "num": 1000, "seed": 1234},
    "batch_size": 256,
}


class SweepError(ValueError):
    """A bad sweep file; the message names the key."""


@dataclass
class Run:
    """One cell of the grid at one seed: what to pass to train.py and where it writes."""

    task_label: str
    task: dict  # name, options, min_len, max_len
    model: str
    eigval_range: str
    seed: int
    out: Path
    args: list[str]
    max_steps: int
    max_minutes: float | None
    config: dict  # the resolved train.py config (as in config.yaml, but out_dir), to check finished runs against

    @property
    def cell(self) -> str:
        return f"{self.model} {self.eigval_range}"

    @property
    def name(self) -> str:
        return f"{self.task_label} / {self.cell} / seed {self.seed}"


@dataclass
class Sweep:
    out_root: Path
    runs: list[Run]
    evaluate: dict
    source: str
    train_script: Path = Path("train.py")
    extra: dict = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _flag(key: str, value) -> str:
    # JSON is YAML, and train.py parses every value as YAML: strings stay strings, lists stay lists.
    return f"--{key}={json.dumps(value)}"


def _resolve(path: str, what: str) -> Path:
    p = Path(path).resolve()
    if not p.exists():
        raise SweepError(f"{what} {path!r} not found from {Path.cwd()}: run the sweep from the repository root")
    return p


def load_sweep(path: str | Path, out_root: str | None = None, train_script: str | Path = "train.py") -> Sweep:
    """Read a sweep file and build its runs; every run's train.py config is checked here, before any work.

    Config paths in the file and ``train_script`` are relative to the working directory (the repository root)."""
    from ..tasks import get_task
    from ..training.config import ConfigError, load_config, read_yaml

    script = _resolve(str(train_script), "train script")
    try:  # strict, as train.py reads its configs: a duplicate key or an alias is refused, naming the file
        spec = read_yaml(Path(path).read_text(), str(path)) or {}
    except ConfigError as e:
        raise SweepError(str(e)) from None
    unknown = set(spec) - {"out_root", "ranges", "seeds", "overrides", "models", "evaluate"}
    if unknown:
        raise SweepError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    if not spec.get("models"):
        raise SweepError(f"{path}: 'models' must list at least one {{name, config}}")
    root = Path(out_root or spec.get("out_root") or f"runs/sweeps/{Path(path).stem}")
    evaluate = {**DEFAULT_EVAL, **(spec.get("evaluate") or {})}
    for split in ("val", "test"):
        evaluate[split] = {**DEFAULT_EVAL[split], **evaluate[split]}
    runs, seen = [], {}
    for model in spec["models"]:
        if (
            set(model) - {"name", "config", "overrides", "ranges", "seeds"}
            or "name" not in model
            or "config" not in model
        ):
            raise SweepError(
                f"{path}: each model needs 'name' and 'config' (optional: overrides, ranges, seeds), got {model}"
            )
        base = _resolve(model["config"], f"model {model['name']!r}: config")
        shared = {**(spec.get("overrides") or {}), **(model.get("overrides") or {})}
        ranges = model.get("ranges", spec.get("ranges", ["[-1,1]", "[0,1]"]))
        bad = [r for r in ranges if r not in RANGE_SLUGS]
        if bad or not ranges:
            raise SweepError(
                f"{path}: model {model['name']!r}: ranges must be a non-empty subset of "
                f"{list(RANGE_SLUGS)}, got {ranges}"
            )
        for rng in ranges:
            for seed in model.get("seeds", spec.get("seeds", [0])):
                args = ["--config", str(base)] + [_flag(k, v) for k, v in shared.items()]
                args += [_flag("model.eigval_range", rng), _flag("train.seed", seed), _flag("data.task.seed", seed)]
                args += ["--logging.progress=false", "--resume=auto"]
                try:
                    cfg = load_config(args)
                except ConfigError as e:
                    raise SweepError(f"{path}: model {model['name']!r} ({base}): {e}") from e
                if cfg.data.task is None:
                    raise SweepError(f"{path}: {base} trains on text, not on a task")
                t = cfg.data.task
                label = get_task(t.name, **t.options).label
                out = root / _slug(label) / f"{_slug(model['name'])}_{RANGE_SLUGS[rng]}_s{seed}"
                if out in seen:
                    raise SweepError(f"{path}: two runs share {out} ({seen[out]} and {model['name']})")
                seen[out] = model["name"]
                task = {"name": t.name, "options": t.options, "min_len": t.min_len, "max_len": t.max_len}
                args.append(_flag("out_dir", str(out)))
                runs.append(
                    Run(
                        label,
                        task,
                        model["name"],
                        rng,
                        seed,
                        out,
                        args,
                        cfg.train.max_steps,
                        cfg.train.max_minutes,
                        cfg.to_dict(),
                    )
                )
    return Sweep(root, runs, evaluate, str(path), script)


# ----------------------------------------------------------------------------- state of a run on disk


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_finished(run: Run) -> bool:
    """``final/`` is written and the summary says the run went its whole length (steps, or its time budget)."""
    summary = read_json(run.out / "summary.json")
    if summary is None or not (run.out / "final" / "config.json").is_file():
        return False
    if not any((run.out / "final").glob("*.safetensors")):
        return False
    steps_done = summary.get("step", 0) >= run.max_steps
    time_done = run.max_minutes is not None and summary.get("minutes", 0) >= run.max_minutes
    return bool(steps_done or time_done)


def weights_id(run: Run) -> str:
    """What identifies the final weights: the hash train.py records, else the file times."""
    summary = read_json(run.out / "summary.json") or {}
    hashes = summary.get("param_sha256_per_rank")
    if hashes:
        return f"{summary.get('step')}:{hashes[0]}"
    return ":".join(str(p.stat().st_mtime_ns) for p in sorted((run.out / "final").glob("*.safetensors")))


def config_mismatch(run: Run) -> dict[str, tuple]:
    """Fields that define a run (everything train.py would refuse to change on resume, and what it asks to name)
    where the finished run's ``config.yaml`` differs from what this sweep would train: a run copied or left in
    the folder from another recipe must not enter the table under this one's name."""
    from ..training.resume import defining_changes

    try:
        saved = yaml.safe_load((run.out / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        return {"config.yaml": (f"unreadable: {e}", "the sweep's config")}
    return defining_changes(saved, run.config)


def state_of(run: Run) -> str:
    if is_finished(run):
        return "finished"
    return "resume" if (run.out / "run.json").exists() else "new"


# ----------------------------------------------------------------------------- evaluation of one run


def _setup(run: Run, split: str, spec: dict) -> dict:
    return {"task": run.task["name"], "options": run.task["options"], "split": split, **spec}


def evaluate_run(run: Run, split: str, spec: dict, batch_size: int, device: str) -> dict:
    """Scores of ``run``'s final weights on ``spec["num"]`` sequences per length of ``split``, cached in
    ``<run>/sweep_eval.json`` (kept while the weights and the evaluation settings are the same)."""
    path = run.out / EVAL_FILE
    cache = read_json(path) or {}
    setup, wid = _setup(run, split, spec), weights_id(run)
    hit = cache.get(split)
    if hit and hit.get("setup") == setup and hit.get("weights") == wid:
        return hit
    from transformers import AutoModelForCausalLM

    from ..tasks import get_task
    from .evaluate import build_test_set, evaluate_model

    task = get_task(run.task["name"], **run.task["options"])
    examples = build_test_set(task, spec["lengths"], spec["num"], spec["seed"], split)
    with LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(run.out / "final")
    per_length = evaluate_model(model, task, examples, batch_size, device, run.name, progress=False)
    mean = sum(r["scaled_acc"] for r in per_length.values()) / len(per_length)
    entry = {"setup": setup, "weights": wid, "mean_scaled_acc": mean, "per_length": per_length}
    cache = {**(read_json(path) or {}), split: entry}
    tmp = path.with_name(f".{EVAL_FILE}.tmp")
    tmp.write_text(json.dumps(cache, indent=2) + "\n")
    os.replace(tmp, path)
    return entry


# ----------------------------------------------------------------------------- running the grid


class Printer:
    """One line per event, with the time since the sweep started (thread-safe)."""

    def __init__(self) -> None:
        self.start = time.time()
        self.lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self.lock:
            print(f"[{time.time() - self.start:7.1f} s] {text}", flush=True)


def gpu_ids() -> list[str]:
    """The GPUs a child may be given, as CUDA_VISIBLE_DEVICES names (respecting this process's own)."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(n)]
    return names[:n]


def child_env(gpu: str | None) -> dict:
    env = dict(os.environ)
    if gpu is None:
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    else:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def train_run(run: Run, script: Path, gpu: str | None, logs: Path, say: Printer, label: str) -> bool:
    """Train (or resume) ``run`` in a child ``train.py`` (``script``); True when it finished."""
    cmd = [sys.executable, str(script), *run.args] + (["--train.threads=1"] if gpu is None else [])
    log = logs / f"{run.out.parent.name}__{run.out.name}.log"
    how = "resume" if (run.out / "run.json").exists() else "start"
    say(f"{how:6s} {label} {run.name} ({'GPU ' + gpu if gpu is not None else 'CPU, 1 thread'}); log {log}")
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env(gpu))
    ok = rc == 0 and is_finished(run)
    why = "" if ok else (f": train.py exit status {rc}" if rc else ": stopped before max_steps")
    say(f"{'done' if ok else 'FAILED':6s} {label} {run.name} in {time.time() - t0:.0f} s{why}")
    return ok


def do_run(
    run: Run, sweep: Sweep, slot: int, gpus: list[str], say: Printer, label: str, val_only: bool, may_train: bool
) -> dict:
    gpu = gpus[slot % len(gpus)] if gpus else None
    record = {"run_dir": str(run.out), "status": "skipped"}
    if not may_train and not is_finished(run):
        say(f"later  {label} {run.name}: not finished, and not selected by --only")
        return {**record, "status": "not run"}
    if is_finished(run):
        changed = config_mismatch(run)
        if changed:
            key, (saved, wanted) = next(iter(changed.items()))
            say(
                f"FAILED {label} {run.name}: finished with another config ({len(changed)} fields differ, e.g. "
                f"{key}: {saved!r} there, {wanted!r} here); move {run.out} aside to train it again"
            )
            return {**record, "status": "failed", "config_mismatch": {k: list(v) for k, v in changed.items()}}
        say(f"skip   {label} {run.name}: finished")
    elif not train_run(run, sweep.train_script, gpu, sweep.out_root / "logs", say, label):
        return {**record, "status": "failed"}
    else:
        record["status"] = "trained"
    summary = read_json(run.out / "summary.json") or {}
    record |= {"train_minutes": summary.get("minutes"), "steps": summary.get("step")}
    device = f"cuda:{slot % len(gpus)}" if gpus else "cpu"
    ev = sweep.evaluate
    for split in ("val",) if val_only else ("val", "test"):
        t0 = time.time()
        entry = evaluate_run(run, split, ev[split], ev["batch_size"], device)
        record[split] = {"mean_scaled_acc": entry["mean_scaled_acc"], "per_length": entry["per_length"]}
        if time.time() - t0 > 0.5:  # a cached score takes no time and is not worth a line
            say(f"eval   {label} {run.name}: {split} {entry['mean_scaled_acc']:.3f} in {time.time() - t0:.0f} s")
    return record


def run_sweep(sweep: Sweep, jobs: int | None = None, val_only: bool = False, only: list[str] | None = None) -> dict:
    """Train and evaluate every run of ``sweep`` (skipping finished work), then write the results and report.

    ``only``: train just the unfinished runs whose name (``task / model range / seed N``) contains one of these
    texts; finished runs are scored as always, the other unfinished ones are reported as not run."""
    import torch

    from .sweep_report import aggregate, write_report

    gpus = gpu_ids()
    jobs = jobs or max(1, len(gpus))
    if not gpus:
        torch.set_num_threads(1)  # the evaluations run in this process, one per job slot
    (sweep.out_root / "logs").mkdir(parents=True, exist_ok=True)
    say = Printer()
    say(f"sweep {sweep.source}: {len(sweep.runs)} runs, {jobs} at a time, {len(gpus) or 'no'} GPUs -> {sweep.out_root}")
    slots = list(range(jobs))
    lock = threading.Lock()

    def job(i: int, run: Run) -> dict:
        with lock:
            slot = slots.pop()
        try:
            may_train = not only or any(text in run.name for text in only)
            return do_run(run, sweep, slot, gpus, say, f"[{i + 1}/{len(sweep.runs)}]", val_only, may_train)
        except Exception as e:  # one broken run does not stop the others; it is reported as failed
            say(f"FAILED [{i + 1}/{len(sweep.runs)}] {run.name}: {type(e).__name__}: {e}")
            return {"run_dir": str(run.out), "status": "failed", "error": f"{type(e).__name__}: {e}"}
        finally:
            with lock:
                slots.append(slot)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        records = list(pool.map(job, range(len(sweep.runs)), sweep.runs))
    results = aggregate(sweep, records)
    write_report(sweep.out_root, results)
    failed = [r.name for r, rec in zip(sweep.runs, records) if rec["status"] == "failed"]
    trained = sum(rec["status"] == "trained" for rec in records)
    say(f"wrote {sweep.out_root / 'results.json'}, table.md and plots; trained {trained}, failed {len(failed)}")
    return results


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep file, e.g. configs/sweeps/cpu_parity.yaml")
    p.add_argument("--jobs", type=int, default=None, help="runs side by side (default: one per GPU, else 1)")
    p.add_argument("--dry-run", action="store_true", help="print each run's state and command; run nothing")
    p.add_argument("--val-only", action="store_true", help="score the validation stream only (while choosing)")
    p.add_argument("--out-root", default=None, help="replace the sweep file's out_root")
    p.add_argument("--train-script", default="train.py", help="the train.py each run starts (default: ./train.py)")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="TEXT",
        help="train only the runs whose name contains one of these (e.g. '/ DeltaNet [' or 'seed 0'); "
        "finished runs are scored as always, the other unfinished ones wait for a later call",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        sweep = load_sweep(args.sweep, args.out_root, args.train_script)
    except SweepError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for i, run in enumerate(sweep.runs):
            print(f"[{i + 1}/{len(sweep.runs)}] {state_of(run):8s} {run.name}")
            print(f"    {sys.executable} {sweep.train_script} {' '.join(run.args)}")
        return 0
    results = run_sweep(sweep, args.jobs, args.val_only, args.only)
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
