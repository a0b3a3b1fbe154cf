"""Give a trained compact U-Net another upsampling head, keeping its trained body, to fine-tune from.

    python tools/swap_head.py src/decrappify/models/restore-x4.safetensors --head resize \
        -o runs/restore-x4-resize/init.safetensors
    decrappify train --config configs/restore-x4-gan.toml ... init.weights='"runs/restore-x4-resize/init.safetensors"'

Why: the L1 models' ICNR pixel-shuffle head learns a 4-pixel checkerboard once the VGG feature loss trains it
(docs/nogan.md); the resize-convolution head does not. Every body weight is copied; the new head starts from its
own initialisation (its last convolution near zero, so the model starts near its bicubic base) and learns its
job in the first minutes of fine-tuning, while the body keeps what hours of L1 training taught it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from decrappify.errors import DecrappifyError
from decrappify.nn.models import create_model
from decrappify.nn.unet import COMPACT_HEADS
from decrappify.weights import load_into, load_model, save_model


def swap_head(source: Path, head: str, out: Path, seed: int = 0) -> Path:
    """Write ``source`` with a fresh ``head`` (one of ``COMPACT_HEADS``) and its body's weights to ``out``."""
    model, config, info = load_model(source)
    if config.get("arch") != "compact":
        raise SystemExit(f"{source}: only compact U-Nets have a swappable head (arch {config.get('arch')!r})")
    new_config = {**config, "head": head}
    torch.manual_seed(seed)
    target = create_model(new_config)
    state = target.state_dict()
    state.update({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
    load_into(target, state, what=str(source))
    info = {**info, "head_swapped_from": str(source), "head_swapped": f"{config.get('head', 'shuffle')} -> {head}"}
    return save_model(target, out, new_config, info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a compact U-Net model file")
    parser.add_argument("--head", choices=COMPACT_HEADS, required=True, help="the new upsampling head")
    parser.add_argument("-o", "--out", type=Path, required=True, help="where to write the new model")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out}: already exists; choose another path (nothing was overwritten)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = swap_head(args.model, args.head, args.out)
    except DecrappifyError as exc:
        raise SystemExit(str(exc)) from exc
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
