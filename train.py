"""Pretrain an LRNNForCausalLM with Accelerate (one CPU, one GPU, many GPUs or many nodes).

    accelerate launch train.py                                   # the offline default run (configs/train/default.yaml)
    accelerate launch train.py --config configs/train/deltanet_340m_neg.yaml --optim.lr=1e-3
    python train.py --train.max_steps=20                         # single process works too
    accelerate launch train.py --config ... --resume auto        # continue from the newest complete checkpoint

Every key of the YAML can be overridden with --key.sub=value. Unknown keys stop the run before any work.
A fresh run refuses an out_dir that is not empty: continue it (--resume auto), pick a new --out_dir, or pass
--overwrite=move (the old run is renamed aside) or --overwrite=delete. A resume refuses a changed config; the
fields that may change, and --allow_changed=[...] for the others, are in docs/reliability.md.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from lrnn_lm import LRNNConfig, LRNNForCausalLM, param_groups
from lrnn_lm.training import checkpoint as ckpt
from lrnn_lm.training import fingerprint, resume
from lrnn_lm.training.batches import build_data, default_sources
from lrnn_lm.training.config import ConfigError, RunConfig, load_config, read_yaml
from lrnn_lm.training.data import DataError
from lrnn_lm.training.evaluate import evaluate, evaluate_lengths, unigram_baseline
from lrnn_lm.training.export import save_final
from lrnn_lm.training.loss import causal_lm_loss
from lrnn_lm.training.run_dir import MetricsLog, RunDirError, last_evaluation
from lrnn_lm.training.run_lock import lock_out_dir
from lrnn_lm.training.runtime import LaunchError, NonFiniteError, StopFlag, make_accelerator, mfu, nonfinite_groups
from lrnn_lm.training.schedule import lr_at

logger = logging.getLogger("train")
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "train" / "default.yaml"
REFUSALS = (ConfigError, DataError, RunDirError, resume.ResumeError, ckpt.CheckpointError, NonFiniteError, LaunchError)


def build_model(cfg: RunConfig, vocab_size: int, special: dict) -> LRNNForCausalLM:
    if isinstance(cfg.model, str):
        config = LRNNConfig.from_json_file(cfg.model)
    else:
        config = LRNNConfig(**{"vocab_size": vocab_size, **special, **cfg.model})
    if config.vocab_size < vocab_size:
        raise ConfigError(
            f"model.vocab_size={config.vocab_size} is smaller than the tokenizer's vocabulary ({vocab_size}); leave "
            "it out (it follows the tokenizer) or make it at least that"
        )
    model = LRNNForCausalLM(config)
    if cfg.train.activation_checkpointing == "blocks":
        # Non-reentrant: works with inputs that need no gradient and with FSDP; each LRNNBlock is a
        # GradientCheckpointingLayer, so every block's forward is recomputed in the backward.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model


def batch_plan(cfg: RunConfig, world: int, row_len: int) -> int:
    """Micro-batches per optimizer step, from ``train.tokens_per_step`` (None: no accumulation)."""
    per_micro = cfg.train.micro_batch_size * row_len * world
    if cfg.train.tokens_per_step is None:
        return 1
    if cfg.train.tokens_per_step % per_micro:
        raise ConfigError(
            f"train.tokens_per_step={cfg.train.tokens_per_step} must be a multiple of micro_batch_size * seq_len * "
            f"processes = {per_micro}"
        )
    return cfg.train.tokens_per_step // per_micro


def validate_all(model, data, accelerator) -> dict:
    """Loss and accuracy on the validation batches, and for a task its accuracy on the validation stream at
    lengths past training (``data.task.val_lengths``, the "val" split: the stream recipes are chosen on)."""
    record = evaluate(model, data.validation, accelerator) if data.validation else {}
    if data.long_validation:
        task = data.task
        record |= evaluate_lengths(model, data.long_validation, accelerator, task.answer_ids, task.chance)
        per_length = ", ".join(f"{n}: {record[f'long_val_scaled_acc_{n}']:.3f}" for n in data.long_validation)
        logger.info("long validation, scaled accuracy per length: %s", per_length)
    return record


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + f"\n\nDefaults and every key: {DEFAULT_CONFIG}")
        raise SystemExit(0)
    cfg = load_config(argv, base=read_yaml(DEFAULT_CONFIG.read_text(), str(DEFAULT_CONFIG)))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.out_dir)
    accelerator = make_accelerator(cfg.train.precision, cfg.logging.trackers, str(out))
    rank, world, main_proc = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process

    # The run folder before any work: one process (group) per folder for the life of the run, a fresh run never
    # writes into a used one, a resume only continues its own run, from a verified checkpoint whose config may
    # differ only where allowed.
    lock = lock_out_dir(out, accelerator)  # held until this process ends (or returns, below)
    start = resume.plan_start(out, cfg.resume, cfg.overwrite)
    default_sources(cfg)
    changes = {}
    if start.checkpoint is not None:
        changes = resume.check_resume(start.checkpoint, cfg.to_dict(), world, cfg.allow_changed)
    resume.prepare_out_dir(out, start, accelerator)
    set_seed(cfg.train.seed)

    # Data (text or task, one interface), model, optimizer; no-decay groups follow the parameter tags.
    data = build_data(cfg, rank, world, accelerator)
    accum = batch_plan(cfg, world, data.row_len)
    if data.task is not None:
        data.train.micro_batches_per_step = accum  # a length curriculum counts optimizer steps
    # What the run reads, by content; a resume refuses data or tokenizer files changed under the same paths.
    run_config = {**cfg.to_dict(), fingerprint.KEY: fingerprint.run_fingerprints(cfg, data.tokenizer)}
    input_changes = {}
    if start.checkpoint is not None:
        input_changes = resume.check_inputs(start.checkpoint, run_config[fingerprint.KEY], cfg.allow_changed)
    model = build_model(cfg, data.vocab_size, data.special)
    groups = param_groups(model.named_parameters(), model.no_weight_decay(), cfg.optim.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    n_params = sum(p.numel() for p in model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)

    counters, exact = resume.Counters(), True
    if start.checkpoint is not None:
        counters, exact = resume.load(accelerator, start.checkpoint, data.train, cfg.resume_inexact)
        exact = exact and not input_changes  # other data or tokens under the same position
        changes |= input_changes
    log = MetricsLog(out, accelerator)
    log.start(counters.step, cfg.to_dict(), cfg.logging.project)
    if start.checkpoint is not None:
        event = {"step": counters.step, "event": "resume", "from": str(start.checkpoint), "exact": exact}
        log({**event, "changed": {k: list(v) for k, v in changes.items()}})
    # A resumed run reports the baseline and the last validation so far until it evaluates again.
    unigram, last_val = last_evaluation(out) if counters.step > 0 else (None, {})
    if data.tokenizer is not None and data.validation and main_proc and counters.step == 0:
        args = (data.sources, data.tokenizer, cfg.data.seq_len, cfg.train.seed, data.validation, data.vocab_size)
        unigram = unigram_baseline(*args)
        log({"step": 0, "unigram_val_loss": unigram})

    # ------------------------------------------------------------------------- loop
    stop = StopFlag()
    start_time = time.time()

    def train_seconds() -> float:
        """Wall time of training over every process of this run (a resumed run counts the time before it too)."""
        return counters.train_seconds + time.time() - start_time

    streak, bad_groups = 0, []  # streak: consecutive non-finite steps
    progress = tqdm(total=cfg.train.max_steps, initial=counters.step, disable=not (main_proc and cfg.logging.progress))
    model.train()
    while counters.step < cfg.train.max_steps:
        t0 = time.time()
        lr = lr_at(counters.step, max_steps=cfg.train.max_steps, **cfg.optim.schedule_args())
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss, step_tokens = 0.0, 0
        for micro in range(accum):
            batch = data.train.next_batch()
            # Tokens processed: padding (task batches are right-padded) does not count.
            mask = batch.pop("attention_mask", None)
            step_tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.no_sync(model) if micro < accum - 1 else nullcontext():
                if cfg.train.loss_head == "chunked":  # no [tokens, vocab] logits kept for the backward
                    loss = model(
                        **batch, use_cache=False, loss_without_logits=True, label_smoothing=cfg.train.label_smoothing
                    ).loss
                elif cfg.train.label_smoothing:  # the model's plain loss has no smoothing; score its logits here
                    labels = batch.pop("labels")
                    loss = causal_lm_loss(model(**batch, use_cache=False).logits, labels, cfg.train.label_smoothing)
                else:
                    loss = model(**batch, use_cache=False).loss
                accelerator.backward(loss / accum)
            step_loss += loss.detach().float() / accum
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
        loss_value = float(accelerator.reduce(step_loss.reshape(1), "mean"))
        finite = math.isfinite(loss_value) and bool(torch.isfinite(torch.as_tensor(grad_norm)))
        counters.step += 1  # from here on: the number of the step just taken, as in the log and metrics.jsonl
        step = counters.step
        if finite:
            optimizer.step()
            streak = 0
        else:
            bad_groups = nonfinite_groups(optimizer)
            counters.skipped_nonfinite += 1
            streak += 1
            logger.warning("step %d: non-finite loss/grad (groups %s); step skipped", step, bad_groups)
        optimizer.zero_grad(set_to_none=True)
        global_tokens = step_tokens * world
        counters.tokens_seen += global_tokens
        dt = time.time() - t0
        progress.update(1)
        postfix = {"loss": f"{loss_value:.3f}", "lr": f"{lr:.2e}", "tok_s": f"{global_tokens / dt:.0f}"}
        if last_val and "long_val_scaled_acc" in last_val:
            postfix["long_val"] = f"{last_val['long_val_scaled_acc']:.3f}"  # scaled accuracy, mean over val_lengths
        progress.set_postfix(**postfix)
        if step % cfg.train.log_every == 0 or step == 1 or not finite:
            rec = {"step": step, "tokens": counters.tokens_seen, "loss": loss_value, "lr": lr}
            rec |= {"grad_norm": float(grad_norm), "tokens_per_s": global_tokens / dt}
            rec |= {"skipped_nonfinite": counters.skipped_nonfinite}
            if (m := mfu(global_tokens / dt, n_params)) is not None:
                rec["mfu"] = m
            log(rec)
        if streak >= cfg.train.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"stopping: {streak} consecutive non-finite steps, the last at step {step}; non-finite gradients "
                f"in parameter groups {bad_groups or ['(loss only)']}. No checkpoint was saved during the streak, "
                "so the newest one is from before it: lower optim.lr (or check the data) and continue with "
                "--resume auto --allow_changed=[optim.lr]."
            )
        elapsed = train_seconds()
        timed_out = cfg.train.max_minutes is not None and elapsed > 60 * cfg.train.max_minutes
        last_step = step == cfg.train.max_steps or timed_out or bool(stop)
        if (data.validation or data.long_validation) and (step % cfg.train.eval_every == 0 or last_step):
            last_val = validate_all(model, data, accelerator)
            log({"step": step, "tokens": counters.tokens_seen, **last_val})
        if step % cfg.checkpoint.every == 0 or last_step:
            if streak:
                # Skipped steps leave weights and optimizer unchanged, but a checkpoint here would push a
                # healthy one out under keep_last; the newest checkpoint stays the last healthy one.
                logger.warning("step %d is non-finite: no checkpoint saved", step)
            else:
                state = {**counters.__dict__, "train_seconds": elapsed, "data": data.train.state_dict()}
                keep = cfg.checkpoint.keep_last
                ckpt.save(accelerator, out / "checkpoints", step, state, start.run_id, run_config, keep)
        if stop or timed_out:
            why = f"signal {stop.signal}" if stop else f"train.max_minutes={cfg.train.max_minutes}"
            logger.info("stopping at step %d (%s)", step, why)
            break
    progress.close()

    summary = {"step": counters.step, "tokens": counters.tokens_seen, "minutes": train_seconds() / 60}
    summary |= {"params": n_params, "unigram_val_loss": unigram, **(last_val or {})}
    summary = save_final(accelerator, model, out, data, cfg.data.task, summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # also destroys the process group
    if world > 1:
        # Everything is written. Leave without tearing down: freeing the DDP reducer (when this frame ends)
        # destroys gloo's process group while holding the GIL, and gloo joins a worker thread that may be
        # waiting for the GIL, an intermittent hang at exit seen with torch 2.13.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if lock is not None:
        lock.release()
    return summary


def cli() -> int:
    """``main`` for the command line: a refused run prints its reason (no traceback) and exits with status 2."""
    try:
        main()
    except REFUSALS as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not ckpt.disk_full(e):
            raise
        print(f"train.py: error: disk full: {e}. Free space, then continue with --resume auto.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
