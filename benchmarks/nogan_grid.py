"""A picture for the docs: rows of (input, each model, truth) crops from a folder of clean images.

Each image is degraded as `decrappify evaluate` degrades it (the task's preset, `rng_for(seed, relative path)`),
restored by every model, and cropped where the truth is most detailed (`evaluate.choose_crop`); the input is
enlarged with nearest neighbour. Usage (from the repository root):

    python benchmarks/nogan_grid.py ../shared/data/bsds500/val --task restore-x4 --count 5 \
        --model feature=runs/restore-x4-gan/generator/model.safetensors \
        --model GAN=runs/restore-x4-gan/model.safetensors --out docs/nogan-grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from decrappify.data import degrade
from decrappify.evaluation import metrics
from decrappify.evaluation.evaluate import choose_crop
from decrappify.evaluation.methods import split_label, to_uint8
from decrappify.inference.restorer import Restorer
from decrappify.io.images import picture_to_pil, read_image
from decrappify.io.listing import images_in_folder

LABEL_HEIGHT = 18


def row(
    path: Path, relative: str, task: str, restorers: list[Restorer], crop: int, seed: int
) -> list[np.ndarray]:
    """Input, every model's output and the truth, cropped to the same `crop`-pixel region (uint8)."""
    pipeline = degrade.create_preset(task)
    scale = int(pipeline.scale)
    picture = read_image(path)
    clean = degrade.modcrop(picture_to_pil(picture), scale)
    lq = np.asarray(pipeline(clean, degrade.rng_for(seed, relative)).image.convert("RGB"), np.float32) / 255.0
    hq = metrics.modcrop_array(picture.rgb, scale)
    left, top, right, bottom = choose_crop(hq, [], scale, size=crop)
    outputs = [np.repeat(np.repeat(to_uint8(lq), scale, axis=0), scale, axis=1)]
    outputs += [to_uint8(r.restore_array(lq)) for r in restorers] + [to_uint8(hq)]
    return [out[top:bottom, left:right] for out in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="folder of clean images")
    parser.add_argument("--task", default="restore-x4")
    parser.add_argument("--model", action="append", required=True, metavar="[LABEL=]PATH")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels, restorers = ["input"], []
    for spec in args.model:
        label, path = split_label(spec)
        labels.append(label or Path(path).stem)
        restorers.append(Restorer.from_pretrained(path, device="cpu"))
    labels.append("truth")
    rows = [
        row(p, rel, args.task, restorers, args.crop, args.seed)
        for p, rel in images_in_folder(args.data)[: args.count]
    ]
    side = args.crop
    grid = Image.new("RGB", (side * len(labels), LABEL_HEIGHT + side * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for column, label in enumerate(labels):
        draw.text((column * side + 4, 3), label, fill="black")
    for r, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            grid.paste(Image.fromarray(tile), (column * side, LABEL_HEIGHT + r * side))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out}: {len(rows)} rows x {labels}")


if __name__ == "__main__":
    main()
