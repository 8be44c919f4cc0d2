"""The state-transition eigenvalues a model actually uses on text, per layer.

- Mamba: the diagonal gates ``a_t`` (``[d_inner, N]`` per token), in (0, 1] or (-1, 1].
- DeltaNet: the transition ``I - beta_t k_t k_t^T`` has one eigenvalue ``1 - beta_t`` along the unit key ``k_t``
  (``1 - beta_t ||k_t||^2`` without L2-normalised keys) and ``head_dim - 1`` eigenvalues equal to 1. Only the
  ``k_t`` direction is counted, one value per head and token; the others are 1 by construction.

Statistics are exact over every counted value (streamed, not subsampled); padded positions are skipped.
Layers without state transitions (attention) are skipped: their entry says so (``"skipped"``, count 0).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..layers import MIXERS

BINS = 40  # over [-1, 1]: bins of width 0.05
NEAR_MINUS_ONE = -0.9  # "near -1" means below this


def eigenvalue_descriptions() -> dict[str, str]:
    """What the spectrum counts for each registered mixer with state transitions."""
    return {name: cls.eigenvalues_are for name, cls in MIXERS.items() if cls.eigenvalues_are is not None}


class LayerSpectrum:
    """Streaming histogram and summary statistics of one layer's eigenvalues."""

    def __init__(self, layer: int, mixer: str) -> None:
        self.layer, self.mixer = layer, mixer
        self.counts = torch.zeros(BINS, dtype=torch.float64)
        self.n = self.negative = self.near_minus_one = 0
        self.total = 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, values: torch.Tensor) -> None:
        values = values.detach().float().flatten()
        if values.numel() == 0:
            return
        self.counts += torch.histc(values, bins=BINS, min=-1.0, max=1.0).double().cpu()
        self.n += values.numel()
        self.negative += int((values < 0).sum())
        self.near_minus_one += int((values < NEAR_MINUS_ONE).sum())
        self.total += float(values.double().sum())
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))

    def summary(self) -> dict:
        n = max(self.n, 1)
        if MIXERS[self.mixer].eigenvalues_are is None:
            return {
                "layer": self.layer,
                "mixer": self.mixer,
                "what": None,
                "skipped": f"{self.mixer} has no state transitions",
                "count": 0,
                "frac_negative": None,
                "frac_near_minus_one": None,
                "min": None,
                "max": None,
                "mean": None,
                "hist": {"edges": torch.linspace(-1, 1, BINS + 1).tolist(), "counts": [0.0] * BINS},
            }
        return {
            "layer": self.layer,
            "mixer": self.mixer,
            "what": MIXERS[self.mixer].eigenvalues_are,
            "count": self.n,
            "frac_negative": self.negative / n,
            "frac_near_minus_one": self.near_minus_one / n,
            "min": self.min if self.n else None,
            "max": self.max if self.n else None,
            "mean": self.total / n if self.n else None,
            "hist": {"edges": torch.linspace(-1, 1, BINS + 1).tolist(), "counts": self.counts.tolist()},
        }


def text_documents(path: str | Path | None) -> list[str]:
    """Documents of a ``.jsonl`` file (field ``text``) or one plain-text file; None: the built-in corpus's
    validation split (built and cached on first use)."""
    if path is None:
        from ..training.corpus import build_corpus

        _, path = build_corpus()
    path = Path(path)
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    return [path.read_text(encoding="utf-8")]


def token_windows(tokenizer, documents: list[str], max_tokens: int, seq_len: int) -> list[list[int]]:
    """Each document cut into windows of at most ``seq_len`` tokens, until ``max_tokens`` tokens in all."""
    windows, used = [], 0
    for doc in documents:
        ids = tokenizer.encode(doc, add_special_tokens=False)
        for start in range(0, len(ids), seq_len):
            window = ids[start : start + seq_len][: max_tokens - used]
            if window:
                windows.append(window)
                used += len(window)
            if used >= max_tokens:
                return windows
    return windows


@torch.no_grad()
def collect_spectrum(model, windows: list[list[int]], batch_size: int = 8, pad_id: int = 0) -> list[dict]:
    """Per-layer eigenvalue statistics of ``model`` (an ``LRNNForCausalLM``) over the token ``windows``."""
    device = next(model.parameters()).device
    layers = model.model.layers
    # Layers count from 1, as in the probes (where layer 0 is the embeddings).
    spectra = [LayerSpectrum(i + 1, layer.mixer_type) for i, layer in enumerate(layers)]
    lengths: list[int] = []

    def make_hook(acc: LayerSpectrum):
        def hook(module, args, kwargs, output):
            values = module.transition_eigenvalues(args[0], kwargs.get("mask"), kwargs.get("cu_seqlens"))
            for row, n in enumerate(lengths):
                acc.add(values[row, :n])

        return hook

    handles = []
    for layer, acc in zip(layers, spectra):
        if layer.mixer.eigenvalues_are is None:
            print(f"spectrum: layer {acc.layer} ({acc.mixer}) has no state transitions; skipped")
            continue
        handles.append(layer.mixer.register_forward_hook(make_hook(acc), with_kwargs=True))
    try:
        for start in tqdm(range(0, len(windows), batch_size), desc="spectrum", leave=False):
            batch = windows[start : start + batch_size]
            lengths[:] = [len(w) for w in batch]
            # Right padding, no attention mask: the model is causal, so the padded tail never changes the
            # real positions, and those tails are left out of the statistics.
            ids = torch.full((len(batch), max(lengths)), pad_id, dtype=torch.long)
            for row, w in enumerate(batch):
                ids[row, : len(w)] = torch.tensor(w)
            model(ids.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [acc.summary() for acc in spectra]
