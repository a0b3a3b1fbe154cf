"""Finding the watermark: a text-mask model run over a picture, and restoring only where it found text.

`TextMasker.from_pretrained("text-mask")` (or a model file trained with `configs/text-mask.toml`) loads a
segmentation model once; `masker.probabilities(rgb)` gives the text's probability per pixel at the picture's own
size, tile by tile like `Restorer` (the probabilities of neighbouring tiles are blended, as restored pixels are),
and `masker.predict(rgb)` the mask (probability >= `threshold`).

The model looks at a picture larger than `working_side` (long side, default `DEFAULT_WORKING_SIDE`) through a copy
scaled down to it, and the probabilities are scaled back up. A watermark is sized to its photo, and the model
learned on photos of 300 to 500 pixels (BSDS500, ImageNet): on a big photo the same text has strokes many times
wider than any it saw, and it found little of it. On 13 scikit-image photos none of the models saw (5 seeds each),
F1 went from 0.65 at the photos' own size to 0.81 with a working side of 512 (0.76 at 640); on BSD100 scaled up
3x, from 0.48 to 0.83 (box recall 0.66 to 0.98); BSD100 itself (481 pixels) is unchanged
(docs/benchmarks/text-mask.md). ``working_side=0`` looks at the photo's own pixels, for small text on a big photo.

`restore_only_masked` is what `restore --only-masked` does for a photo whose only damage is its watermark: the
whole picture is restored, then the restored pixels are kept only inside the mask, grown by `grow` pixels and
feathered over `feather` more (`blend_weights`); every pixel farther from the text is the input's, exactly. A
restoration model smooths what it does not need to repair; this keeps that smoothing off the rest of the photo.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from decrappify.errors import ConfigError, InputError
from decrappify.inference.precision import describe_precision
from decrappify.inference.restorer import DEFAULT_TILE, MIN_TILE_OVERLAP, Restorer
from decrappify.inference.runners import LoadedModel, TorchRunner, load_runner, resolve_device
from decrappify.inference.tiling import TileCallback, restore_tiled
from decrappify.inference.zoo import display_name, resolve_model, shipped_names
from decrappify.io.images import Picture, read_image
from decrappify.tasks import TEXT_MASK, is_colour_task, is_segmentation_task

log = logging.getLogger(__name__)

#: The shipped text-mask model's name (`decrappify detect` and `restore --only-masked` use it by default).
DEFAULT_MASK_MODEL = TEXT_MASK
DEFAULT_THRESHOLD = 0.5
#: The long side, in pixels, a larger picture is scaled down to before the model looks for text (see above).
DEFAULT_WORKING_SIDE = 512
MIN_WORKING_SIDE = 64
#: `restore_only_masked`: pixels within GROW of the text take the restored picture whole, the next FEATHER
#: pixels blend it into the input. JPEG rings and anti-aliased edges reach a pixel or two past the glyphs.
DEFAULT_GROW = 3
DEFAULT_FEATHER = 4
OVERLAY_COLOUR = np.array([1.0, 0.1, 0.1], dtype=np.float32)
#: What `decrappify detect` names its outputs, after the input's stem; `restore --mask DIR` looks masks up so.
MASK_SUFFIX = "_mask.png"
OVERLAY_SUFFIX = "_overlay.jpg"


def default_mask_model() -> str:
    """The shipped text-mask model's name; `ConfigError` saying how to give a file while none is shipped."""
    if DEFAULT_MASK_MODEL not in shipped_names():
        raise ConfigError(
            f"no '{DEFAULT_MASK_MODEL}' model is shipped yet; name a text-mask model file (one trained with "
            "configs/text-mask.toml, e.g. runs/text-mask/best.safetensors)"
        )
    return DEFAULT_MASK_MODEL


class TextMasker:
    """A loaded text-mask model and how to run it (device, tiling, threshold). Build it with `from_pretrained`.

    Like `Restorer`, it keeps no state between calls: one masker serves many threads.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        name: str,
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        precision_note: str | None = None,
        working_side: int = DEFAULT_WORKING_SIDE,
    ):
        task = loaded.info.get("task")
        if not is_segmentation_task(task):
            raise ConfigError(f"model {name} is a {task or 'restoration'} model, not a {TEXT_MASK} model")
        if not 0 < threshold < 1:
            raise ConfigError(f"mask threshold must be between 0 and 1, got {threshold}")
        if tile_overlap is None:
            tile_overlap = max(MIN_TILE_OVERLAP, 4 * loaded.runner.size_multiple)
        if tile < 0 or tile_overlap < 0:
            raise ConfigError(f"tile ({tile}) and tile overlap ({tile_overlap}) cannot be negative")
        if working_side != 0 and working_side < MIN_WORKING_SIDE:
            raise ConfigError(f"mask working side must be 0 (the picture's own size) or at least "
                              f"{MIN_WORKING_SIDE} pixels, got {working_side}")  # fmt: skip
        self._runner = loaded.runner
        self.name, self.config, self.info = name, dict(loaded.config), dict(loaded.info)
        self.tile, self.tile_overlap, self.threshold = int(tile), int(tile_overlap), float(threshold)
        self.precision_note = precision_note or loaded.runner.precision
        self.working_side = int(working_side)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str = "auto",
        backend: str = "torch",
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        threshold: float = DEFAULT_THRESHOLD,
        working_side: int = DEFAULT_WORKING_SIDE,
    ) -> TextMasker:
        """Load the shipped text-mask model (None) or a model file; `ConfigError` for a model of another task."""
        path = resolve_model(name_or_path if name_or_path is not None else default_mask_model())
        loaded = load_runner(path, backend=backend, device=device, threads=threads, precision=precision)
        note = (describe_precision(precision, resolve_device(device), loaded.info)
                if isinstance(loaded.runner, TorchRunner) else "fp32 (ONNX Runtime)")  # fmt: skip
        return cls(loaded, name=display_name(path, loaded.info), tile=tile, tile_overlap=tile_overlap,
                   threshold=threshold, precision_note=note, working_side=working_side)  # fmt: skip

    @property
    def precision(self) -> str:
        return self._runner.precision

    @property
    def device(self) -> str:
        return str(self._runner.device) if isinstance(self._runner, TorchRunner) else "onnxruntime"

    def probabilities(self, rgb: np.ndarray, *, on_tile: TileCallback | None = None) -> np.ndarray:
        """H x W x 3 float array in [0, 1] -> H x W float32: the probability that each pixel is text."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
            raise InputError(None, f"expected an H x W x 3 image array, got {getattr(rgb, 'shape', type(rgb))}")
        lq = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
        height, width = rgb.shape[:2]
        with torch.inference_mode():
            working = self.working_size(height, width)
            if working != (height, width):  # antialiased: the small copy must not alias fine texture into strokes
                lq = nn.functional.interpolate(lq, size=working, mode="bilinear", align_corners=False, antialias=True)
            logits = restore_tiled(self._runner, lq, scale=1, tile=self.tile, overlap=self.tile_overlap,
                                   multiple=self._runner.size_multiple, on_tile=on_tile)  # fmt: skip
            probabilities = torch.sigmoid(logits)
            if working != (height, width):
                probabilities = nn.functional.interpolate(probabilities, size=(height, width), mode="bilinear",
                                                          align_corners=False)  # fmt: skip
            return probabilities[0, 0].numpy()

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the model looks at: scaled down so the long side is `working_side`, else as is."""
        long_side = max(height, width)
        if not self.working_side or long_side <= self.working_side:
            return height, width
        factor = self.working_side / long_side
        return max(1, round(height * factor)), max(1, round(width * factor))

    def predict(self, rgb: np.ndarray, *, on_tile: TileCallback | None = None) -> np.ndarray:
        """H x W bool: the text mask (probability at or above `threshold`)."""
        return self.probabilities(rgb, on_tile=on_tile) >= self.threshold

    def __repr__(self) -> str:
        return f"TextMasker(name={self.name!r}, threshold={self.threshold}, working_side={self.working_side})"


def blend_weights(mask: np.ndarray, *, grow: int = DEFAULT_GROW, feather: int = DEFAULT_FEATHER) -> np.ndarray:
    """H x W float32 in [0, 1]: 1 within `grow` pixels of the mask (Euclidean), then falling linearly to 0 over
    `feather` pixels; exactly 0 from `grow + feather` pixels away (the dilated mask's outside)."""
    if grow < 0 or feather < 0:
        raise ConfigError(f"mask grow ({grow}) and feather ({feather}) cannot be negative")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    distance = ndimage.distance_transform_edt(~mask)
    if feather == 0:
        return (distance <= grow).astype(np.float32)
    return np.clip((grow + feather - distance) / feather, 0.0, 1.0).astype(np.float32)


def keep_masked(original: np.ndarray, restored: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The restored picture where `weights` > 0 (blended by them), the original, bit for bit, elsewhere."""
    if original.shape != restored.shape or original.shape[:2] != weights.shape:
        raise ConfigError(f"keep_masked: sizes differ ({original.shape}, {restored.shape}, {weights.shape})")
    w = weights[..., None]
    blended = original + (restored - original) * w
    return np.where(w > 0, blended, original).astype(original.dtype, copy=False)


def restore_only_masked(
    restorer: Restorer,
    picture: Picture,
    mask: np.ndarray,
    *,
    grow: int = DEFAULT_GROW,
    feather: int = DEFAULT_FEATHER,
    on_tile: TileCallback | None = None,
) -> Picture:
    """`picture` restored by a same-size `restorer` inside `mask` (grown and feathered), untouched elsewhere.

    A picture with an empty mask is returned as it is, without running the model.
    """
    if restorer.scale != 1 or is_colour_task(restorer.task):
        raise ConfigError(
            f"restoring only the masked text needs a same-size restoration model (such as restore-x1); "
            f"{restorer.name} is a {restorer.task} model at x{restorer.scale}"
        )
    if mask.shape != picture.rgb.shape[:2]:
        sizes = f"{mask.shape[1]}x{mask.shape[0]}, the picture {picture.width}x{picture.height}"
        raise InputError(None, f"the mask is {sizes}")
    weights = blend_weights(mask, grow=grow, feather=feather)
    if not weights.any():
        return picture
    restored = restorer.restore(picture, on_tile=on_tile)
    return picture.with_rgb(keep_masked(picture.rgb, restored.rgb, weights))


def read_mask(path: str | Path, size: tuple[int, int], *, max_pixels: int | None = None) -> np.ndarray:
    """A mask file (white, or any channel above half, is text) as H x W bool; `InputError` naming the file when it
    is not `size` (width, height)."""
    picture = read_image(path, max_pixels=max_pixels)
    if picture.size != tuple(size):
        raise InputError(Path(path), f"the mask is {picture.width}x{picture.height}, the picture {size[0]}x{size[1]}")
    return picture.rgb.max(axis=2) >= 0.5


def mask_picture(mask: np.ndarray) -> Picture:
    """A mask as an 8-bit grey `Picture` (text white, the rest black), for `io.images.write_image`."""
    values = np.repeat(np.asarray(mask, dtype=np.float32)[..., None], 3, axis=2)
    return Picture(rgb=values, bit_depth=8, grayscale=True)


def overlay(rgb: np.ndarray, mask: np.ndarray, *, opacity: float = 0.55) -> np.ndarray:
    """The picture with the mask tinted red over it (H x W x 3 float32), for the eye."""
    rgb = np.asarray(rgb, dtype=np.float32)
    tint = rgb + (OVERLAY_COLOUR - rgb) * np.float32(opacity)
    return np.where(np.asarray(mask, dtype=bool)[..., None], tint, rgb).astype(np.float32)


def detect_outputs(relative: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """(mask, overlay) files for the input at `relative` (its path under the folder it was found in) in `out_dir`,
    the input's folders mirrored: photos/a.jpg -> OUT/photos/a_mask.png, OUT/photos/a_overlay.jpg."""
    relative = Path(relative)
    folder = Path(out_dir) / relative.parent
    return folder / f"{relative.stem}{MASK_SUFFIX}", folder / f"{relative.stem}{OVERLAY_SUFFIX}"


def detect_picture(
    masker: TextMasker, picture: Picture, *, on_tile: TileCallback | None = None
) -> tuple[Picture, Picture]:
    """The text mask of `picture` (8-bit grey, white on text) and the preview: the picture with the mask tinted
    over it (its own bit depth and colour profile, no alpha)."""
    mask = masker.predict(picture.rgb, on_tile=on_tile)
    preview = dataclasses.replace(picture, rgb=overlay(picture.rgb, mask), alpha=None, grayscale=False)
    return mask_picture(mask), preview
