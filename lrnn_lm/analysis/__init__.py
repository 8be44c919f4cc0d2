"""Evaluation of trained checkpoints, driven by ``eval.py``.

- :mod:`.checkpoints` loads a checkpoint (bf16 on CUDA, fp32 on CPU) with its tokenizer;
- :mod:`.lm_harness` runs lm-eval tasks one at a time, so an unreachable dataset fails only its own task;
- :mod:`.probe_data` renders state-tracking sequences as text with a running-state label per element;
- :mod:`.probes` reads the running state out of frozen hidden states with a linear classifier per layer;
- :mod:`.spectrum` collects the transition eigenvalues a model uses on text, per layer;
- :mod:`.gate_stats` measures the forget gate ``alpha`` a gated model learned on a task, per head and length;
- :mod:`.report` writes the markdown tables and the spectrum figure;
- :mod:`.activation_memory` counts the bytes a training step saves for the backward (benchmarks/memory.py).
"""
