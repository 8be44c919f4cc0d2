"""GPU timings, one run: kernels against their peers, training steps and peak memory of the shipped configs, and an
end-to-end smoke. Correctness is ``python -m pytest --device cuda``'s (benchmarks/gpu_run.sh runs both, one report).

    python benchmarks/gpu_timing.py --out DIR [--budget-s 300] [--sections kernels,training,e2e] [--repeats 10]
    python benchmarks/gpu_timing.py --out DIR --rehearse     # the same code on CPU at tiny shapes (CI)

- kernels: ours (``backend="triton"``, signed and unsigned) and mamba_ssm's and fla's kernels where importable,
  forward+backward, bf16 inputs at the 340M/370M models' shapes, median of ``--repeats`` by CUDA events;
- training: one bf16 step (autocast, AdamW) of each 340M/370M config in both ranges and of fla's DeltaNet and
  transformers' Mamba / Mamba-2 (only on mamba_ssm's fast path): tokens/s, MFU (6N), peak memory;
- e2e: ``train.py`` 100 steps on a 117M DeltaNet in bf16 (the loss must fall), checkpoints verified, then
  ``from_pretrained`` + ``generate``.

``DIR/timing.json`` is rewritten after every item; one that would start past the budget is ``skipped: budget``.
``--rehearse``: CPU, ``chunk`` backend, tiny shapes, wall clock, 5 training steps; its numbers measure nothing.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml
from timing import fwd_bwd, ours

from lrnn_lm import kernels
from lrnn_lm.kernels.testing import POSITIONAL, make_inputs

SECTIONS = ("kernels", "training", "e2e")
GPU_SHAPES = {  # DeltaNet 340M: 8 heads of 128; Mamba 370M: d_inner 2048, N 16; Mamba-2 370M: 32 heads of 64, N 128
    "selective_scan": dict(batch=8, T=2048, d=2048, N=16),
    "ssd": dict(batch=4, T=2048, H=32, P=64, N=128, G=1),
    "delta_rule": dict(batch=8, T=2048, H=8, K=128, V=128),
    "gated_delta_rule": dict(batch=8, T=2048, H=8, K=128, V=128),
    "delta_product": dict(batch=8, T=2048, H=8, K=128, V=128, n_h=2),
}
TRAIN_CONFIGS = tuple(f"{m}_{r}" for m in ("deltanet_340m", "mamba_370m", "mamba2_370m") for r in ("neg", "pos"))
E2E_MODEL = dict(hidden_size=768, num_hidden_layers=12, num_heads=6, intermediate_size=3072)  # 117M at vocab 4096
TINY_E2E_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_heads=2, intermediate_size=64)


class Run:
    """Where results go, the device, the timer and the budget of one run."""

    def __init__(self, out: Path, rehearse: bool, budget_s: float, repeats: int) -> None:
        self.out, self.rehearse, self.repeats = out, rehearse, repeats
        self.device = torch.device("cpu" if rehearse else "cuda")
        self.cuda = self.device.type == "cuda"
        self.deadline = time.time() + budget_s
        self.report: dict = {"mode": "rehearsal" if rehearse else "gpu", "budget_s": budget_s, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)

    def shape(self, op: str) -> dict:
        """The op's shape; in a rehearsal every size at most 3 and T 33 (odd sizes, a partial last chunk)."""
        return (
            {k: 33 if k == "T" else min(v, 3) for k, v in GPU_SHAPES[op].items()} if self.rehearse else GPU_SHAPES[op]
        )

    def median_ms(self, fn: Callable[[], object], repeats: int | None = None, warmup: int = 2) -> dict:
        """Median milliseconds of ``fn``: CUDA events on a GPU, the wall clock in a rehearsal."""
        n = 2 if self.rehearse else (repeats or self.repeats)
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(n):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": n}

    def item(self, section: str, name: str, fn: Callable[[], dict]) -> None:
        """Run one measurement and record it (``status`` ok, skipped: ... or failed: ...), then rewrite the JSON."""
        items = self.report["sections"].setdefault(section, {})
        if time.time() > self.deadline:
            items[name] = {"status": "skipped: budget"}
        else:
            print(f"gpu_timing: {section}/{name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                res = fn()
                items[name] = {"status": res.pop("status", "ok"), **res}
            except Exception as e:  # recorded, and the next item runs
                items[name] = {"status": f"failed: {type(e).__name__}: {str(e)[:500]}"}
            items[name]["seconds"] = round(time.perf_counter() - t0, 2)
            if self.cuda:
                gc.collect()
                torch.cuda.empty_cache()
        tmp = self.out / "timing.json.tmp"
        tmp.write_text(json.dumps(self.report, indent=2, default=str))
        tmp.replace(self.out / "timing.json")


def environment() -> dict:
    import importlib.metadata as md

    env = {"python": sys.version.split()[0], "device": "cpu"}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        env["memory_GiB"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    for pkg in ("torch", "triton", "flash-linear-attention", "transformers", "mamba-ssm", "causal-conv1d"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    return env


def peers(op: str, x: dict) -> dict[str, Callable[[], Callable[[], None]]]:
    """The peers of ``op`` on the same (unsigned) inputs, each built lazily (its import may fail)."""
    leaves = [t for t in x.values() if t is not None]

    def mamba_scan():
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        # mamba_ssm's layout: x, dt, z [B, D, L]; B, C [B, N, L]; transposed once, outside the timing.
        m = {k: x[k].detach().transpose(1, 2).contiguous().requires_grad_() for k in ("x", "dt", "B", "C", "z")}
        A, D = x["A"], x["D"]
        return fwd_bwd(lambda: (selective_scan_fn(m["x"], m["dt"], A, m["B"], m["C"], D, m["z"]),), [*m.values(), A])

    def fla_simple_gla():
        from fla.ops.simple_gla import chunk_simple_gla

        def run():
            rep = x["x"].shape[2] // x["B"].shape[2]
            q, k = (x[n].repeat_interleave(rep, dim=2) for n in ("C", "B"))
            o, S = chunk_simple_gla(q, k, x["x"] * x["dt"][..., None], (x["dt"] * x["A"]).float(), scale=1.0)
            return o + x["D"][:, None] * x["x"], S

        return fwd_bwd(run, leaves)

    def mamba_ssd():
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        args = [x[n] for n in ("x", "dt", "A", "B", "C")]
        return fwd_bwd(lambda: (mamba_chunk_scan_combined(*args, chunk_size=64, D=x["D"]),), leaves)

    def fla_delta():
        from fla.ops.delta_rule import chunk_delta_rule

        return fwd_bwd(lambda: chunk_delta_rule(*[x[n] for n in POSITIONAL[op]]), leaves)

    def fla_gated():
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        q, k, v, beta, alpha = (x[n] for n in POSITIONAL[op])
        return fwd_bwd(lambda: chunk_gated_delta_rule(q, k, v, alpha.float().log(), beta), leaves)

    def fla_product():
        from fla.ops.gated_delta_product import chunk_gated_delta_product

        q, k, v, beta, alpha = (x[n] for n in POSITIONAL[op])
        B, T, n_h = k.shape[:3]  # fla takes the n_h sub-steps interleaved along time: [B, T * n_h, ...]
        k, v, beta = (t.reshape(B, T * n_h, *t.shape[3:]) for t in (k, v, beta))
        g = alpha.float().log()
        return fwd_bwd(lambda: chunk_gated_delta_product(q, k, v, g, beta, num_householder=n_h), leaves)

    return {
        "selective_scan": {"mamba_ssm.selective_scan_fn": mamba_scan},
        "ssd": {"fla.chunk_simple_gla": fla_simple_gla, "mamba_ssm.mamba_chunk_scan_combined": mamba_ssd},
        "delta_rule": {"fla.chunk_delta_rule": fla_delta},
        "gated_delta_rule": {"fla.chunk_gated_delta_rule": fla_gated},
        "delta_product": {"fla.chunk_gated_delta_product": fla_product},
    }[op]


def time_op(run: Run, op: str) -> dict:
    """Ours signed and unsigned, then each peer on the unsigned inputs; times and ratios (time over time)."""
    backend = "triton" if run.cuda else "chunk"
    dtype = torch.bfloat16 if run.cuda else torch.float32
    shape = run.shape(op)
    res: dict = {"shape": shape, "dtype": str(dtype), "backend": backend, "what": "forward+backward"}
    for signed in (False, True):
        x = make_inputs(op, shape, signed=signed, dtype=dtype, device=run.device)
        res["signed" if signed else "unsigned"] = run.median_ms(ours(op, x, backend, signed))
    res["signed_time_over_unsigned"] = res["signed"]["median_ms"] / res["unsigned"]["median_ms"]
    x = make_inputs(op, shape, signed=False, dtype=dtype, device=run.device, with_state=False)
    for name, build in peers(op, x).items():
        if not run.cuda:
            res[name] = {"skipped": "its kernels need CUDA"}
            continue
        try:
            timed = build()
        except ImportError as e:
            res[name] = {"skipped": f"not importable: {e}"}
            continue
        res[name] = run.median_ms(timed)
        for which in ("unsigned", "signed"):
            res[f"ours_{which}_time_over_{name}"] = res[which]["median_ms"] / res[name]["median_ms"]
    return res


def _tiny(model: dict) -> dict:
    """The config's mixer and range at a size a CPU runs in a second."""
    small = dict(num_heads=2, intermediate_size=96, state_size=8, ssd_head_dim=16)
    return dict(model, hidden_size=64, num_hidden_layers=2, vocab_size=512) | {k: small[k] for k in small if k in model}


def _measure_steps(run: Run, model: torch.nn.Module, micro_batch: int, T: int, vocab: int) -> dict:
    """Full training steps (bf16 autocast on a GPU, AdamW) timed; the loss must stay finite."""
    from lrnn_lm.training.runtime import mfu

    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=run.cuda)
    ids = torch.randint(0, vocab, (micro_batch, T), generator=torch.Generator().manual_seed(0)).to(run.device)
    losses: list[torch.Tensor] = []

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16) if run.cuda else nullcontext():
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    t = run.median_ms(step, repeats=3)
    tokens_per_s = micro_batch * T / (t["median_ms"] / 1e3)
    res = {"params": n_params, "micro_batch": micro_batch, "seq_len": T, "step": t, "tokens_per_s": tokens_per_s}
    res["mfu_6N"] = mfu(tokens_per_s, n_params)
    res["peak_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30 if run.cuda else None
    loss_values = [float(v) for v in losses]
    if not all(math.isfinite(v) for v in loss_values):
        res["status"] = f"failed: non-finite loss {loss_values}"
    return res


def train_step(run: Run, build: Callable[[], torch.nn.Module], micro_batch: int, T: int, vocab: int) -> dict:
    """:func:`_measure_steps` at ``micro_batch``; on CUDA out-of-memory again at half of it, down to 1."""
    ooms = []
    while True:
        try:
            with run.device:  # built on the device directly (a 370M fp32 init on the CPU is slow)
                res = _measure_steps(run, build().train(), micro_batch, T, vocab)
            break
        except torch.cuda.OutOfMemoryError as e:
            if micro_batch <= 1:
                raise
            ooms.append({"micro_batch": micro_batch, "error": str(e).splitlines()[0]})
        gc.collect()  # outside the except block: the failed attempt's frames are gone now
        torch.cuda.empty_cache()
        micro_batch //= 2
    return {**res, "oom_at_micro_batch": ooms} if ooms else res


def training_items(run: Run) -> dict[str, Callable[[], dict]]:
    from lrnn_lm import LRNNConfig, LRNNForCausalLM

    def sizes(name: str) -> tuple[dict, int, int]:
        cfg = yaml.safe_load((Path("configs") / "train" / f"{name}.yaml").read_text())
        if run.rehearse:
            return _tiny(cfg["model"]), 2, 64
        return cfg["model"], cfg["train"]["micro_batch_size"], cfg["data"]["seq_len"]

    def ours(name: str) -> dict:
        model, mb, T = sizes(name)
        res = train_step(run, lambda: LRNNForCausalLM(LRNNConfig(**model)), mb, T, model["vocab_size"])
        return {"mixer": model["mixer"], "eigval_range": model["eigval_range"], **res}

    def fla_deltanet(name: str) -> dict:
        if not run.cuda:
            return {"status": "skipped: fla's DeltaNet runs Triton kernels that need CUDA"}
        from fla.models import DeltaNetConfig, DeltaNetForCausalLM

        model, mb, T = sizes(name)
        keys = ("hidden_size", "num_hidden_layers", "num_heads", "intermediate_size", "vocab_size")
        same = {k: model[k] for k in keys} | {"allow_neg_eigval": model["eigval_range"] == "[-1,1]"}
        defaults = {"use_short_conv": True, "tie_word_embeddings": False}  # where our config leaves them out
        config = DeltaNetConfig(**same, **{k: model.get(k, v) for k, v in defaults.items()}, hidden_ratio=None)
        res = train_step(run, lambda: DeltaNetForCausalLM(config), mb, T, config.vocab_size)
        return {"peer": "fla DeltaNetForCausalLM", "allow_neg_eigval": config.allow_neg_eigval, **res}

    def hf_mamba(name: str, two: bool) -> dict:
        from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

        missing = [m for m in ("mamba_ssm", "causal_conv1d") if importlib.util.find_spec(m) is None]
        if run.cuda and missing:
            return {"status": f"skipped: {' and '.join(missing)} not importable: transformers would run its slow path"}
        model, mb, T = sizes(name)
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "state_size", "expand")
        common = {k: model[k] for k in keys} | {"tie_word_embeddings": model.get("tie_word_embeddings", True)}
        if two:
            heads = model["expand"] * model["hidden_size"] // model["ssd_head_dim"]
            config = Mamba2Config(**common, num_heads=heads, head_dim=model["ssd_head_dim"], n_groups=1)
        else:
            config = MambaConfig(**common, use_mambapy=False)
        cls = Mamba2ForCausalLM if two else MambaForCausalLM
        res = train_step(run, lambda: cls(config), mb, T, config.vocab_size)
        return {"peer": cls.__name__, **res}

    items = {name: lambda name=name: ours(name) for name in TRAIN_CONFIGS}
    for r in ("neg", "pos"):
        items[f"peer/fla_deltanet_340m_{r}"] = lambda r=r: fla_deltanet(f"deltanet_340m_{r}")
    items["peer/transformers_mamba_370m"] = lambda: hf_mamba("mamba_370m_pos", two=False)
    items["peer/transformers_mamba2_370m"] = lambda: hf_mamba("mamba2_370m_pos", two=True)
    return items


def e2e_items(run: Run, work: Path) -> dict[str, Callable[[], dict]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's tests/: the train.py test helpers
    from tests.training_utils import data_args, losses, make_corpus, run_train

    steps = 5 if run.rehearse else 100
    state: dict = {}

    def data() -> dict:
        n_train, n_val, vocab = (36, 4, 300) if run.rehearse else (72, 7, 4096)  # 79 documentation topics in all
        state["corpus"] = make_corpus(work, n_train, n_val, vocab)
        return {"train_bytes": state["corpus"]["train"].stat().st_size, "tokenizer_vocab": vocab}

    def train() -> dict:
        model = dict(TINY_E2E_MODEL if run.rehearse else E2E_MODEL, mixer="deltanet", eigval_range="[-1,1]")
        out = work / "run"
        sizes = {  # option: (rehearsal, GPU)
            "data.seq_len": (64, 512),
            "train.micro_batch_size": (4, 16),
            "train.precision": ("auto", "bf16"),
            "optim.lr": (3e-3, 1e-3),
            "optim.warmup_steps": (1, 10),
            "train.log_every": (1, 5),
        }
        args = [f"--out_dir={out}", "--overwrite=delete", "--model=" + json.dumps(model), *data_args(state["corpus"])]
        args += [f"--{k}={v[0] if run.rehearse else v[1]}" for k, v in sizes.items()]
        args += [f"--train.max_steps={steps}", f"--train.eval_every={steps}", "--train.eval_batches=2"]
        args += [f"--checkpoint.every={max(1, steps // 2)}", "--logging.progress=false"]
        args += ["--train.threads=1"] if run.rehearse else []
        r = run_train(args, env={"TRITON_INTERPRET": "0"}, timeout=max(run.deadline - time.time(), 10))
        (work / "train.log").write_text(r.stdout + "\n--- stderr\n" + r.stderr)
        if r.returncode != 0:
            return {"status": f"failed: train.py exited {r.returncode}", "stderr_tail": r.stderr[-2000:]}
        curve = sorted(losses(out / "metrics.jsonl").items())
        summary = json.loads((out / "summary.json").read_text())
        state["final"] = out / "final"
        res = {"losses": curve, "summary": summary, "loss_falling": curve[-1][1] < curve[0][1]}
        if not (res["loss_falling"] and summary.get("step") == steps):
            res["status"] = f"failed: loss {curve[0][1]:.3f} -> {curve[-1][1]:.3f} in {summary.get('step')} steps"
        return res

    def checkpoint() -> dict:
        from lrnn_lm.training import checkpoint as ckpt

        verified = [ckpt.verify(p) for p in ckpt.list_checkpoints(work / "run" / "checkpoints")]
        return {"checkpoints_verified_steps": verified, **({} if verified else {"status": "failed: no checkpoint"})}

    def generate() -> dict:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = torch.bfloat16 if run.cuda else torch.float32
        model = AutoModelForCausalLM.from_pretrained(state["final"], dtype=dtype).to(run.device).eval()
        tok = AutoTokenizer.from_pretrained(state["final"])
        ids = tok("The Python language reference says that", return_tensors="pt").input_ids.to(run.device)
        with torch.no_grad():
            new = model.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1] :]
        res = {"new_tokens": int(new.numel()), "text": tok.decode(new), "model_class": type(model).__name__}
        return res if new.numel() else {**res, "status": "failed: generate produced no tokens"}

    def after(key: str, fn: Callable[[], dict]) -> Callable[[], dict]:
        return lambda: fn() if key in state else {"status": "skipped: the step before it did not finish"}

    return {
        "data_and_tokenizer": data,
        "train_py": after("corpus", train),
        "checkpoint": after("final", checkpoint),
        "from_pretrained_generate": after("final", generate),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for timing.json")
    p.add_argument("--work", type=Path, default=None, help="scratch folder for the e2e run (default: OUT/work)")
    p.add_argument("--budget-s", type=float, default=300.0, help="no item starts after this many seconds")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per kernel measurement (median reported)")
    p.add_argument("--rehearse", action="store_true", help="CPU, tiny shapes, chunk backend: the code paths only")
    args = p.parse_args(argv)
    if not args.rehearse and not torch.cuda.is_available():
        print("gpu_timing: no CUDA device; nothing was timed (--rehearse runs the code paths on CPU)", file=sys.stderr)
        return 2
    if unknown := set(args.sections.split(",")) - set(SECTIONS):
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    run = Run(args.out, args.rehearse, args.budget_s, args.repeats)
    run.report["environment"] = environment()
    builders = {
        "kernels": lambda: {op: lambda op=op: time_op(run, op) for op in kernels.ops()},
        "training": lambda: training_items(run),
        "e2e": lambda: e2e_items(run, args.work or args.out / "work"),
    }
    for section in (s for s in SECTIONS if s in args.sections.split(",")):  # in this order
        for name, fn in builders[section]().items():
            run.item(section, name, fn)
    failed = [
        f"{s}/{n}" for s, items in run.report["sections"].items() for n, i in items.items() if "failed" in i["status"]
    ]
    print(f"gpu_timing: wrote {args.out / 'timing.json'}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
