"""A Hugging Face tokenizer whose ids are exactly a task's token ids, for tools that need text (lm-eval)."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .base import PAD, Task


def task_tokenizer(task: Task) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``task.vocab`` splitting on whitespace (the format of :meth:`Task.render`).

    ``<pad>`` doubles as eos and unk so that no id outside the task vocabulary exists (a word outside the
    vocabulary encodes as ``<pad>``, id 0, which no task input contains).
    """
    word_level = models.WordLevel({t: i for i, t in enumerate(task.vocab)}, unk_token=PAD)
    backend = Tokenizer(word_level)
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=PAD)
