"""Make every saved checkpoint loadable with ``trust_remote_code=True`` and no prior ``import lrnn_lm``.

The checkpoint carries two tiny modules that import the installed ``lrnn_lm`` package, and ``config.json``
gets an ``auto_map`` pointing at them. Tools that only know the Auto classes (the ``lm_eval`` CLI, for one)
can then load the model.
"""

from __future__ import annotations

from pathlib import Path

AUTO_MAP = {
    "AutoConfig": "configuration_lrnn.LRNNConfig",
    "AutoModel": "modeling_lrnn.LRNNModel",
    "AutoModelForCausalLM": "modeling_lrnn.LRNNForCausalLM",
}

_HEADER = '"""Loads lrnn-lm from the installed package (pip install -r requirements.txt in the lrnn-lm repo)."""\n\n'
MODULES = {
    "configuration_lrnn.py": _HEADER + "from lrnn_lm.configuration_lrnn import LRNNConfig  # noqa: F401\n",
    "modeling_lrnn.py": _HEADER + "from lrnn_lm.modeling_lrnn import LRNNForCausalLM, LRNNModel  # noqa: F401\n",
}


def write_remote_code(save_directory: str | Path) -> None:
    """Write the two entry-point modules next to ``config.json``."""
    for name, text in MODULES.items():
        (Path(save_directory) / name).write_text(text)
