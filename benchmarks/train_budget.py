"""Train a recipe for a fixed wall-clock budget, then score it on BSD100 against bicubic.

    python benchmarks/train_budget.py --minutes 30 --config configs/sr-x4.toml [KEY=VALUE ...]

Trains with `train.time_budget_minutes` on ../shared/data/bsds500/{train,test} (8 of those photos held out for the
per-epoch validation), then runs `decrappify.evaluation.evaluate` on ../shared/data/bsds500/val (BSD100: never
trained on) with the recipe's preset, and prints training throughput (crops/s) and PSNR_Y / SSIM_Y of the final model vs
bicubic. The bar for sr-x4 after 30 minutes on the 2-core CPU: >= 27.16 dB PSNR_Y (bicubic + 1.2 dB).

`--bare-seconds N` then runs a minimal training loop (same model, batch and crop size: in-memory images, random
crop, Pillow bicubic downscale, L1, AdamW, cosine LR; no validation, logging or checkpoints) for N seconds with
all cores and N seconds with one thread, and prints its crops/s, so the trainer's overhead can be read off under
the same machine load (the trainer picks its thread count by timing: see src/decrappify/train/threads.py).
Paths default to ../shared relative to the repository root (data, and the VGG16 file a feature-loss recipe needs
when it names none: `--vgg-weights`); the run folder to runs/bench-<name>.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from decrappify.data.pairs import ImageStore, keyed_images
from decrappify.nn.models import create_model
from decrappify.train.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "bsds500"
SHARED_VGG16 = ROOT.parent / "shared" / "weights" / "vgg16_hed_bsds500.safetensors"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (wall clock)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "sr-x4.toml")
    parser.add_argument("--data", type=Path, nargs="+", default=[SHARED / "train", SHARED / "test"])
    parser.add_argument("--eval", type=Path, default=SHARED / "val", help="evaluation folder (BSD100)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/bench-<config name>; replaced)")
    parser.add_argument("--bare-seconds", type=float, default=0.0, help="then time a bare loop this long")
    parser.add_argument("--no-eval", action="store_true", help="skip the BSD100 evaluation")
    parser.add_argument(
        "--vgg-weights",
        type=Path,
        default=SHARED_VGG16,
        help="VGG16 for a feature-loss recipe whose loss.vgg_weights is empty (default: ../shared/weights/...)",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return parser.parse_args(argv)


def training_speed(run_dir: Path, batch: int) -> tuple[float, float]:
    """(crops per second, training seconds) from the run's steps.csv (one stage; the first window left out)."""
    crops = seconds = 0.0
    with (run_dir / "steps.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    last_step = int(rows[0]["step"]) if len(rows) > 1 else 0  # the first window holds the slow first steps
    for row in rows[1:] if len(rows) > 1 else rows:
        window = (int(row["step"]) - last_step) * batch
        last_step = int(row["step"])
        if float(row["crops_per_s"]) > 0:
            crops += window
            seconds += window / float(row["crops_per_s"])
    return (crops / seconds if seconds else 0.0), seconds


def run_training(config: Config, run_dir: Path) -> tuple[Path, float, float]:
    from decrappify.train import train

    started = time.perf_counter()
    result = train(config, run_dir=run_dir, command="benchmarks/train_budget.py " + " ".join(sys.argv[1:]))
    wall = time.perf_counter() - started
    crops_per_s, _ = training_speed(run_dir, config.stages[0].batch)
    print(
        f"trained {result.state.step} steps in {result.state.elapsed:.0f} s (wall {wall:.0f} s incl. set-up); "
        f"{crops_per_s:.1f} crops/s ({config.stages[0].crop}px, batch {config.stages[0].batch})"
    )
    return result.model_path, crops_per_s, wall


def bare_loop(config: Config, folders: list[Path], seconds: float) -> float:
    """crops/s of the plainest loop that trains the same model on the same kind of batches."""
    stage = config.stages[0]
    scale, crop, batch = config.scale, stage.crop, stage.batch
    store = ImageStore([path for path, _ in keyed_images(folders)])
    torch.manual_seed(config.seed)
    model = create_model(config.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=0.0)
    rng = np.random.default_rng(0)
    done, timed_crops, started = 0, 0, None
    horizon = 10_000
    while True:
        lqs, hqs = [], []
        for _ in range(batch):
            image = store[int(rng.integers(len(store)))]
            top, left = (
                int(rng.integers(image.shape[0] - crop + 1)),
                int(rng.integers(image.shape[1] - crop + 1)),
            )
            patch = Image.fromarray(image[top : top + crop, left : left + crop])
            lqs.append(np.asarray(patch.resize((crop // scale, crop // scale), Image.Resampling.BICUBIC)))
            hqs.append(np.asarray(patch))
        lq = torch.from_numpy(np.stack(lqs)).permute(0, 3, 1, 2).float().div_(255)
        hq = torch.from_numpy(np.stack(hqs)).permute(0, 3, 1, 2).float().div_(255)
        for group in optimizer.param_groups:
            group["lr"] = config.optim.lr * 0.5 * (1 + math.cos(math.pi * min(done / horizon, 1.0)))
        loss = F.l1_loss(model(lq), hq)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += 1
        if done == 3:  # the first steps allocate: not timed
            started = time.perf_counter()
        elif started is not None:
            timed_crops += batch
            if time.perf_counter() - started >= seconds:
                return timed_crops / (time.perf_counter() - started)


def faster_thread_count(model_path: Path) -> int:
    """All cores or 1 for inference, whichever runs a BSD100-sized input faster now (see train/threads.py)."""
    from decrappify.weights import load_model

    model = load_model(model_path)[0]
    lq = torch.rand(1, 3, 80, 120)
    timings = {}
    for threads in sorted({torch.get_num_threads(), 1}):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            model(lq)
            started = time.perf_counter()
            for _ in range(3):
                model(lq)
        timings[threads] = time.perf_counter() - started
    return min(timings, key=timings.get)


def evaluate_model(model_path: Path, eval_dir: Path, task: str) -> dict:
    from decrappify.evaluation.evaluate import evaluate

    result = evaluate(eval_dir, task, [str(model_path)], progress=True, keep_crops=False, perceptual=False)
    return {s.method: s for s in result.summaries()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = [*args.overrides, f"train.time_budget_minutes={args.minutes}"]
    config = load_config(args.config, overrides)
    folders = [str(p.resolve()) for p in args.data]
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, paths=tuple(folders)))
    if config.loss.kind == "feature" and not config.loss.vgg_weights:
        loss = dataclasses.replace(config.loss, vgg_weights=str(args.vgg_weights))
        config = dataclasses.replace(config, loss=loss)
    run_dir = args.out or ROOT / "runs" / f"bench-{config.name}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    model_path, crops_per_s, wall = run_training(config, run_dir)
    report = {
        "config": str(args.config),
        "minutes": args.minutes,
        "trainer_crops_per_s": round(crops_per_s, 2),
        "wall_s": round(wall, 1),
        "model": str(model_path),
    }
    if args.bare_seconds > 0:
        for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
            torch.set_num_threads(threads)
            bare = bare_loop(config, args.data, args.bare_seconds)
            report[f"bare_loop_{threads}_threads_crops_per_s"] = round(bare, 2)
            print(f"bare loop, {threads} thread(s): {bare:.1f} crops/s (trainer {crops_per_s:.1f})")
    if not args.no_eval:
        torch.set_num_threads(faster_thread_count(model_path))
        scores = evaluate_model(model_path, args.eval, config.data.preset)
        for name, summary in scores.items():
            print(
                f"{args.eval.name:>8} {name:>24}: PSNR_Y {summary.psnr_y:.2f} dB, SSIM_Y {summary.ssim_y:.4f}"
            )
        model = next(s for n, s in scores.items() if n not in ("bicubic", "input"))
        base = scores.get("bicubic") or scores.get("input")
        report.update(
            psnr_y=round(model.psnr_y, 3),
            ssim_y=round(model.ssim_y, 4),
            baseline_psnr_y=round(base.psnr_y, 3),
            gain_db=round(model.psnr_y - base.psnr_y, 3),
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
