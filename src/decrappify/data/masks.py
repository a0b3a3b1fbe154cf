"""Training data for the `text-mask` task: degraded crops and the exact mask of the text drawn on them.

A text-mask model looks at a degraded picture and says, per pixel, whether it is the watermark's text. Its pairs
are (lq, mask): the input as a restoration model would get it, and `Degraded.text_mask()` at the same size, the
glyphs as the watermark drew them (before JPEG). Several presets can be mixed (`restore-x1` and `restore-x4`:
text on full-size and on downscaled photos); each sample picks one from its own random stream, so a batch stays a
pure function of its key, as `pairs.PairDataset`'s are.

The model works at the input's resolution, so a stage's crop is the *input's* side: an x4 preset cuts a clean crop
four times larger and degrades it to `crop`. An image is used only when it is large enough for every preset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from decrappify.data.degrade import Box, Pipeline, modcrop, rng_for
from decrappify.data.pairs import ImageStore, _augment, _center_crop, _rgb_array, load_rgb
from decrappify.errors import ConfigError

MASK_ON = 255  # a text pixel in a uint8 mask; the trainer divides by 255, so the target is exactly 1.0


class MaskDataset(torch.utils.data.Dataset):
    """`dataset[key] -> (lq, mask)` for a `pairs.SampleKey`: lq uint8 crop x crop x 3, mask uint8 crop x crop x 1
    (`MASK_ON` on text, 0 elsewhere).

    `degrade_photo`: degrade the whole (augmented) photo, then cut the crop from it, so the text is sized to the
    photo as `evaluate` sizes it; with probability `box_crops` the crop is placed over the text. Otherwise the crop
    alone is degraded (faster; the text is then sized to the crop).
    """

    def __init__(
        self,
        store: ImageStore,
        pipelines: Sequence[Pipeline],
        augment: str = "hflip",
        *,
        degrade_photo: bool = True,
        box_crops: float = 0.5,
    ):
        if not pipelines:
            raise ConfigError("a text-mask dataset needs at least one preset")
        self.store, self.pipelines, self.augment = store, tuple(pipelines), augment
        self.degrade_photo, self.box_crops = degrade_photo, box_crops
        self.max_scale = max(int(pipeline.scale) for pipeline in self.pipelines)

    def __len__(self) -> int:
        return len(self.store)

    def eligible(self, crop: int) -> list[int]:
        """Indices of the images from which every preset can make a `crop`-pixel input."""
        return self.store.eligible(crop * self.max_scale)

    def __getitem__(self, key: tuple[int, int, tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        index, crop, seed = key
        rng = np.random.default_rng(seed)
        choice = int(rng.integers(len(self.pipelines))) if len(self.pipelines) > 1 else 0  # one preset: no draw
        pipeline = self.pipelines[choice]
        image = self.store[index]
        if self.degrade_photo:
            lq, mask = self._degrade_then_crop(image, pipeline, crop, rng)
        else:
            side = crop * int(pipeline.scale)
            top = int(rng.integers(0, image.shape[0] - side + 1))
            left = int(rng.integers(0, image.shape[1] - side + 1))
            patch = np.ascontiguousarray(_augment(image[top : top + side, left : left + side], self.augment, rng))
            degraded = pipeline(Image.fromarray(patch), rng)
            lq, mask = _rgb_array(degraded.image), degraded.text_mask()
        if lq.shape[:2] != (crop, crop):
            size = f"{lq.shape[1]}x{lq.shape[0]}"
            raise ConfigError(f"degradation {pipeline} made a {size} input, expected {crop}x{crop}")
        return lq, (mask[..., None] * np.uint8(MASK_ON)).astype(np.uint8)

    def _degrade_then_crop(
        self, image: np.ndarray, pipeline: Pipeline, crop: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The whole photo degraded, then a crop of the input and its mask (over a text box `box_crops` of the time)."""
        photo = modcrop(Image.fromarray(np.ascontiguousarray(_augment(image, self.augment, rng))), pipeline.scale)
        degraded = pipeline(photo, rng)
        lq, mask = _rgb_array(degraded.image), degraded.text_mask()
        height, width = lq.shape[:2]
        if degraded.boxes and rng.random() < self.box_crops:
            left, top, right, bottom = degraded.boxes[int(rng.integers(len(degraded.boxes)))]
            x, y = int(rng.integers(left, right)), int(rng.integers(top, bottom))  # a pixel of the box
            x0, y0 = x - int(rng.integers(0, crop)), y - int(rng.integers(0, crop))
        else:
            x0, y0 = int(rng.integers(0, width - crop + 1)), int(rng.integers(0, height - crop + 1))
        x0, y0 = min(max(x0, 0), width - crop), min(max(y0, 0), height - crop)
        window = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        return np.ascontiguousarray(lq[window]), np.ascontiguousarray(mask[window])


@dataclass
class MaskValidationSet:
    """Degraded inputs and their true text masks, made once so every epoch scores the same pictures."""

    names: list[str]
    lq: list[torch.Tensor]  # 1 x 3 x h x w float32 in [0, 1]
    masks: list[np.ndarray]  # h x w bool
    boxes: list[list[Box]] = field(default_factory=list)  # watermark boxes on lq, per image
    scale: int = 1  # the model's: masks are at the input's size

    def __len__(self) -> int:
        return len(self.names)


def build_mask_validation(
    items: Sequence[tuple[Path, str]], pipeline: Pipeline, *, seed: int, crop: int = 0
) -> MaskValidationSet:
    """Each image (centre-cropped to `crop` clean pixels if given) degraded with `rng_for(seed, key)`, as `evaluate`
    degrades it."""
    result = MaskValidationSet([], [], [], [])
    for path, key in items:
        image = modcrop(_center_crop(load_rgb(path), crop), pipeline.scale)
        degraded = pipeline(image, rng_for(seed, key))
        lq = np.asarray(degraded.image.convert("RGB"), dtype=np.float32) / 255.0
        result.names.append(key)
        result.lq.append(torch.from_numpy(lq.transpose(2, 0, 1).copy()).unsqueeze(0))
        result.masks.append(degraded.text_mask())
        result.boxes.append(list(degraded.boxes))
    return result
