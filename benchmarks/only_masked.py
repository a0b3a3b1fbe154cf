"""Restoring only the watermark vs restoring the whole photo: PSNR_Y inside the text boxes, outside them, overall.

    python benchmarks/only_masked.py ../shared/data/bsds500/val --mask-model runs/text-mask/best.safetensors

Every clean photo gets the `watermark` preset (text drawn on it, nothing else; seed 0, the stream `evaluate` uses), so
the only damage is the text. Rows: the watermarked input; the plain restore-x1 model (`--model`); the same model
with `--only-masked` on the mask the text-mask model predicts (with `--mask-model`); and on the true mask (the
glyphs as drawn: the best a mask model could do). Outputs are rounded to 8 bits, as `evaluate` scores them.
"inside" is the mean PSNR_Y over the watermark boxes, "outside" the PSNR_Y of each photo's pixels outside its boxes
(averaged over photos), "overall" the mean PSNR_Y of whole photos; "kept" is the share of photos whose pixels
outside the dilated mask are exactly the input's (it must be 100 % for the --only-masked rows).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image

from decrappify.data.degrade import create_preset, rng_for
from decrappify.evaluation import metrics
from decrappify.inference.restorer import Restorer
from decrappify.inference.text_mask import DEFAULT_FEATHER, DEFAULT_GROW, TextMasker, blend_weights, restore_only_masked
from decrappify.io.images import Picture
from decrappify.io.listing import images_in_folder

PSNR_CAP = 100.0


def psnr_y_outside(pred: np.ndarray, hq: np.ndarray, boxes: list) -> float:
    """PSNR_Y over the pixels outside every box (range 255), capped at `PSNR_CAP`."""
    keep = np.ones(hq.shape[:2], dtype=bool)
    for left, top, right, bottom in boxes:
        keep[top:bottom, left:right] = False
    error = (metrics.rgb_to_y(pred)[keep] - metrics.rgb_to_y(hq)[keep]) ** 2
    mse = float(error.mean()) if error.size else 0.0
    return PSNR_CAP if mse == 0 else min(10 * math.log10(255.0**2 / mse), PSNR_CAP)


def to_8bit(rgb: np.ndarray) -> np.ndarray:
    return (np.rint(np.clip(rgb, 0, 1) * 255) / 255).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="folder of clean photos (BSD100: ../shared/data/bsds500/val)")
    parser.add_argument("--model", default="restore-x1", help="the same-size restoration model (restore-x1)")
    parser.add_argument("--mask-model", help="a text-mask model file or name (omitted: only the true mask's row)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="the first N photos only (0: all)")
    args = parser.parse_args()

    pipeline = create_preset("watermark")
    restorer = Restorer.from_pretrained(args.model, precision=args.precision)
    masker = TextMasker.from_pretrained(args.mask_model, precision=args.precision) if args.mask_model else None
    # name -> which mask it keeps the restoration inside (None: the whole photo; "" : no model at all)
    methods: dict[str, str | None] = {"input (watermarked)": "", f"{restorer.name} (whole photo)": None}
    if masker is not None:
        methods[f"{restorer.name} --only-masked ({masker.name})"] = "predicted"
    methods[f"{restorer.name} --only-masked (true mask)"] = "truth"

    scores = {name: {"inside": [], "outside": [], "overall": [], "kept": []} for name in methods}
    images = images_in_folder(args.data)[: args.limit or None]
    for path, relative in images:
        with Image.open(path) as image:
            clean = image.convert("RGB")
        degraded = pipeline(clean, rng_for(args.seed, relative))
        hq = np.asarray(clean, dtype=np.float32) / 255.0
        picture = Picture(rgb=np.asarray(degraded.image, dtype=np.float32) / 255.0)
        masks = {"truth": degraded.text_mask()}
        if masker is not None:
            masks["predicted"] = masker.predict(picture.rgb)
        for name, which in methods.items():
            if which == "":
                out = picture.rgb
            elif which is None:
                out = restorer.restore(picture).rgb
            else:
                mask = masks[which]
                out = restore_only_masked(restorer, picture, mask, grow=DEFAULT_GROW, feather=DEFAULT_FEATHER).rgb
            pred, row = to_8bit(out), scores[name]
            row["inside"] += [min(metrics.psnr_in_box(pred, hq, box), PSNR_CAP) for box in degraded.boxes]
            row["outside"].append(psnr_y_outside(pred, hq, degraded.boxes))
            row["overall"].append(min(metrics.psnr_y(pred, hq), PSNR_CAP))
            if which:
                outside = blend_weights(masks[which], grow=DEFAULT_GROW, feather=DEFAULT_FEATHER) == 0
                row["kept"].append(float(np.array_equal(pred[outside], picture.rgb[outside])))
    print(f"watermark preset on {Path(args.data).name}: {len(images)} photos, seed {args.seed}, PSNR_Y (dB)\n")
    print("| method | inside boxes | outside boxes | overall | outside dilated mask = input |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, row in scores.items():
        kept = f"{100 * np.mean(row['kept']):.0f} %" if row["kept"] else "-"
        print(f"| {name} | {np.mean(row['inside']):.2f} | {np.mean(row['outside']):.2f} | "
              f"{np.mean(row['overall']):.2f} | {kept} |")  # fmt: skip


if __name__ == "__main__":
    main()
