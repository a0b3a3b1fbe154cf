"""One iteration of NoGAN's GAN phase: a generator or a critic update, and fastai's switcher deciding which;
and the critic's accuracy on the held-out images, which says how well its pretraining went.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from decrappify.data.pairs import ValidationSet
from decrappify.train.losses import critic_accuracy

#: Asks all processes about a loss before its update: returns it (a float) or raises `TrainingError`.
LossCheck = Callable[[torch.Tensor], float]


@dataclass
class AdaptiveSwitcher:
    """fastai's `AdaptiveGANSwitcher`: which of generator and critic trains on the next batch.

    Critic mode lasts until the critic's loss falls below `critic_threshold`; generator mode lasts one batch
    (or, with `generator_threshold`, until the generator's loss falls below it). Like fastai (`gen_first=False`)
    the critic goes first: a pretrained critic that is good enough hands over after one batch.
    """

    critic_threshold: float = 0.65
    generator_threshold: float | None = None
    generator_mode: bool = False

    def update(self, loss: float) -> bool:
        """The loss of the batch the current side just trained on; returns who trains next (True: generator)."""
        if self.generator_mode:
            if self.generator_threshold is None or loss < self.generator_threshold:
                self.generator_mode = False
        elif loss < self.critic_threshold:
            self.generator_mode = True
        return self.generator_mode


def _centre(batch: torch.Tensor, size: int) -> torch.Tensor:
    h, w = batch.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return batch[..., top : top + size, left : left + size]


@torch.inference_mode()
def heldout_accuracy(
    critic: nn.Module, generator: nn.Module, valset: ValidationSet | None, crop: int, device: torch.device
) -> float | None:
    """The critic's accuracy on the validation images: a centre crop of each truth vs the same crop of the
    generator's output (None without validation images at least `crop` pixels on both sides)."""
    if valset is None:
        return None
    was_training = critic.training
    critic.eval()
    generator.eval()
    scores = []
    for lq, hq in zip(valset.lq, valset.hq, strict=True):
        if min(hq.shape[:2]) < crop:
            continue
        fake = generator(lq.to(device)).clamp(0, 1)
        real = torch.from_numpy(np.ascontiguousarray(hq)).permute(2, 0, 1)[None].to(device)
        scores.append(critic_accuracy(critic(_centre(real, crop)), critic(_centre(fake, crop))))
    critic.train(was_training)
    return float(np.mean(scores)) if scores else None


def generator_step(
    generator: nn.Module,
    critic: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    lq: torch.Tensor,
    hq: torch.Tensor,
    check: LossCheck,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[float, dict[str, float]]:
    """One generator update: content + weighted adversarial loss, the critic frozen and in eval mode; the loss
    (as `check` agreed on it) and its two parts. The forward passes run in `autocast()` (the training precision).

    The critic sees the output clamped to [0, 1], as it saw generated pictures in pretraining; the content loss
    sees it unclamped, so its gradients flow."""
    generator.train()
    critic.eval().requires_grad_(False)
    try:
        with autocast():
            pred = generator(lq).float()
            total, terms = loss_fn(pred, hq, critic(pred.clamp(0.0, 1.0)))
        loss = check(total)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    finally:
        critic.train().requires_grad_(True)
    return loss, {k: float(terms[k].detach()) for k in ("content", "adversarial")}


def critic_step(
    generator: nn.Module,
    critic: nn.Module,
    adversarial: nn.Module,
    optimizer: torch.optim.Optimizer,
    lq: torch.Tensor,
    hq: torch.Tensor,
    check: LossCheck,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[float, dict[str, float]]:
    """One critic update on real crops vs the generator's current outputs (eval mode, as in stage 2); the loss
    (as `check` agreed on it) and the critic's accuracy on this batch. Forward passes run in `autocast()`."""
    generator.eval()
    with torch.no_grad(), autocast():
        fake = generator(lq).float()
    generator.train()
    with autocast():
        real_logits, fake_logits = critic(hq), critic(fake)
    return critic_update(adversarial, optimizer, real_logits, fake_logits, check)


def critic_update(
    adversarial: nn.Module,
    optimizer: torch.optim.Optimizer,
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    check: LossCheck,
) -> tuple[float, dict[str, float]]:
    """The critic's BCE update on its verdicts on real and generated crops (stage 3 and the GAN phase alike);
    the loss (as `check` agreed on it) and the critic's accuracy on this batch."""
    loss = adversarial.critic_loss(real_logits, fake_logits)
    value = check(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value, {"accuracy": critic_accuracy(real_logits, fake_logits)}
