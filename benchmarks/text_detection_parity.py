"""Does our run of PP-OCRv4's detector agree with rapidocr's own pipeline on the watermark-box share?

Usage (from the repository root; rapidocr's code needs pyclipper, shapely and pyyaml, which decrappify does not,
so put them in a side folder rather than the project's environment):

    pip install --target /tmp/rapidx pyclipper shapely pyyaml six
    PYTHONPATH_APPEND=/tmp/rapidx python benchmarks/text_detection_parity.py --limit 25

For each BSD100 photo degraded with the restore-x4 preset (seed 0, as `evaluate`), the share of watermark boxes
with text is computed on the degraded input, its bicubic enlargement and the truth, by
`decrappify.evaluation.text_detection` and by `rapidocr_onnxruntime.RapidOCR` (detection only, default settings,
BGR input), counting a detection for a box the same way. Prints the agreement and the means.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from decrappify.data import degrade
from decrappify.evaluation import text_detection
from decrappify.evaluation.methods import Bicubic
from decrappify.io.listing import images_in_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data/bsds500/val")
    parser.add_argument("--limit", type=int, default=25)
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONPATH_APPEND"):
        sys.path.append(os.environ["PYTHONPATH_APPEND"])  # appended: the project's numpy stays first
    from rapidocr_onnxruntime import RapidOCR

    ocr = RapidOCR()

    def theirs(rgb: np.ndarray, boxes) -> float:
        bgr = np.ascontiguousarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)[..., ::-1])
        quads, _ = ocr(bgr, use_det=True, use_cls=False, use_rec=False)
        found = [tuple(np.r_[np.min(q, 0), np.max(q, 0)]) for q in map(np.asarray, quads or [])]
        return sum(any(text_detection._mostly_inside(d, box) for d in found) for box in boxes) / len(boxes)

    pipeline = degrade.create_preset("restore-x4")
    rows = {"input": [], "bicubic": [], "truth": []}
    for path, relative in images_in_folder(args.data)[: args.limit]:
        clean = degrade.modcrop(Image.open(path).convert("RGB"), 4)
        degraded = pipeline(clean, degrade.rng_for(0, relative))
        lq = np.asarray(degraded.image.convert("RGB"), dtype=np.float32) / 255.0
        pictures = {
            "input": (lq, degraded.boxes),
            "bicubic": (Bicubic(4)(lq), degraded.clean_boxes()),
            "truth": (np.asarray(clean, dtype=np.float32) / 255.0, degraded.clean_boxes()),
        }
        for name, (rgb, boxes) in pictures.items():
            rows[name].append((text_detection.share_of_boxes_with_text(rgb, boxes), theirs(rgb, boxes)))
    pairs = [pair for values in rows.values() for pair in values]
    print(f"agree on {sum(a == b for a, b in pairs)} of {len(pairs)} pictures")
    print("| picture | ours | rapidocr |\n| --- | --- | --- |")
    for name, values in rows.items():
        ours, rapid = np.mean(values, axis=0)
        print(f"| {name} | {ours:.2f} | {rapid:.2f} |")


if __name__ == "__main__":
    main()
