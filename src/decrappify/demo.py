"""The one-command demo: restore scikit-image's bundled sample photos and show the result as a web page.

It is `evaluate` run on pictures every installation already has (scikit-image ships them), so the demo needs no
download and shows exactly what `decrappify evaluate` would measure: degraded input, bicubic baseline, our model
(once a shipped model is installed) and the truth, with PSNR/SSIM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decrappify.evaluate import EvaluationResult, evaluate, write_report
from decrappify.imageio import Picture, write_image

log = logging.getLogger(__name__)

# Colour photos bundled inside scikit-image (no network needed): name -> loader attribute of skimage.data.
SAMPLE_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket")


@dataclass(frozen=True)
class DemoResult:
    result: EvaluationResult
    page: Path


def write_sample_photos(folder: Path) -> list[Path]:
    """Save the bundled sample photos as PNG files (the clean 'truth' images) and return their paths."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLE_PHOTOS:
        rgb = getattr(skimage.data, name)().astype(np.float32) / 255.0
        picture = Picture(rgb=rgb, alpha=None, bit_depth=8, grayscale=False, icc_profile=None, exif=None,
                          source_format=None)
        paths.append(write_image(picture, folder / f"{name}.png", overwrite=True))
    return paths


def run_demo(out_dir: Path, *, task: str = "restore-x4", models: list[str] | None = None) -> DemoResult:
    """Degrade the sample photos with the task's preset, restore them with each method, and write `index.html`."""
    truth_dir = out_dir / "scikit-image-samples"
    write_sample_photos(truth_dir)
    result = evaluate(truth_dir, task, methods=["bicubic", *(models or [])])
    page = write_report(result, out_dir)
    log.info("demo page written to %s", page)
    return DemoResult(result=result, page=page)
