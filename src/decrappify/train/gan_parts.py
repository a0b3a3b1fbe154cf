"""The pieces of the NoGAN stages (`gan.py` runs them): the generator's outputs for the training images,
real/generated crop pairs for the critic, the critic's held-out accuracy, fastai's switcher and one GAN step of
each side.

Stage 2 runs the pretrained generator once over every training image and keeps the results as PNG files, so the
critic's pretraining (stage 3) costs no generator pass per step. A critic batch pairs each generated crop with the
same region of the clean image, the most direct lesson in what "generated" looks like.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from decrappify.data.pairs import ImageStore, ValidationSet
from decrappify.errors import ConfigError
from decrappify.train.threads import ThreadTuner
from decrappify.train.validation import save_png

log = logging.getLogger(__name__)

SampleKey = tuple[int, int, tuple[int, ...]]


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


def generated_name(index: int) -> str:
    """File name of the generated version of training image `index`."""
    return f"{index:05d}.png"


def _uint8(pred: torch.Tensor) -> np.ndarray:
    return np.rint(pred[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).astype(np.uint8)


def generate_outputs(
    model: nn.Module,
    store: ImageStore,
    pipeline: Callable,
    folder: Path,
    *,
    seed: int,
    device: torch.device,
    stop: Callable[[], bool] = lambda: False,
    tuner: ThreadTuner | None = None,
) -> list[Path]:
    """Each image of `store`, modcropped and degraded once (seeded by its index), restored by `model` (tiled)
    into `folder/NNNNN.png`. Files already there are kept: an interrupted stage continues where it stopped.
    `stop()` is asked before each picture (Ctrl-C): true ends the stage with `KeyboardInterrupt`. `tuner` picks
    the thread count from the time each picture takes (see `threads.py`)."""
    from decrappify.data.degrade import modcrop, rng_for
    from decrappify.inference.tiling import restore_tiled

    scale = int(pipeline.scale)
    multiple = int(getattr(model, "stride", 1) or 1)
    model.eval()

    def run(tile: torch.Tensor) -> torch.Tensor:
        return model(tile.to(device)).float().cpu()

    paths = []
    for index in range(len(store)):
        path = folder / generated_name(index)
        paths.append(path)
        if path.is_file():
            continue
        if stop():
            log.warning(
                "stopped after %d of %d generated pictures: continue with --resume", index, len(store)
            )
            raise KeyboardInterrupt
        started = time.monotonic()
        if tuner is not None:
            tuner.before_step()
        clean = modcrop(Image.fromarray(store[index]), scale)
        lq = np.asarray(pipeline(clean, rng_for(seed, f"nogan/{index}")).image.convert("RGB"))
        lq_tensor = torch.from_numpy(lq.transpose(2, 0, 1).copy())[None].float().div_(255.0)
        with torch.inference_mode():
            pred = restore_tiled(run, lq_tensor, scale=scale, tile=256, overlap=32, multiple=multiple)
        save_png(Image.fromarray(_uint8(pred)), path)
        if tuner is not None:
            tuner.after_step(time.monotonic() - started)
    log.info("generated %d images in %s", len(paths), folder)
    return paths


class RealFakeDataset:
    """`dataset[key] -> (fake, real)`: uint8 H x W x 3 crops from the same place of a generated image and of the
    clean image it came from (generated images are modcropped: they share the top-left corner).

    Duck-types `data.PairDataset` for `data.iterate_batches`; `store` (the generated images) says which images
    are large enough for a crop size.
    """

    def __init__(self, real: ImageStore, fake: ImageStore, augment: str = "hflip"):
        if len(real) != len(fake):
            raise ConfigError(
                f"{len(fake)} generated images for {len(real)} training images: run stage 2 again"
            )
        self.real, self.store, self.augment = real, fake, augment

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key: SampleKey) -> tuple[np.ndarray, np.ndarray]:
        index, crop, seed = key
        rng = np.random.default_rng(seed)
        fake = self.store[index]
        top = int(rng.integers(0, fake.shape[0] - crop + 1))
        left = int(rng.integers(0, fake.shape[1] - crop + 1))
        flip = self.augment != "none" and rng.random() < 0.5
        pair = []
        for image in (fake, self.real[index]):
            patch = image[top : top + crop, left : left + crop]
            patch = patch[:, ::-1] if flip else patch
            pair.append(np.ascontiguousarray(patch))
        return pair[0], pair[1]


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
    from decrappify.train.losses import critic_accuracy

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
    generator: nn.Module, critic: nn.Module, loss_fn: nn.Module, optimizer, lq, hq, check
) -> dict:
    """One generator update: content + weighted adversarial loss, the critic frozen and in eval mode.

    `check(loss)` returns the loss or raises (non-finite). The critic sees the output clamped to [0, 1], as
    it saw generated pictures in pretraining; the content loss sees it unclamped, so its gradients flow."""
    generator.train()
    critic.eval().requires_grad_(False)
    try:
        pred = generator(lq)
        total, terms = loss_fn(pred, hq, critic(pred.clamp(0.0, 1.0)))
        total = check(total)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    finally:
        critic.train().requires_grad_(True)
    return {
        "loss": float(total.detach()),
        **{k: float(terms[k].detach()) for k in ("content", "adversarial")},
    }


def critic_step(generator: nn.Module, critic: nn.Module, adversarial, optimizer, lq, hq, check) -> dict:
    """One critic update on real crops vs the generator's current outputs (eval mode, as in stage 2)."""
    from decrappify.train.losses import critic_accuracy

    generator.eval()
    with torch.no_grad():
        fake = generator(lq)
    generator.train()
    real_logits, fake_logits = critic(hq), critic(fake)
    loss = check(adversarial.critic_loss(real_logits, fake_logits))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "accuracy": critic_accuracy(real_logits, fake_logits)}
