"""The end of a run: ``final/`` (an HF checkpoint with weights, config and tokenizer) and ``summary.json``."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from accelerate.utils import gather_object

logger = logging.getLogger(__name__)


def save_final(accelerator, model, out: Path, data, task_cfg, summary: dict) -> dict:
    """Write ``out/final`` and ``out/summary.json``; returns the summary (with per-process weight hashes)."""
    from ..tasks.tokenizer import task_tokenizer

    final = out / "final"
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(
        final,
        is_main_process=accelerator.is_main_process,
        save_function=accelerator.save,
        state_dict=accelerator.get_state_dict(model),
    )
    if accelerator.distributed_type.value != "FSDP":
        # Replicas must hold identical weights; a mismatch means the processes trained separately.
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in unwrapped.parameters()))
        summary["param_sha256_per_rank"] = gather_object([digest.hexdigest()])
    if accelerator.is_main_process:
        if data.tokenizer is not None:
            data.tokenizer.save_pretrained(final)
        else:
            # Task runs feed token ids directly; a word-level tokenizer over the task vocabulary (one id per
            # token, same ids) makes the checkpoint usable by lm-eval and by text-based probes.
            task_tokenizer(data.task).save_pretrained(final)
            (final / "task.json").write_text(json.dumps({"task": task_cfg.name, **task_cfg.options}))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        logger.info("done: %s", json.dumps(summary))
    return summary
