"""Crappify: seeded, composable degradations that turn clean pictures into training inputs.

A model learns to undo exactly what these functions do, so they are written to be reproduced: every random choice
comes from an explicit `numpy.random.Generator`, never from global state, and `rng_for(seed, key)` gives each
picture its own stream so a batch is identical whatever the number of workers or their order. The degradations
are small frozen dataclasses (picklable, comparable, with a readable `repr` that goes into manifests), used both by
`decrappify crappify` and on the fly by the training datasets.

Pictures are 8-bit RGB `PIL.Image`s throughout (the training pairs are RGB). A step maps a `Degraded` (the image so
far, the watermark boxes drawn so far, the text mask, the scale factor so far) to a new one; geometric steps move
the boxes and the mask with the pixels, so a box always frames the watermark's pixels in the current image and
`box * scale` frames them in the clean one. The mask is the text's glyphs as drawn: every pixel the watermark
changed, recorded before any later step (JPEG, noise, blur) touches them. Recording it draws nothing from the
random stream, so the degraded pictures are the same with or without anyone reading it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from decrappify.errors import ConfigError, InputError

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
"""left, top, right, bottom (right and bottom exclusive), in the pixel coordinates of the image it belongs to."""

FloatRange = float | tuple[float, float]
IntRange = int | tuple[int, int]

RESAMPLE: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# How far (in output pixels) one changed input pixel can reach when Pillow downscales with each filter; used to
# grow watermark boxes so they still hold every pixel the watermark touched.
_RESAMPLE_REACH = {"nearest": 0, "box": 0, "bilinear": 1, "hamming": 1, "bicubic": 2, "lanczos": 3}

_TEXT_ALPHABET = string.ascii_letters + string.digits


@dataclass
class Degraded:
    """An image on its way through a pipeline, with what evaluation needs to know about it."""

    image: Image.Image  # RGB, 8-bit
    boxes: list[Box] = field(default_factory=list)  # watermark boxes, in `image`'s coordinates
    scale: int = 1  # clean size = degraded size * scale (after `modcrop` of the clean image)
    mask: np.ndarray | None = None  # H x W bool, True where text was drawn, `image`'s pixels; None: no text yet

    def clean_boxes(self) -> list[Box]:
        """The watermark boxes in the clean image's pixels (where they are scored and weighted)."""
        return [scale_box(box, self.scale) for box in self.boxes]

    def text_mask(self) -> np.ndarray:
        """H x W bool at `image`'s size: True on the pixels the watermark's glyphs changed (all False if none)."""
        if self.mask is None:
            return np.zeros((self.image.height, self.image.width), dtype=bool)
        return self.mask


def scale_box(box: Box | tuple[int, ...], scale: int) -> Box:
    """A box on a degraded image, in the pixels of the image `scale` times larger."""
    left, top, right, bottom = (int(v) * int(scale) for v in box)
    return left, top, right, bottom


class Degradation(ABC):
    """One step of a pipeline. Subclasses are frozen dataclasses: picklable, and their repr names every option."""

    @abstractmethod
    def __call__(self, sample: Degraded, rng: np.random.Generator) -> Degraded:
        """Return the degraded sample; all randomness is drawn from `rng`."""


# --------------------------------------------------------------------------------------------------- helpers


def rng_for(seed: int, key: str) -> np.random.Generator:
    """A random stream that depends only on `seed` and `key` (for example a picture's relative path).

    A stable hash (SHA-256, not Python's salted `hash`) makes the stream the same in every process and on every
    run, so results do not depend on how work is spread across workers.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, not {seed!r}")
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def modcrop(image: Image.Image, scale: int) -> Image.Image:
    """Crop the right and bottom edges so both sides are multiples of `scale` (as the SR benchmarks do)."""
    width, height = image.size
    if width < scale or height < scale:
        raise InputError(None, f"a {width}x{height} image is smaller than the scale {scale}")
    if width % scale == 0 and height % scale == 0:
        return image
    return image.crop((0, 0, width - width % scale, height - height % scale))


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    """Encode to JPEG in memory (Pillow defaults: 4:2:0 chroma subsampling) and decode again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def resize_shorter_side(image: Image.Image, target: int) -> Image.Image:
    """Resize (bicubic, keeping the aspect ratio) so the shorter side is `target` pixels."""
    width, height = image.size
    factor = target / min(width, height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def _check_range(name: str, value: FloatRange, low: float, high: float, *, integer: bool = False) -> None:
    """`value` is a number or a (low, high) pair within [low, high] (integers only if `integer`)."""
    values = value if isinstance(value, tuple) else (value,)
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    valid = all(isinstance(v, kinds) and not isinstance(v, bool) and low <= v <= high for v in values)
    if len(values) not in (1, 2) or not valid:
        what = "an integer" if integer else "a number"
        raise ConfigError(
            f"{name} must be {what} or a (low, high) pair within [{low}, {high}], not {value!r}"
        )
    if len(values) == 2 and values[0] > values[1]:
        raise ConfigError(f"{name}: low {values[0]} is above high {values[1]}")


def _uniform(rng: np.random.Generator, value: FloatRange) -> float:
    return float(rng.uniform(value[0], value[1])) if isinstance(value, tuple) else float(value)


def _randint(rng: np.random.Generator, value: IntRange) -> int:
    """An integer uniform in [low, high], both included."""
    return int(rng.integers(value[0], value[1] + 1)) if isinstance(value, tuple) else int(value)


def _grow_box(box: Box, margin: int, size: tuple[int, int]) -> Box | None:
    """`box` grown by `margin` on every side and clipped to the image; None if nothing is left."""
    left, top = max(0, box[0] - margin), max(0, box[1] - margin)
    right, bottom = min(size[0], box[2] + margin), min(size[1], box[3] + margin)
    return (left, top, right, bottom) if left < right and top < bottom else None


def _shrink_box(box: Box, scale: int) -> Box:
    """The box of output pixels fed by the input pixels in `box` when each output pixel covers scale x scale."""
    return (box[0] // scale, box[1] // scale, -(-box[2] // scale), -(-box[3] // scale))


def _keep(boxes: Iterable[Box | None]) -> list[Box]:
    return [box for box in boxes if box is not None]


def _block_edges(length: int, scale: int) -> np.ndarray:
    """Start of each output pixel's block of `scale` input pixels along one axis, as `Downscale` crops and shrinks
    it (a side shorter than `scale` is one block)."""
    return np.arange(0, length - length % scale, scale) if length >= scale else np.zeros(1, dtype=int)


def shrink_mask(mask: np.ndarray | None, scale: int) -> np.ndarray | None:
    """A text mask after `Downscale(scale)`: an output pixel is text when any input pixel of its block was."""
    if mask is None or scale == 1:
        return mask
    height, width = mask.shape
    rows = np.maximum.reduceat(mask, _block_edges(height, scale), axis=0)
    if height >= scale:
        rows = rows[: height // scale]
    out = np.maximum.reduceat(rows, _block_edges(width, scale), axis=1)
    return out[:, : width // scale] if width >= scale else out


# --------------------------------------------------------------------------------------------- degradations


@dataclass(frozen=True)
class Downscale(Degradation):
    """Shrink by an integer factor.

    The output is `max(1, floor(side / scale))` pixels per side: the right and bottom `side % scale` pixels are
    cropped first (`modcrop`), so output pixel (x, y) covers exactly the clean pixels [x*s, (x+1)*s) and the matching
    clean target is `modcrop(clean, scale)`. A side shorter than `scale` is squeezed to one pixel. `resample` is a
    filter name, or several to pick one at random per image.
    """

    scale: int = 4
    resample: str | tuple[str, ...] = "bicubic"

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise ConfigError(f"Downscale: scale must be an integer >= 1, not {self.scale!r}")
        names = (self.resample,) if isinstance(self.resample, str) else tuple(self.resample)
        unknown = [name for name in names if name not in RESAMPLE]
        if not names or unknown:
            raise ConfigError(
                f"Downscale: unknown resample {unknown or names!r}; choose from: {', '.join(RESAMPLE)}"
            )

    def __call__(self, sample: Degraded, rng: np.random.Generator) -> Degraded:
        names = (self.resample,) if isinstance(self.resample, str) else self.resample
        name = names[int(rng.integers(len(names)))] if len(names) > 1 else names[0]
        scale, image = self.scale, sample.image
        width, height = image.size
        crop = (
            width - width % scale if width >= scale else width,
            height - height % scale if height >= scale else height,
        )
        if crop != image.size:
            image = image.crop((0, 0, *crop))
        out_size = (max(1, width // scale), max(1, height // scale))
        small = image.resize(out_size, RESAMPLE[name]) if scale > 1 else image
        reach = _RESAMPLE_REACH[name]
        boxes = _keep(_grow_box(_shrink_box(box, scale), reach, out_size) for box in sample.boxes)
        return Degraded(small, boxes, sample.scale * scale, shrink_mask(sample.mask, scale))


@dataclass(frozen=True)
class Jpeg(Degradation):
    """JPEG compression at a quality drawn uniformly from the integers in [low, high] (or a fixed quality).

    Boxes and the mask are kept as they are: they mark where the text was drawn, and block artefacts are the JPEG
    task's business.
    """

    quality: IntRange = (10, 70)

    def __post_init__(self) -> None:
        _check_range("Jpeg: quality", self.quality, 1, 100, integer=True)

    def __call__(self, sample: Degraded, rng: np.random.Generator) -> Degraded:
        return replace(sample, image=jpeg_roundtrip(sample.image, _randint(rng, self.quality)))


@dataclass(frozen=True)
class GaussianNoise(Degradation):
    """Additive Gaussian noise, independent per pixel and channel; `sigma` in 8-bit levels (0..255)."""

    sigma: FloatRange = (1.0, 10.0)

    def __post_init__(self) -> None:
        _check_range("GaussianNoise: sigma", self.sigma, 0, 255)

    def __call__(self, sample: Degraded, rng: np.random.Generator) -> Degraded:
        sigma = _uniform(rng, self.sigma)
        pixels = np.asarray(sample.image, dtype=np.float32)
        noisy = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(sigma)
        image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")
        return replace(sample, image=image)


@dataclass(frozen=True)
class GaussianBlur(Degradation):
    """Gaussian blur (Pillow's, `sigma` = standard deviation in pixels); boxes grow by the blur's reach, the text
    mask stays the glyphs as drawn."""

    sigma: FloatRange = (0.2, 2.0)

    def __post_init__(self) -> None:
        _check_range("GaussianBlur: sigma", self.sigma, 0, 100)

    def __call__(self, sample: Degraded, rng: np.random.Generator) -> Degraded:
        sigma = _uniform(rng, self.sigma)
        image = sample.image.filter(ImageFilter.GaussianBlur(sigma)) if sigma > 0 else sample.image
        reach = math.ceil(3 * sigma) + 1 if sigma > 0 else 0
        boxes = _keep(_grow_box(box, reach, image.size) for box in sample.boxes)
        return Degraded(image, boxes, sample.scale, sample.mask)


@dataclass(frozen=True)
class Grayscale(Degradation):
    """Luma (ITU-R 601-2, Pillow's "L") copied to three equal channels: the colourisation task's input."""

    def __call__(self, sample: Degraded, rng: np.random.Generator) -> Degraded:
        return replace(sample, image=sample.image.convert("L").convert("RGB"))


@lru_cache(maxsize=128)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font (Aileron), so no system font is needed; cached per process and size."""
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # pragma: no cover - Pillow built without FreeType
        raise ConfigError("TextWatermark needs Pillow built with FreeType support")
    return font


def random_text(rng: np.random.Generator, words: IntRange = (1, 2), word_length: IntRange = (3, 8)) -> str:
    """Random letters and digits: one short token to a couple of words."""
    count = _randint(rng, words)
    return " ".join(
        "".join(_TEXT_ALPHABET[i] for i in rng.integers(len(_TEXT_ALPHABET), size=_randint(rng, word_length)))
        for _ in range(count)
    )


@dataclass(frozen=True)
class TextWatermark(Degradation):
    """Random text, anywhere in the image, in a random colour and opacity, alpha-composited.

    `size` is the font size as a fraction of the image's shorter side, but never below `min_size` pixels (so the
    text stays legible on small images) and shrunk to fit the width when it can. The recorded box is the tight
    bounding box of the pixels the text actually changed, and those pixels are added to the text mask; if it
    changed none (text the colour of the background), no box is recorded. `probability` < 1 leaves some images
    unmarked.
    """

    size: FloatRange = (0.08, 0.25)
    opacity: FloatRange = (0.4, 1.0)
    min_size: int = 10
    words: IntRange = (1, 2)
    word_length: IntRange = (3, 8)
    probability: float = 1.0

    def __post_init__(self) -> None:
        _check_range("TextWatermark: size", self.size, 0, 10)
        _check_range("TextWatermark: opacity", self.opacity, 0, 1)
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 1:
            raise ConfigError(f"TextWatermark: min_size must be an integer >= 1, not {self.min_size!r}")
        _check_range("TextWatermark: words", self.words, 1, 20, integer=True)
        _check_range("TextWatermark: word_length", self.word_length, 1, 100, integer=True)
        _check_range("TextWatermark: probability", self.probability, 0, 1)

    def __call__(self, sample: Degraded, rng: np.random.Generator) -> Degraded:
        if self.probability < 1 and rng.random() >= self.probability:
            return sample
        text = random_text(rng, self.words, self.word_length)
        mask = self._render(text, sample.image.size, _uniform(rng, self.size))
        width, height = sample.image.size
        left = int(rng.integers(min(0, width - mask.width), max(0, width - mask.width) + 1))
        top = int(rng.integers(min(0, height - mask.height), max(0, height - mask.height) + 1))
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        opacity = _uniform(rng, self.opacity)
        image, changed = _composite(sample.image, mask, (left, top), colour, opacity)
        if changed is None:
            log.debug("watermark %r changed no pixel", text)
            return replace(sample, image=image)
        text_mask = sample.text_mask() | changed
        return Degraded(image, [*sample.boxes, _bounding_box(changed)], sample.scale, text_mask)

    def _render(self, text: str, image_size: tuple[int, int], fraction: float) -> Image.Image:
        """The text's coverage ("L" mask, tight around the ink), at a size that fits the image when it can."""
        width = image_size[0]
        size = max(self.min_size, round(fraction * min(image_size)))
        font = _font(size)
        left, top, right, bottom = font.getbbox(text)
        if right - left > width and size > self.min_size:
            size = max(self.min_size, int(size * width / (right - left)))
            font = _font(size)
            left, top, right, bottom = font.getbbox(text)
        mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
        ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
        return mask


def _bounding_box(mask: np.ndarray) -> Box:
    """The tight box around a mask's True pixels (it has some)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _composite(
    image: Image.Image, mask: Image.Image, origin: tuple[int, int], colour: np.ndarray, opacity: float
) -> tuple[Image.Image, np.ndarray | None]:
    """Blend `colour` into `image` through `mask * opacity` placed at `origin`; return it and the mask of the
    pixels that changed (the image's size), or None when none did."""
    width, height = image.size
    x0, y0 = max(0, origin[0]), max(0, origin[1])
    x1, y1 = min(width, origin[0] + mask.width), min(height, origin[1] + mask.height)
    if x0 >= x1 or y0 >= y1:
        return image, None
    pixels = np.array(image, dtype=np.uint8)
    alpha = np.asarray(mask, dtype=np.float32)[
        y0 - origin[1] : y1 - origin[1], x0 - origin[0] : x1 - origin[0]
    ]
    alpha = (alpha * np.float32(opacity / 255.0))[..., None]
    region = pixels[y0:y1, x0:x1].astype(np.float32)
    blended = np.clip(np.rint(region * (1 - alpha) + colour * alpha), 0, 255).astype(np.uint8)
    changed = (blended != pixels[y0:y1, x0:x1]).any(axis=2)
    if not changed.any():
        return image, None
    pixels[y0:y1, x0:x1] = blended
    full = np.zeros((height, width), dtype=bool)
    full[y0:y1, x0:x1] = changed
    return Image.fromarray(pixels, "RGB"), full


# ------------------------------------------------------------------------------------------ pipeline, presets


@dataclass(frozen=True)
class Pipeline:
    """Degradations applied in order; `scale` is the product of the `Downscale` factors."""

    steps: tuple[Degradation, ...]

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        bad = [step for step in steps if not isinstance(step, Degradation)]
        if bad:
            raise ConfigError(f"Pipeline steps must be degradations, not {bad[0]!r}")
        object.__setattr__(self, "steps", steps)

    @property
    def scale(self) -> int:
        return math.prod(step.scale for step in self.steps if isinstance(step, Downscale))

    @property
    def draws_text(self) -> bool:
        """Whether a step draws a watermark (so `Degraded.text_mask()` can hold text)."""
        return any(isinstance(step, TextWatermark) for step in self.steps)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Degraded:
        """Degrade an 8-bit image (converted to RGB; alpha is dropped) with randomness from `rng`."""
        sample = Degraded(image if image.mode == "RGB" else image.convert("RGB"))
        for step in self.steps:
            sample = step(sample, rng)
        return sample

    def describe(self) -> list[str]:
        """One readable line per step, with every option (for manifests and logs)."""
        return [repr(step) for step in self.steps]


class Preset(NamedTuple):
    description: str
    factory: Callable[[], Pipeline]


def _sr_x4() -> Pipeline:
    return Pipeline((Downscale(4, "bicubic"),))


def _restore_x4() -> Pipeline:
    return Pipeline((Downscale(4, "bicubic"), TextWatermark(), Jpeg((10, 70))))


def _restore_x1() -> Pipeline:
    return Pipeline((TextWatermark(), Jpeg((10, 70))))


def _colorize() -> Pipeline:
    return Pipeline((Grayscale(),))


def _watermark() -> Pipeline:
    return Pipeline((TextWatermark(),))


PRESETS: dict[str, Preset] = {
    "sr-x4": Preset(
        "x4 bicubic downscale only (PIL BICUBIC): the clean degradation of the SR benchmarks", _sr_x4
    ),
    "restore-x4": Preset(
        "x4 bicubic downscale, random text watermark, JPEG quality 10-70 (the fastai lesson-7 recipe)",
        _restore_x4,
    ),
    "restore-x1": Preset("random text watermark, JPEG quality 10-70, same size", _restore_x1),
    "colorize": Preset("grayscale (luma in three equal channels), same size", _colorize),
    "watermark": Preset(
        "random text watermark drawn on the clean photo, nothing else (no downscale, no JPEG), same size",
        _watermark,
    ),
}
DEFAULT_PRESET = "restore-x4"


def create_preset(name: str) -> Pipeline:
    """The pipeline of a named preset; `ConfigError` lists the valid names for an unknown one."""
    preset = PRESETS.get(name)
    if preset is None:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return preset.factory()


__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "RESAMPLE",
    "Box",
    "Degradation",
    "Degraded",
    "Downscale",
    "GaussianBlur",
    "GaussianNoise",
    "Grayscale",
    "Jpeg",
    "Pipeline",
    "Preset",
    "TextWatermark",
    "create_preset",
    "jpeg_roundtrip",
    "modcrop",
    "random_text",
    "resize_shorter_side",
    "rng_for",
    "shrink_mask",
]
