"""Deepen a trained compact U-Net without changing what it computes, to train on from where it stopped.

    python tools/deepen_model.py runs/sr-x4/best.safetensors --blocks 4 2 2 -o runs/sr-x4-deep/init.safetensors
    decrappify train --config configs/sr-x4.toml ... model.blocks='[4, 2, 2]' \
        init.weights='"runs/sr-x4-deep/init.safetensors"'

Why: a model that has stopped improving (validation flat over the last third of its one-cycle run) has run out
of capacity, not of steps; training a bigger one from scratch throws away the CPU hours already spent. Here
every existing weight is copied, and each new residual block is appended to its stack with its last convolution
set to zero, so the block starts as the identity ``x + 0`` and the deeper model's output equals the original's
exactly (Net2DeeperNet, Chen et al. 2016). The first convolution of a new block keeps its random init, so the
zero convolution gets a gradient from the first step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from decrappify.errors import DecrappifyError
from decrappify.nn.models import create_model
from decrappify.weights import load_into, load_model, save_model


def deepen(source: Path, blocks: list[int], out: Path, seed: int = 0) -> Path:
    """Write ``source`` with ``blocks`` residual blocks per level to ``out``; output identical to the source."""
    model, config, info = load_model(source)
    if config.get("arch") != "compact":
        raise SystemExit(f"{source}: only compact U-Nets can be deepened (arch {config.get('arch')!r})")
    old = list(config.get("blocks", (3, 2, 2)))
    if len(blocks) != len(old) or any(new < was for new, was in zip(blocks, old, strict=True)):
        raise SystemExit(f"--blocks {blocks} must have {len(old)} entries, each at least the current {old}")
    grown_config = {**config, "blocks": list(blocks)}
    torch.manual_seed(seed)
    grown = create_model(grown_config)
    state = grown.state_dict()
    state.update(model.state_dict())  # old blocks keep their positions (enc0.0, enc0.1, ...) and weights
    for key in list(state):
        stack, index, *rest = key.split(".") + ["", ""]
        if stack in ("enc0", "dec0", "enc1", "dec1", "middle") and index.isdigit():
            level = {"enc0": 0, "dec0": 0, "enc1": 1, "dec1": 1, "middle": 2}[stack]
            if int(index) >= old[level] and rest[0] == "conv2":
                state[key] = torch.zeros_like(state[key])
    load_into(grown, state, what=str(source))
    info = {**info, "deepened_from": str(source), "deepened_blocks": f"{old} -> {list(blocks)}"}
    return save_model(grown, out, grown_config, info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a compact U-Net model file")
    parser.add_argument(
        "--blocks", type=int, nargs=3, required=True, help="new blocks per level (LR, /2, /4)"
    )
    parser.add_argument("-o", "--out", type=Path, required=True, help="where to write the deeper model")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out}: already exists; choose another path (nothing was overwritten)")
    try:
        path = deepen(args.model, args.blocks, args.out)
    except DecrappifyError as exc:
        raise SystemExit(str(exc)) from exc
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
