"""NoGAN's generated pictures: stage 2 makes them, stage 3's critic learns to tell them from the real ones.

Stage 2 runs the pretrained generator once over every training image and keeps the results as PNG files, so the
critic's pretraining (stage 3) costs no generator pass per step. A critic batch pairs each generated crop with the
same region of the clean image, the most direct lesson in what "generated" looks like.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from decrappify.data.degrade import modcrop, rng_for
from decrappify.data.pairs import ImageStore
from decrappify.errors import ConfigError
from decrappify.inference.tiling import restore_tiled
from decrappify.train.threads import ThreadTuner
from decrappify.train.validation import save_png

log = logging.getLogger(__name__)

SampleKey = tuple[int, int, tuple[int, ...]]


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
