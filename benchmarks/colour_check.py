"""The colour check of `decrappify restore --model colorize`: colour photos against grey and toned versions.

    .venv/bin/python benchmarks/colour_check.py ../shared/data/bsds500/train ../shared/data/bsds500/test

Prints, per folder, `colour_spread` (decrappify.inference.colour_check) of every photo and of its grey, sepia
(the classic sepia matrix), warm- and cool-tinted and faded versions, the tinted ones also JPEG-compressed
(quality 75 and 30, 4:2:0 chroma), and how many of each a threshold refuses. docs/benchmarks/colorize-colour-check.md
holds the output.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from decrappify.inference.colour_check import COLOUR_PHOTO_SPREAD, colour_spread

SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
LUMA = np.array([0.299, 0.587, 0.114])
MONOCHROME = ("grey", "grey JPEG q75", "sepia", "sepia JPEG q75", "sepia JPEG q30", "warm tint JPEG q75",
              "cool tint")  # fmt: skip


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32) / 255


def versions(rgb: np.ndarray) -> dict[str, np.ndarray]:
    grey = np.repeat((rgb @ LUMA)[..., None], 3, axis=2)
    sepia = np.clip(rgb @ SEPIA.T, 0, 1)
    warm = np.clip(grey * np.array([1.0, 0.85, 0.65]), 0, 1)
    return {
        "colour": rgb,
        "colour faded to 30%": grey + 0.3 * (rgb - grey),
        "colour faded to 15%": grey + 0.15 * (rgb - grey),
        "grey": grey,
        "grey JPEG q75": _jpeg(grey, 75),
        "sepia": sepia,
        "sepia JPEG q75": _jpeg(sepia, 75),
        "sepia JPEG q30": _jpeg(sepia, 30),
        "warm tint JPEG q75": _jpeg(warm, 75),
        "cool tint": np.clip(grey * np.array([0.8, 0.9, 1.0]), 0, 1),
    }


def main(folders: list[str]) -> None:
    for folder in folders:
        files = sorted(Path(folder).glob("*.jpg"))
        scores: dict[str, list[float]] = {}
        for path in files:
            rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
            for name, version in versions(rgb).items():
                scores.setdefault(name, []).append(colour_spread(version))
        print(f"\n{len(files)} photos from {folder}\n")
        print("| version | min | 5th pct | median | 95th pct | max |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, values in scores.items():
            v = np.array(values)
            print(f"| {name} | {v.min():.1f} | {np.percentile(v, 5):.1f} | {np.median(v):.1f} | "
                  f"{np.percentile(v, 95):.1f} | {v.max():.1f} |")  # fmt: skip
        colour = np.array(scores["colour"])
        mono = np.concatenate([scores[name] for name in MONOCHROME])
        print()
        for threshold in (8, 10, COLOUR_PHOTO_SPREAD, 14, 16):
            print(f"- threshold {threshold:g}: colour photos refused {np.mean(colour > threshold):.1%}, grey and "
                  f"toned versions refused {np.mean(mono > threshold):.1%}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:] or ["../shared/data/bsds500/train"])
