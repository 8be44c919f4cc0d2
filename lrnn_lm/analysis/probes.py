"""Linear probes: is the running state of a state-tracking task linearly readable from a frozen model?

Each layer's hidden state (``output_hidden_states``: the embeddings, then every layer's output) at the last
token of each element is fed to a logistic-regression readout. It is trained on short sequences and tested
on held-out short sequences and on positions beyond the training lengths in long sequences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..layers import MIXERS
from .probe_data import ProbeSequence, label_meaning, probe_sequences


@dataclass
class ProbeSettings:
    train_seqs: int = 256
    eval_seqs: int = 128
    min_len: int = 4
    max_len: int = 16
    long_len: int = 64
    batch_size: int = 32
    l2: float = 1e-4
    seed: int = 0


@dataclass
class LinearProbe:
    """Multinomial logistic regression on centred features divided by one global scale (no per-feature
    scaling: a feature constant in training but not at test would otherwise be blown up)."""

    mean: torch.Tensor
    scale: float
    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (((x - self.mean) / self.scale) @ self.weight + self.bias).argmax(-1)


def fit_linear_probe(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-4, max_iter: int = 200
) -> LinearProbe:
    """Full-batch L-BFGS on cross-entropy + ``l2 * ||W||^2``; ``x: [n, d]`` float, ``y: [n]`` class ids, both on
    the device to fit on."""
    x = x.float()
    mean = x.mean(0)
    scale = float((x - mean).pow(2).mean().sqrt().clamp_min(1e-8))
    z = (x - mean) / scale
    weight = torch.zeros(x.shape[1], num_classes, device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(mean, scale, weight.detach(), bias.detach())


def accuracy(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor) -> float | None:
    device = probe.weight.device
    return float((probe.predict(x.to(device).float()) == y.to(device)).float().mean()) if len(y) else None


def encode_pieces(tokenizer, pieces: list[str], cache: dict) -> tuple[list[int], list[int]]:
    """Token ids of ``" ".join(pieces)`` built piece by piece, and the index of the last token of each piece.

    Byte-level BPE and whitespace word-level tokenizers split at spaces first, so this equals tokenizing the
    joined string while telling exactly which token ends each element.
    """
    ids, ends = [], []
    for i, piece in enumerate(pieces):
        text = piece if i == 0 else " " + piece
        if text not in cache:
            cache[text] = tokenizer.encode(text, add_special_tokens=False)
            if not cache[text]:
                raise ValueError(f"tokenizer maps {text!r} to no tokens")
        ids += cache[text]
        ends.append(len(ids) - 1)
    return ids, ends


@torch.no_grad()
def layer_features(
    model, tokenizer, sequences: list[ProbeSequence], batch_size: int, min_piece: int = 0, desc: str = "features"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x: [num_layers + 1, n, d] float32 on CPU, y: [n])`` at every labelled element with index >= ``min_piece``."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cache: dict = {}
    encoded = [encode_pieces(tokenizer, s.pieces, cache) for s in sequences]
    feats, labels = [], []
    for start in tqdm(range(0, len(sequences), batch_size), desc=desc, leave=False):
        rows = range(start, min(start + batch_size, len(sequences)))
        width = max(len(encoded[r][0]) for r in rows)
        # Right padding needs no attention mask: the model is causal, so padding after a token never changes
        # its hidden state.
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(encoded[r][0])] = torch.tensor(encoded[r][0])
        hidden = model(ids.to(device), output_hidden_states=True, use_cache=False).hidden_states
        hidden = torch.stack(hidden).float().cpu()  # [L + 1, batch, T, d]
        for i, r in enumerate(rows):
            keep = [(end, y) for j, (end, y) in enumerate(zip(encoded[r][1], sequences[r].labels)) if j >= min_piece]
            keep = [(end, y) for end, y in keep if y is not None]
            if keep:
                feats.append(hidden[:, i, [end for end, _ in keep]])
                labels += [y for _, y in keep]
    d = model.config.hidden_size
    x = torch.cat(feats, dim=1) if feats else torch.zeros(model.config.num_hidden_layers + 1, 0, d)
    return x, torch.tensor(labels, dtype=torch.long)


def run_linear_probe(model, tokenizer, name: str, settings: ProbeSettings) -> dict:
    """Per-layer probe accuracy for task ``name``: on the training data, held-out short sequences, and
    positions past ``settings.max_len`` in sequences of length ``settings.long_len``."""
    s = settings
    task, train = probe_sequences(name, s.train_seqs, s.min_len, s.max_len, "probe_train", s.seed)
    _, short = probe_sequences(name, s.eval_seqs, s.min_len, s.max_len, "probe_short", s.seed)
    _, long = probe_sequences(name, s.eval_seqs, s.long_len, s.long_len, "probe_long", s.seed)
    x_train, y_train = layer_features(model, tokenizer, train, s.batch_size, desc=f"{name} train")
    x_short, y_short = layer_features(model, tokenizer, short, s.batch_size, desc=f"{name} short")
    x_long, y_long = layer_features(model, tokenizer, long, s.batch_size, min_piece=s.max_len, desc=f"{name} long")
    if len(y_train) == 0:
        raise ValueError(f"probe {name!r}: no labelled positions in the training sequences")
    num_classes = len(task.answer_tokens)
    majority = int(torch.bincount(y_train, minlength=num_classes).argmax())
    layers = []
    device = next(model.parameters()).device  # fit where the model runs: a GPU fits big probes in seconds
    mixers = model.config.layer_mixers
    for layer in tqdm(range(x_train.shape[0]), desc=f"{name} probes", leave=False):
        mixer = mixers[layer - 1] if 0 < layer <= len(mixers) else None
        if mixer is not None and MIXERS[mixer].eigenvalues_are is None:
            # The probe asks whether a running state is readable; an attention layer has none of its own.
            print(f"probe {name}: layer {layer} ({mixer}) has no recurrent state; skipped")
            skipped = {"train": None, "short": None, "long": None, "skipped": f"{mixer} has no recurrent state"}
            layers.append({"layer": layer, "name": _layer_name(layer, x_train.shape[0] - 1), **skipped})
            continue
        probe = fit_linear_probe(x_train[layer].to(device), y_train.to(device), num_classes, l2=s.l2)
        layers.append(
            {
                "layer": layer,
                "name": _layer_name(layer, x_train.shape[0] - 1),
                "train": accuracy(probe, x_train[layer], y_train),
                "short": accuracy(probe, x_short[layer], y_short),
                "long": accuracy(probe, x_long[layer], y_long),
            }
        )
    return {
        "task": name,
        "target": label_meaning(task),
        "num_classes": num_classes,
        "chance": task.chance,
        "majority": {
            "short": float((y_short == majority).float().mean()) if len(y_short) else None,
            "long": float((y_long == majority).float().mean()) if len(y_long) else None,
        },
        "n": {"train": len(y_train), "short": len(y_short), "long": len(y_long)},
        "settings": asdict(s),
        "layers": layers,
    }


def _layer_name(layer: int, num_layers: int) -> str:
    if layer == 0:
        return "embeddings"
    # hidden_states[-1] is taken after the final RMSNorm, the input of the LM head.
    return f"layer {layer}" + (" (final norm)" if layer == num_layers else "")
