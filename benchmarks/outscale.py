"""--outscale below the model's scale: shrink the model's output (default) or the input (--shrink-first)?

    python benchmarks/outscale.py [--model restore-x4] [--images 6] [--scales 1.5 2 3] [--threads 1]

Each clean BSD100 photo (`--data`, the validation half of BSDS500) is degraded with the model's preset, exactly as
`evaluate` does (seed 0), then restored to `S` times the degraded input's size both ways: "output" runs the model
on the whole input and shrinks its x4 result with area averaging; "input first" shrinks the input by S / 4 and lets
the model's own output land at S. The truth is the clean photo shrunk to the same size (area averaging). Prints
PSNR_Y / SSIM_Y (border of `S` pixels) and the model's time per image (best of `--repeats`), and a Lanczos upscale
of the input as the floor. For docs/benchmarks/outscale.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from decrappify.data import degrade
from decrappify.evaluation.metrics import psnr_y, ssim_y
from decrappify.inference.outscale import resize_rgb, restore_array_at, scaled_size
from decrappify.inference.restorer import Restorer
from decrappify.io.images import picture_to_pil, read_image
from decrappify.io.listing import images_in_folder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "val"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="restore-x4")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    restorer = Restorer.from_pretrained(args.model, device="cpu", precision=args.precision)
    preset = degrade.create_preset(restorer.info.get("task", "restore-x4"))
    photos = images_in_folder(args.data)[: args.images]
    pairs = [_pair(path, relative, preset, restorer.scale) for path, relative in photos]
    restore_array_at(restorer, pairs[0][1][:32, :32], 2.0)  # warm-up
    threads = f"{args.threads} thread(s)"
    print(f"{args.model} (x{restorer.scale}, {restorer.precision}), {len(pairs)} BSD100 photos, {threads}")
    print("| outscale | method | PSNR_Y | SSIM_Y | model s / image |")
    print("| --- | --- | --- | --- | --- |")
    for scale in args.scales:
        rows = {"output (default)": False, "input first (--shrink-first)": True, "Lanczos of the input": None}
        for name, shrink_first in rows.items():
            scores, seconds = [], []
            for hq, lq in pairs:
                size = scaled_size(lq.shape[1], lq.shape[0], scale)
                truth = resize_rgb(hq, size)
                if shrink_first is None:
                    out, spent = resize_rgb(lq, size), 0.0
                else:
                    out, spent = _timed(restorer, lq, scale, shrink_first, args.repeats)
                out = np.rint(out * 255) / 255
                border = int(np.ceil(scale))
                scores.append((psnr_y(out, truth, border), ssim_y(out, truth, border)))
                seconds.append(spent)
            psnr, ssim = np.mean(scores, axis=0)
            time_text = f"{np.mean(seconds):.3f}" if shrink_first is not None else "-"
            print(f"| {scale:g} | {name} | {psnr:.2f} | {ssim:.4f} | {time_text} |")


def _pair(path: Path, relative: str, preset: degrade.Pipeline, scale: int) -> tuple[np.ndarray, np.ndarray]:
    clean = degrade.modcrop(picture_to_pil(read_image(path)), scale)
    lq = preset(clean, degrade.rng_for(0, relative)).image.convert("RGB")
    return np.asarray(clean, np.float32) / 255, np.asarray(lq, np.float32) / 255


def _timed(restorer: Restorer, lq: np.ndarray, scale: float, shrink_first: bool, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = restore_array_at(restorer, lq, scale, shrink_first=shrink_first)
        best = min(best, time.perf_counter() - start)
    return out, best


if __name__ == "__main__":
    main()
