"""Training throughput in fp32 and in bf16 autocast, with the L1 loss and with the feature loss: crops per second.

    python benchmarks/train_speed.py --model sr-x4 --threads 2

One optimiser step is what `Trainer` does (`decrappify.train.trainer`): the generator's forward pass and the
loss under `decrappify.inference.precision.autocast`, the backward pass, gradient clipping, AdamW. The model is
the shipped model's architecture (random weights: speed does not depend on them); the batches are random
pictures of the recipe's sizes (L1: 16 crops of 128 px, the sr-x4 recipe; feature loss: 8 crops of 96 px, the
restore-x4 feature-loss recipe), so data loading is not timed. fp32 and bf16 steps alternate, so a machine that
gets busier slows both alike. Prints a markdown table with the bf16 / fp32 ratio per loss.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from decrappify.allocator import keep_freed_memory
from decrappify.inference.precision import autocast
from decrappify.inference.zoo import resolve_model
from decrappify.io.model_metadata import read_model_metadata
from decrappify.nn.models import create_model
from decrappify.train.losses import PixelLoss, create_feature_loss

SHARED_VGG16 = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "vgg16_hed_bsds500.safetensors"
#: loss -> (batch, high-resolution crop side)
SETTINGS = {"l1": (16, 128), "feature": (8, 96)}


def _step(model, loss_fn, optimizer, lq, hq, precision: str) -> None:
    with autocast(precision, lq.device):
        pred = model(lq)
        loss = loss_fn(pred.float(), hq)
    loss = loss[0] if isinstance(loss, tuple) else loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def measure(model_config: dict, loss_name: str, vgg: str, steps: int, warmup: int) -> dict[str, float]:
    """Median crops/s per precision for one loss; the two precisions take turns step by step."""
    batch, side = SETTINGS[loss_name]
    scale = int(model_config.get("scale", 1))
    generator = torch.Generator().manual_seed(0)
    hq = torch.rand(batch, 3, side, side, generator=generator).contiguous(memory_format=torch.channels_last)
    lq = F.interpolate(hq, scale_factor=1 / scale, mode="area") if scale > 1 else hq
    lq = lq.contiguous(memory_format=torch.channels_last)
    loss_fn = PixelLoss("l1") if loss_name == "l1" else create_feature_loss(vgg)
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_model(model_config).to(memory_format=torch.channels_last).train()
        runs[precision] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(warmup + steps):
        for precision, (model, optimizer) in runs.items():
            start = time.perf_counter()
            _step(model, loss_fn, optimizer, lq, hq, precision)
            if i >= warmup:
                times[precision].append(time.perf_counter() - start)
    return {precision: batch / statistics.median(samples) for precision, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sr-x4", help="shipped model or model file whose architecture to train")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision and loss")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vgg-weights", default=str(SHARED_VGG16), help="VGG16 for the feature loss")
    parser.add_argument("--system-malloc", action="store_true",
                        help="keep glibc's malloc defaults (training tunes them: decrappify.allocator)")  # fmt: skip
    args = parser.parse_args()
    if not args.system_malloc:
        keep_freed_memory()  # as `decrappify.train.train` does
    torch.set_num_threads(args.threads)
    config, _ = read_model_metadata(resolve_model(args.model))
    malloc = "glibc's malloc defaults" if args.system_malloc else "malloc tuned as in training"
    print(f"{args.model} architecture, {args.threads} thread(s), median of {args.steps} steps, {malloc}\n")
    print("| loss | batch | crop | fp32 crops/s | bf16 crops/s | bf16 / fp32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for loss_name, (batch, side) in SETTINGS.items():
        speed = measure(config, loss_name, args.vgg_weights, args.steps, args.warmup)
        ratio = speed["bf16"] / speed["fp32"]
        cells = f"{speed['fp32']:.1f} | {speed['bf16']:.1f} | {ratio:.2f}x"
        print(f"| {loss_name} | {batch} | {side} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
