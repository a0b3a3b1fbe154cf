"""Is model B really better than model A on a set, or is the difference noise? Per-image paired differences.

    python benchmarks/paired_compare.py ../shared/data/bsds500/val --task restore-x4 \
        --model feature=runs/restore-x4-gan/generator/model.safetensors \
        --model gan=runs/restore-x4-gan-v32/best.safetensors

Both models see the same degraded inputs (`decrappify.evaluation.evaluate`, seed 0). For PSNR_Y and the VGG distance it
prints the mean of B - A over the images, a 95 % bootstrap interval of that mean (10,000 resamples of the images)
and how many images B wins. A mean gap whose interval straddles 0 is not a measured difference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from decrappify.evaluation.evaluate import evaluate
from decrappify.evaluation.methods import split_label
from decrappify.evaluation.perceptual import PerceptualDistance

# The BSDS500-tuned VGG16 in the shared folder beside the checkout (the library never looks for it itself).
SHARED_VGG16 = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "vgg16_hed_bsds500.safetensors"


def bootstrap_interval(diffs: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of `diffs`, resampling the images with replacement."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (resamples, len(diffs)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="folder of clean images")
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", action="append", required=True, metavar="[LABEL=]PATH", help="A, then B")
    parser.add_argument(
        "--vgg-weights", type=Path, default=SHARED_VGG16, help=f"VGG16 for the VGG distance (default {SHARED_VGG16})"
    )
    args = parser.parse_args()
    if len(args.model) != 2:
        parser.error("give exactly two --model: A (the reference), then B")
    distance = PerceptualDistance.from_weights(args.vgg_weights)
    result = evaluate(args.data, args.task, args.model, keep_crops=False, progress=True, perceptual=distance)
    a, b = result.methods[-2:]
    labels = [split_label(m)[0] or m for m in args.model]
    print(f"{len(result.images)} images, B - A with B = {labels[1]}, A = {labels[0]}")
    for metric, better in (("psnr_y", "higher"), ("perceptual", "lower")):
        diffs = np.array([getattr(r.scores[b], metric) - getattr(r.scores[a], metric) for r in result.images])
        low, high = bootstrap_interval(diffs)
        wins = int((diffs > 0).sum() if better == "higher" else (diffs < 0).sum())
        print(f"{metric:>10}: mean {diffs.mean():+.4f} (95 % interval {low:+.4f} .. {high:+.4f}); "
              f"B better ({better}) on {wins} of {len(diffs)} images")  # fmt: skip


if __name__ == "__main__":
    main()
