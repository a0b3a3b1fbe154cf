"""Critic designs compared on what NoGAN asks of them: learning real vs generated quickly, and its cost.

Takes a NoGAN run whose stage 2 is done (its `generated/` pictures and `nogan.json`), pretrains each critic config
on the same real/generated crop batches for the same number of steps (one-cycle AdamW, BCE, as stage 3), and
reports seconds per step, forward GFLOPs per crop, the training accuracy of the last 20 steps and the accuracy on
the run's held-out images (truth vs the run's generator). The cores are shared: compare at equal steps, read the
times as rough. Usage (from the repository root):

    python benchmarks/compare_critics.py --run runs/restore-x4-gan --steps 150 \
        --critic '{"arch": "patch", "width": 64}' --critic '{"arch": "unet", "width": 32}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from decrappify.data.pairs import EpochPlan, iterate_batches
from decrappify.nn.critic import create_critic
from decrappify.nn.models import count_flops
from decrappify.train import build
from decrappify.train.config import config_from_dict
from decrappify.train.gan import STATE_FILE, NoGAN
from decrappify.train.gan_generated import RealFakeDataset
from decrappify.train.gan_steps import heldout_accuracy
from decrappify.train.losses import AdversarialLoss, critic_accuracy
from decrappify.train.schedule import Schedule
from decrappify.weights import load_model


def pretrain(critic_config: dict, dataset, valset, generator, args) -> dict:
    """Stage 3 for one critic: `args.steps` steps on the seeded batch stream; its scores and cost."""
    torch.manual_seed(0)
    critic = create_critic(critic_config)
    optimizer = torch.optim.AdamW(critic.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    optimizer.param_groups[0]["peak_lr"] = args.lr
    schedule, adversarial = Schedule("onecycle", args.steps), AdversarialLoss()
    plan = EpochPlan(tuple(dataset.store.eligible(args.crop)), args.crop, args.batch, seed=0, stage=101)
    batches = iterate_batches(dataset, plan.keys_from(0, 0), prefetch=False)
    accuracies, seconds = [], []
    for step in range(args.steps):
        fake, real = (t.float().div_(255.0) for t in next(batches))
        started = time.perf_counter()
        schedule.apply(optimizer, step)
        real_logits, fake_logits = critic(real), critic(fake)
        loss = adversarial.critic_loss(real_logits, fake_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
        accuracies.append(critic_accuracy(real_logits, fake_logits))
    return {
        "critic": json.dumps(critic_config),
        "params_M": sum(p.numel() for p in critic.parameters()) / 1e6,
        "gflops_per_crop": count_flops(critic, (1, 3, args.crop, args.crop)) / 1e9,
        "s_per_step": float(np.median(seconds)),
        "train_acc_last20": float(np.mean(accuracies[-20:])),
        "heldout_acc": heldout_accuracy(critic, generator, valset, args.crop, torch.device("cpu")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a NoGAN run folder with stage 2 done")
    parser.add_argument("--critic", action="append", required=True, help="critic config as JSON (repeatable)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = json.loads((args.run / STATE_FILE).read_text())
    if "generate" not in summary["stages"]:
        parser.error(f"{args.run}: stage 2 (generated pictures) is not done")
    run = NoGAN(config_from_dict(summary["config"]), args.run, resume=True, progress=False)
    data = build.build_data(run.config)
    dataset = RealFakeDataset(data.dataset.store, run.generated_store(), "hflip")
    generator, _, _ = load_model(args.run / summary["stages"]["generator"]["model"])
    rows = [pretrain(json.loads(text), dataset, data.valset, generator, args) for text in args.critic]
    keys = list(rows[0])
    print(
        f"{args.steps} steps, crop {args.crop}, batch {args.batch}, {len(data.valset or [])} held-out images"
    )
    print("| " + " | ".join(keys) + " |\n| " + " | ".join("---" for _ in keys) + " |")
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
