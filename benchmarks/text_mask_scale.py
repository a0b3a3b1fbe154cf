"""The text-mask model on photos larger than the ones it learned on: IoU, F1 and box recall per working side.

    python benchmarks/text_mask_scale.py SKIMAGE --seeds 0,1,2,3,4
    python benchmarks/text_mask_scale.py ../shared/data/bsds500/val --upscale 3

A watermark is drawn sized to its photo (the restore-x1 preset, as `evaluate --task text-mask` does), so on a big
photo its strokes are wide. Each row runs the model with one `working_side` (0: the photo's own size; N: photos
with a longer side are scaled down to N for the model, `decrappify.inference.text_mask`). `SKIMAGE` (the literal
word) takes scikit-image's bundled natural photos, which no model here trained or is judged on: the set the default
was chosen on. `--upscale K` first enlarges every photo K times (bicubic, into a temporary folder) to stand for
photos from a camera.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from decrappify.evaluation.segmentation import evaluate_text_mask
from decrappify.inference.text_mask import TextMasker
from decrappify.io.listing import images_in_folder

#: scikit-image's natural photos (its text, page and synthetic pictures left out).
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
                  "gravel.png", "hubble_deep_field.jpg", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
                  "moon.png")  # fmt: skip


def photo_folder(source: str, upscale: int, scratch: Path) -> Path:
    """The folder to evaluate: `source` itself, or links to scikit-image's photos, or enlarged copies."""
    if source == "SKIMAGE":
        import skimage

        data = Path(skimage.__file__).parent / "data"
        folder = scratch / "skimage"
        folder.mkdir()
        for name in SKIMAGE_PHOTOS:
            (folder / name).symlink_to(data / name)
    else:
        folder = Path(source)
    if upscale == 1:
        return folder
    enlarged = scratch / f"x{upscale}"
    enlarged.mkdir()
    for path, relative in images_in_folder(folder):
        image = Image.open(path).convert("RGB")
        size = (image.width * upscale, image.height * upscale)
        image.resize(size, Image.Resampling.BICUBIC).save(enlarged / (Path(relative).stem + ".png"))
    return enlarged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="clean photos, or SKIMAGE")
    parser.add_argument("--model", default="text-mask")
    parser.add_argument("--sides", default="0,400,512,640", help="working sides to compare (0: the photo's own)")
    parser.add_argument("--seeds", default="0", help="degradation seeds (the text drawn); scores are averaged")
    parser.add_argument("--upscale", type=int, default=1)
    args = parser.parse_args()
    sides = [int(side) for side in args.sides.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        folder = photo_folder(args.folder, args.upscale, Path(scratch))
        print(f"{args.model} on {args.folder} (x{args.upscale}), restore-x1 preset, seeds {args.seeds}\n")
        print("| working side | IoU | F1 | box recall |")
        print("| ---: | ---: | ---: | ---: |")
        for side in sides:
            masker = TextMasker.from_pretrained(args.model, precision="auto", working_side=side)
            scores = []
            for seed in seeds:
                summary = evaluate_text_mask(folder, [masker], seed=seed, keep_crops=False).summaries()[0]
                scores.append((summary.counts.iou, summary.counts.f1, summary.box_recall or 0.0))
            iou, f1, recall = np.mean(scores, axis=0)
            print(f"| {side or 'own size'} | {iou:.4f} | {f1:.4f} | {recall:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
