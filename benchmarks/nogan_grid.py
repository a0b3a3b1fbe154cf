"""A picture for the docs: rows of (input, each model, truth) crops from a folder of clean images.

Each image is degraded as `decrappify evaluate` degrades it (the task's preset, `rng_for(seed, relative path)`),
restored by every model, and cropped where the truth is most detailed (`evaluate.choose_crop`); the input is
enlarged with nearest neighbour. Usage (from the repository root):

    python benchmarks/nogan_grid.py ../shared/data/bsds500/val --task restore-x4 --zoom 2 \
        --image 8023 --image 253027 --image 102061 --image 189080 --image 21077 \
        --model L1=restore-x4 --model GAN=restore-x4-gan --model Real-ESRGAN=realesrgan-x4plus --out docs/nogan-grid.png

`--model` takes what `decrappify restore --model` takes (a shipped name, a file, realesrgan-x4plus); each runs as
its model file says (its self-ensemble, `--precision auto`).
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


def zoom(tile: np.ndarray, times: int) -> np.ndarray:
    """`tile` enlarged `times` times with nearest neighbour: every output pixel stays visible as it is."""
    return np.repeat(np.repeat(tile, times, axis=0), times, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="folder of clean images")
    parser.add_argument("--task", default="restore-x4")
    parser.add_argument("--model", action="append", required=True, metavar="[LABEL=]PATH")
    parser.add_argument("--count", type=int, default=5, help="the first N images (without --image)")
    parser.add_argument("--image", action="append", default=[], help="an image's file stem; repeatable")
    parser.add_argument("--zoom", type=int, default=1, help="enlarge every crop this many times (nearest)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels, restorers = ["input"], []
    for spec in args.model:
        label, path = split_label(spec)
        labels.append(label or Path(path).stem)
        restorers.append(Restorer.from_pretrained(path, device="cpu", precision="auto"))
    labels.append("truth")
    found = images_in_folder(args.data)
    chosen = [item for stem in args.image for item in found if item[0].stem == stem] or found[: args.count]
    rows = [
        [zoom(tile, args.zoom) for tile in row(p, rel, args.task, restorers, args.crop, args.seed)]
        for p, rel in chosen
    ]
    side = args.crop * args.zoom
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
