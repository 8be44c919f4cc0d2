"""Pretrain an LRNNForCausalLM with Accelerate (one CPU, one GPU, many GPUs or many nodes).

    accelerate launch train.py                                   # the offline default run (configs/train/default.yaml)
    accelerate launch train.py --config configs/train/deltanet_340m_neg.yaml --optim.lr=1e-3
    python train.py --train.max_steps=20                         # single process works too
    accelerate launch train.py --config ... --resume auto        # continue from the newest complete checkpoint

Every key of the YAML can be overridden with --key.sub=value. Unknown keys stop the run before any work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm

from lrnn_lm import LRNNConfig, LRNNForCausalLM, param_groups
from lrnn_lm.tasks.tokenizer import task_tokenizer
from lrnn_lm.training import checkpoint as ckpt
from lrnn_lm.training import run_dir
from lrnn_lm.training.config import ConfigError, RunConfig, SourceConfig, load_config
from lrnn_lm.training.corpus import build_corpus, build_tokenizer
from lrnn_lm.training.data import DataError, TextPacker, build_text_dataset, collate_rows, unigram_loss
from lrnn_lm.training.resume import ResumeError, check_resume, plan_start, prepare_out_dir, random_states_restored
from lrnn_lm.training.run_dir import RunDirError
from lrnn_lm.training.runtime import StopFlag, make_accelerator, mfu
from lrnn_lm.training.schedule import lr_at
from lrnn_lm.training.task_data import TaskBatches

logger = logging.getLogger("train")
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "train" / "default.yaml"


# ----------------------------------------------------------------------------- setup
def load_tokenizer(cfg: RunConfig):
    if cfg.tokenizer.name_or_path is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.tokenizer.name_or_path)
    else:
        train_file, _ = build_corpus()
        tok = build_tokenizer(train_file, cfg.tokenizer.vocab_size)
    if tok.eos_token_id is None:
        raise DataError(f"tokenizer {cfg.tokenizer.name_or_path!r} has no eos token; documents need a separator")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def build_model(cfg: RunConfig, vocab_size: int, special: dict) -> LRNNForCausalLM:
    if isinstance(cfg.model, str):
        config = LRNNConfig.from_json_file(cfg.model)
    else:
        kwargs = {"vocab_size": vocab_size, **special, **cfg.model}
        config = LRNNConfig(**kwargs)
    if config.vocab_size < vocab_size:
        raise ValueError(f"model.vocab_size={config.vocab_size} is smaller than the vocabulary ({vocab_size})")
    return LRNNForCausalLM(config)


def default_sources(cfg: RunConfig) -> None:
    """No sources and no task: train on the built-in corpus, validate on its held-out split."""
    if not cfg.data.sources and cfg.data.task is None:
        train_file, val_file = build_corpus()
        cfg.data.sources = [SourceConfig(path=str(train_file))]
        if not cfg.data.validation:
            cfg.data.validation = [SourceConfig(path=str(val_file))]


def batch_plan(cfg: RunConfig, world: int, rows_unit: int) -> int:
    """Micro-batches per optimizer step, from ``train.tokens_per_step`` (None: no accumulation)."""
    per_micro = cfg.train.micro_batch_size * rows_unit * world
    if cfg.train.tokens_per_step is None:
        return 1
    if cfg.train.tokens_per_step % per_micro:
        raise ValueError(
            f"train.tokens_per_step={cfg.train.tokens_per_step} must be a multiple of micro_batch_size * seq_len * "
            f"processes = {per_micro}"
        )
    return cfg.train.tokens_per_step // per_micro


class NonFiniteError(RuntimeError):
    """Too many non-finite steps in a row; the message names the step, the parameter groups and what to do."""


def nonfinite_groups(optimizer) -> list[str]:
    """Names of the parameter groups holding a NaN or Inf gradient."""
    bad = []
    for group in optimizer.param_groups:
        if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in group["params"]):
            bad.append(group.get("group", "?"))
    return bad


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + f"\n\nDefaults and every key: {DEFAULT_CONFIG}")
        raise SystemExit(0)
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg = load_config(argv, base=base)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.out_dir)
    accelerator = make_accelerator(cfg.train.precision, cfg.logging.trackers, str(out))
    rank, world, main_proc = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    # The out_dir first: a fresh run never writes into a used folder, a resume only into its own run.
    start = plan_start(out, cfg.resume, cfg.overwrite)
    prepare_out_dir(out, start, accelerator)
    set_seed(cfg.train.seed)
    default_sources(cfg)
    changes = {}
    if start.checkpoint is not None:  # refuse a changed run before any work
        changes = check_resume(start.checkpoint, cfg.to_dict(), world, cfg.allow_changed)

    # Data and vocabulary.
    if cfg.data.task is not None:
        train_data = TaskBatches(cfg.data.task, rank, world, cfg.train.micro_batch_size)
        vocab_size, special, tokenizer = train_data.task.vocab_size, {"pad_token_id": train_data.task.pad_id}, None
        val_batches = train_data.validation_batches(cfg.train.eval_batches)
        rows_unit = cfg.data.task.max_len
        next_batch = train_data.next_batch
    else:
        with accelerator.main_process_first():  # the main process builds caches (corpus, tokenizer) first
            tokenizer = load_tokenizer(cfg)
        vocab_size = len(tokenizer)
        special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        stream = build_text_dataset(cfg.data.sources, rank, world, cfg.train.seed, cfg.data.shuffle_buffer)
        train_data = TextPacker(
            stream, tokenizer, cfg.data.seq_len, name=", ".join(str(x.path) for x in cfg.data.sources)
        )
        reset = cfg.data.reset_state_at_doc_boundary
        mb = cfg.train.micro_batch_size

        def next_batch() -> dict:
            return collate_rows([train_data.next_row() for _ in range(mb)], reset)

        val_batches = []
        if cfg.data.validation:
            val_stream = build_text_dataset(cfg.data.validation, rank, world, cfg.train.seed, 0)
            val_packer = TextPacker(val_stream, tokenizer, cfg.data.seq_len)
            for _ in range(cfg.train.eval_batches):
                val_batches.append(collate_rows([val_packer.next_row() for _ in range(mb)], reset))
                if val_packer.stats.epochs_completed:
                    break  # the whole validation set fits in fewer batches
        rows_unit = cfg.data.seq_len
    accum = batch_plan(cfg, world, rows_unit)

    # Model and optimizer: no-decay groups follow the parameter tags.
    model = build_model(cfg, vocab_size, special)
    groups = param_groups(model.named_parameters(), model.no_weight_decay(), cfg.optim.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    n_params = sum(p.numel() for p in model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)

    # Resume: the checkpoint verified now, loaded once the model exists.
    ckpt_root = out / "checkpoints"
    step, tokens_seen, skipped_total = 0, 0, 0
    resume_from = start.checkpoint
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        exact = all(gather_object([random_states_restored(resume_from, rank)]))
        if not exact and not cfg.resume_inexact:
            raise ResumeError(
                f"{resume_from}: accelerate could not restore the random states, so this resume would not be exact. "
                "Pass --resume_inexact=true to continue anyway (recorded in metrics.jsonl)."
            )
        state = ckpt.load_json(resume_from, ckpt.trainer_state_name(rank))
        train_data.load_state_dict(state["data"])
        step, tokens_seen, skipped_total = state["step"], state["tokens_seen"], state["skipped_nonfinite"]
        logger.info("resumed from %s at step %d%s", resume_from, step, "" if exact else " (random states NOT restored)")

    metrics_file = out / run_dir.METRICS
    if main_proc:
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        run_dir.trim_metrics(out, step)
        accelerator.init_trackers(cfg.logging.project, config={"out_dir": cfg.out_dir})

    def log(record: dict) -> None:
        if main_proc:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    def evaluate() -> dict:
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64)
        count = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for batch in val_batches:
                batch = {k: v.to(accelerator.device) for k, v in batch.items() if k != "attention_mask"}
                out_ = model(**batch, use_cache=False)
                n = (batch["labels"][:, 1:] != -100).sum()
                loss_sum += out_.loss.double().cpu() * n.cpu()
                count += n.cpu()
                pred = out_.logits[:, :-1].argmax(-1)
                mask = batch["labels"][:, 1:] != -100
                correct += (pred[mask] == batch["labels"][:, 1:][mask]).sum().cpu()
        model.train()
        totals = accelerator.reduce(torch.stack([loss_sum, count, correct]).to(accelerator.device), "sum").cpu()
        return {"val_loss": float(totals[0] / totals[1]), "val_acc": float(totals[2] / totals[1])}

    def save_checkpoint() -> None:
        trainer_state = {
            "step": step,
            "tokens_seen": tokens_seen,
            "skipped_nonfinite": skipped_total,
            "data": train_data.state_dict(),
        }
        ckpt.save(accelerator, ckpt_root, step, trainer_state, start.run_id, cfg.to_dict(), cfg.checkpoint.keep_last)

    if resume_from is not None:
        event = {"step": step, "event": "resume", "from": str(resume_from), "exact": exact}
        log({**event, "changed": {k: list(v) for k, v in changes.items()}})

    # Unigram baseline for text runs: what a model that ignores context would score on the same val set.
    unigram = None
    if tokenizer is not None and val_batches and main_proc and step == 0:
        counts: Counter = Counter()
        for source in cfg.data.sources:
            probe = TextPacker(build_text_dataset([source], 0, 1, cfg.train.seed, 0), tokenizer, cfg.data.seq_len)
            while probe.stats.epochs_completed == 0 and probe.stats.tokens < 2_000_000:
                counts.update(probe.next_row().tokens)
        val_tokens = [t for b in val_batches for t in b["input_ids"].flatten().tolist()]
        unigram = unigram_loss(counts, val_tokens, vocab_size)
        log({"step": 0, "unigram_val_loss": unigram})

    # ------------------------------------------------------------------------- loop
    stop = StopFlag()
    start_time = time.time()
    consecutive_bad = 0
    progress = tqdm(total=cfg.train.max_steps, initial=step, disable=not (main_proc and cfg.logging.progress))
    last_val = None
    model.train()
    while step < cfg.train.max_steps:
        t0 = time.time()
        lr = lr_at(
            step,
            lr=cfg.optim.lr,
            min_lr=cfg.optim.min_lr,
            warmup_steps=cfg.optim.warmup_steps,
            max_steps=cfg.train.max_steps,
            schedule=cfg.optim.schedule,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss, step_tokens = 0.0, 0
        for micro in range(accum):
            batch = next_batch()
            # Tokens processed: padding (task batches are right-padded) does not count.
            step_tokens += (
                int(batch.pop("attention_mask").sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            )
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            sync = accelerator.no_sync(model) if micro < accum - 1 else nullcontext()
            with sync:
                loss = model(**batch, use_cache=False).loss
                accelerator.backward(loss / accum)
            step_loss += loss.detach().float() / accum
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
        loss_value = float(accelerator.reduce(step_loss.reshape(1), "mean"))
        finite = math.isfinite(loss_value) and bool(torch.isfinite(torch.as_tensor(grad_norm)))
        step += 1  # from here on, `step` is the number of the step just taken, as in the log and metrics.jsonl
        if finite:
            optimizer.step()
            consecutive_bad = 0
        else:
            bad_groups = nonfinite_groups(optimizer)
            skipped_total += 1
            consecutive_bad += 1
            logger.warning("step %d: non-finite loss/grad (groups %s); step skipped", step, bad_groups)
        optimizer.zero_grad(set_to_none=True)
        global_tokens = step_tokens * world
        tokens_seen += global_tokens
        dt = time.time() - t0
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", tok_s=f"{global_tokens / dt:.0f}")
        if step % cfg.train.log_every == 0 or step == 1 or not finite:
            rec = {
                "step": step,
                "tokens": tokens_seen,
                "loss": loss_value,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens_per_s": global_tokens / dt,
                "skipped_nonfinite": skipped_total,
            }
            if (m := mfu(global_tokens / dt, n_params)) is not None:
                rec["mfu"] = m
            log(rec)
        if consecutive_bad >= cfg.train.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"stopping: {consecutive_bad} consecutive non-finite steps, the last at step {step}; non-finite "
                f"gradients in parameter groups {bad_groups or ['(loss only)']}. No checkpoint was saved during the "
                f"streak, so the newest one is from before it: lower optim.lr (or check the data) and continue with "
                f"--resume auto --allow_changed=[optim.lr]."
            )
        timed_out = cfg.train.max_minutes is not None and time.time() - start_time > 60 * cfg.train.max_minutes
        if val_batches and (step % cfg.train.eval_every == 0 or step == cfg.train.max_steps or timed_out or stop):
            last_val = evaluate()
            log({"step": step, "tokens": tokens_seen, **last_val})
        if step % cfg.checkpoint.every == 0 or step == cfg.train.max_steps or timed_out or stop:
            if consecutive_bad:
                # Weights and optimizer state are unchanged by skipped steps, but a checkpoint here would push
                # a healthy one out under keep_last; the newest checkpoint stays the last healthy one.
                logger.warning("step %d is non-finite: no checkpoint saved", step)
            else:
                save_checkpoint()
        if stop or timed_out:
            why = f"signal {stop.signal}" if stop else f"train.max_minutes={cfg.train.max_minutes}"
            logger.info("stopping at step %d (%s)", step, why)
            break
    progress.close()

    # Final HF checkpoint: weights, config (with remote-code entry points) and tokenizer.
    final = out / "final"
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(
        final,
        is_main_process=main_proc,
        save_function=accelerator.save,
        state_dict=accelerator.get_state_dict(model),
    )
    summary = {
        "step": step,
        "tokens": tokens_seen,
        "minutes": (time.time() - start_time) / 60,
        "params": n_params,
        "unigram_val_loss": unigram,
        **(last_val or {}),
    }
    if accelerator.distributed_type.value != "FSDP":
        # Replicas must hold identical weights; a mismatch means the processes trained separately.
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in unwrapped.parameters()))
        summary["param_sha256_per_rank"] = gather_object([digest.hexdigest()])
    if main_proc:
        if tokenizer is not None:
            tokenizer.save_pretrained(final)
        else:
            # Task runs feed token ids directly; a word-level tokenizer over the task vocabulary (one id per
            # token, same ids) makes the checkpoint usable by lm-eval and by text-based probes.
            task_tokenizer(train_data.task).save_pretrained(final)
            (final / "task.json").write_text(json.dumps({"task": cfg.data.task.name, **cfg.data.task.options}))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        logger.info("done: %s", json.dumps(summary))
    accelerator.wait_for_everyone()
    accelerator.end_training()  # also destroys the process group
    if world > 1:
        # Everything is written. Leave without tearing down: freeing the DDP reducer (when this frame ends)
        # destroys gloo's process group while holding the GIL, and gloo joins a worker thread that may be
        # waiting for the GIL, an intermittent hang at exit seen with torch 2.13.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return summary


def cli() -> int:
    """``main`` for the command line: a refused run prints its reason (no traceback) and exits with status 2."""
    try:
        main()
    except (ConfigError, DataError, RunDirError, ResumeError, ckpt.CheckpointError, NonFiniteError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
