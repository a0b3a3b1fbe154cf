"""Short equal-steps training of generator configs on BSDS500 crops, scored on BSD100 (PSNR_Y, x``scale``).

Used to choose between designs (e.g. the U-Net running at low resolution vs on a bicubic-enlarged input, or
compact-model widths), not to train shipped models. The cores are shared, so configs are compared at equal
steps, not equal time. Usage (from the repository root):

    python benchmarks/compare_generators.py --steps 400 \
        --config '{"arch": "unet", "encoder": "resnet18", "encoder_width": 32, "scale": 4, "sr_mode": "lr"}' \
        --config '{"arch": "unet", "encoder": "resnet18", "encoder_width": 32, "scale": 4, "sr_mode": "hr"}'

Degradation: modcrop, PIL bicubic downscale. Loss L1, Adam, cosine decay. PSNR on the Y channel (BT.601), border
``scale`` cropped, against PIL bicubic on the same images.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from decrappify.nn.models import count_flops, create_model

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bsds500"


def load_pairs(folder: Path, scale: int, limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lq, hq) float tensors (3, h, w) for every JPEG in ``folder``: modcrop, then PIL bicubic downscale."""
    pairs = []
    for path in sorted(folder.glob("*.jpg"))[:limit]:
        image = Image.open(path).convert("RGB")
        w, h = image.width - image.width % scale, image.height - image.height % scale
        hq = image.crop((0, 0, w, h))
        lq = hq.resize((w // scale, h // scale), Image.BICUBIC)
        pairs.append(
            tuple(torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1) for im in (lq, hq))
        )
    return pairs


def batch(pairs, size: int, count: int, scale: int, rng: np.random.Generator):
    """``count`` random aligned crops: lq ``size`` x ``size``, hq ``size * scale``, random flips."""
    lqs, hqs = [], []
    for i in rng.integers(len(pairs), size=count):
        lq, hq = pairs[i]
        y, x = rng.integers(lq.shape[1] - size + 1), rng.integers(lq.shape[2] - size + 1)
        a, b = (
            lq[:, y : y + size, x : x + size],
            hq[:, y * scale : (y + size) * scale, x * scale : (x + size) * scale],
        )
        if rng.random() < 0.5:
            a, b = a.flip(-1), b.flip(-1)
        lqs.append(a)
        hqs.append(b)
    return torch.stack(lqs), torch.stack(hqs)


def psnr_y(pred: torch.Tensor, hq: torch.Tensor, border: int) -> float:
    weights = torch.tensor([65.481, 128.553, 24.966]).view(3, 1, 1)
    y_pred = (pred * weights).sum(0) + 16
    y_hq = (hq * weights).sum(0) + 16
    diff = (y_pred - y_hq)[border:-border, border:-border].double()
    return float(10 * torch.log10(255.0**2 / diff.pow(2).mean()))


def evaluate(model, pairs, scale: int) -> tuple[float, float]:
    """Mean PSNR_Y of the model and of PIL bicubic over ``pairs``."""
    model.eval()
    ours, bicubic = [], []
    with torch.inference_mode():
        for lq, hq in pairs:
            pred = model(lq[None])[0].clamp(0, 1)
            ours.append(psnr_y(pred, hq, scale))
            image = Image.fromarray((lq.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            up = image.resize((hq.shape[2], hq.shape[1]), Image.BICUBIC)
            bicubic.append(
                psnr_y(torch.from_numpy(np.asarray(up, np.float32) / 255).permute(2, 0, 1), hq, scale)
            )
    model.train()
    return float(np.mean(ours)), float(np.mean(bicubic))


def train(config: dict, train_pairs, val_pairs, args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = create_model(config).train()
    scale = model.scale
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    start, losses = time.perf_counter(), []
    for _ in range(args.steps):
        lq, hq = batch(train_pairs, args.crop, args.batch, scale, rng)
        loss = F.l1_loss(model(lq), hq)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    psnr, bicubic = evaluate(model, val_pairs, scale)
    flops = count_flops(model.eval(), (1, 3, 128, 128)) / 1e9 / (128 * 128 * scale * scale / 1e6)
    return {
        "config": config,
        "params": sum(p.numel() for p in model.parameters()),
        "gflops_per_output_mp": round(flops, 1),
        "steps": args.steps,
        "train_seconds": round(seconds, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 5),
        "psnr_y": round(psnr, 3),
        "bicubic_psnr_y": round(bicubic, 3),
        "gain_db": round(psnr - bicubic, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="create_model config as JSON")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=32, help="low-resolution crop side")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-images", type=int, default=20, help="first N images of BSD100")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = [json.loads(c) for c in args.config]
    scale = configs[0].get("scale", 1)
    train_pairs = load_pairs(SHARED / "train", scale) + load_pairs(SHARED / "test", scale)
    val_pairs = load_pairs(SHARED / "val", scale, args.val_images)
    for config in configs:
        print(json.dumps(train(config, train_pairs, val_pairs, args)), flush=True)


if __name__ == "__main__":
    main()
