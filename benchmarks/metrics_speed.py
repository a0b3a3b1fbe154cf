"""How long scoring one picture takes: PSNR_Y and SSIM_Y on a BSD100-sized image (481 x 321), per image.

    python benchmarks/metrics_speed.py [--repeats 5]

`evaluate` scores every method on every image, so this cost is paid (methods x images) times a run; it should
stay well under the models' own time (under 0.2 s per image keeps BSD100 scoring under 20 s per method).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from decrappify.evaluation.metrics import psnr_y, ssim_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    hq = rng.random((321, 481, 3))
    pred = np.clip(hq + rng.normal(0, 0.05, hq.shape), 0, 1)
    psnr_y(pred, hq, 4), ssim_y(pred, hq, 4)  # warm-up: first-call costs are not per image
    start = time.perf_counter()
    for _ in range(args.repeats):
        psnr_y(pred, hq, 4)
        ssim_y(pred, hq, 4)
    per_image = (time.perf_counter() - start) / args.repeats
    print(f"PSNR_Y + SSIM_Y on 481x321: {per_image * 1000:.1f} ms per image ({args.repeats} repeats)")


if __name__ == "__main__":
    main()
