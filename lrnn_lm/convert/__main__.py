"""``python -m lrnn_lm.convert SRC DST [--eigval-range "[-1,1]"]``: convert a transformers checkpoint folder."""

from __future__ import annotations

import argparse

from transformers import AutoTokenizer

from . import convert_model, load_source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lrnn_lm.convert", description=__doc__)
    parser.add_argument("src", help="a local transformers checkpoint folder (Mamba, Mamba-2, Llama)")
    parser.add_argument("dst", help="output folder for the LRNNForCausalLM checkpoint")
    parser.add_argument(
        "--eigval-range",
        default="[0,1]",
        choices=["[0,1]", "[-1,1]"],
        help="[0,1] keeps the source's function; [-1,1] maps each gate a to 2a - 1 (a different function, "
        "for fine-tuning into the signed range)",
    )
    args = parser.parse_args(argv)
    hf_model = load_source(args.src)
    model = convert_model(hf_model, eigval_range=args.eigval_range)
    model.save_pretrained(args.dst)
    try:
        AutoTokenizer.from_pretrained(args.src).save_pretrained(args.dst)
    except (OSError, ValueError) as err:
        print(f"no tokenizer copied ({err.__class__.__name__}: {err})")
    print(f"wrote {args.dst}: {model.config.layer_mixers[0]} x {model.config.num_hidden_layers}, {args.eigval_range}")


if __name__ == "__main__":
    main()
