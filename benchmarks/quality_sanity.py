"""Do NIQE and BRISQUE rank known degradations the right way? Mean scores over a folder (BSD100 by default).

Usage (from the repository root):

    python benchmarks/quality_sanity.py                          # ../shared/data/bsds500/val, every image
    python benchmarks/quality_sanity.py --data DIR --limit 20

Each clean image (cropped to a multiple of 4) is scored as it is, after JPEG q30 and q10 (Pillow, 4:2:0), after
Gaussian blur sigma 1 and 2 (Pillow), and after a Pillow BICUBIC x4 reduction and x4 enlargement. The bars:
truth < q30 < q10, truth < blur 1 < blur 2 and truth < bicubic x4, for both scores (lower is better). The
output is the markdown table in docs/benchmarks/quality-sanity.md.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from decrappify.evaluation.quality import brisque, niqe
from decrappify.io.listing import images_in_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _bicubic_x4(image: Image.Image) -> Image.Image:
    small = image.resize((image.width // 4, image.height // 4), Image.Resampling.BICUBIC)
    return small.resize(image.size, Image.Resampling.BICUBIC)


VARIANTS = {
    "truth": lambda image: image,
    "JPEG q30": lambda image: _jpeg(image, 30),
    "JPEG q10": lambda image: _jpeg(image, 10),
    "blur sigma 1": lambda image: image.filter(ImageFilter.GaussianBlur(1)),
    "blur sigma 2": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "bicubic x4": _bicubic_x4,
}
CHAINS = [("truth", "JPEG q30", "JPEG q10"), ("truth", "blur sigma 1", "blur sigma 2"), ("truth", "bicubic x4")]


def mean_scores(folder: Path, limit: int | None = None) -> dict[str, dict[str, float]]:
    """{variant: {"niqe": mean, "brisque": mean}} over the folder's images."""
    images = images_in_folder(folder)[:limit]
    scores = {name: {"niqe": [], "brisque": []} for name in VARIANTS}
    for path, _ in images:
        clean = Image.open(path).convert("RGB")
        clean = clean.crop((0, 0, clean.width // 4 * 4, clean.height // 4 * 4))
        for name, make in VARIANTS.items():
            rgb = np.asarray(make(clean), dtype=np.float32) / 255.0
            scores[name]["niqe"].append(niqe(rgb))
            scores[name]["brisque"].append(brisque(rgb))
    return {name: {k: float(np.mean(v)) for k, v in row.items()} for name, row in scores.items()}


def ranking_holds(means: dict[str, dict[str, float]], metric: str) -> bool:
    """Strictly worse (higher) along every chain."""
    return all(means[a][metric] < means[b][metric] for chain in CHAINS for a, b in zip(chain, chain[1:], strict=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data/bsds500/val")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args(argv)
    means = mean_scores(args.data, args.limit)
    count = len(images_in_folder(args.data)[: args.limit])
    print(f"{args.data.name}: {count} images, mean scores (lower is better)\n")
    print("| variant | NIQE | BRISQUE |\n| --- | --- | --- |")
    for name, row in means.items():
        print(f"| {name} | {row['niqe']:.3f} | {row['brisque']:.2f} |")
    for metric in ("niqe", "brisque"):
        print(f"\n{metric}: ranking {'holds' if ranking_holds(means, metric) else 'FAILS'}", end="")
    print()


if __name__ == "__main__":
    main()
