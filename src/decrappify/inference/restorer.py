"""Restoring pictures with a trained model: load once, then any number of stateless calls.

`Restorer.from_pretrained("restore-x4")` (a shipped model) or `Restorer.from_pretrained("my.safetensors")`;
then `restorer.restore(picture)` for a `Picture` (alpha, bit depth, ICC and EXIF carried over by the I/O module)
or `restorer.restore_array(rgb)` for an H x W x 3 float array. Every call runs under `torch.inference_mode()`,
tile by tile (see `tiling`), and keeps nothing between calls, so one restorer can serve many threads' requests.

Colourisation (task "colorize") works as DeOldify does: the model sees the picture's luma, shrunk so that its
longer side is at most `render_size`; only its colour is kept, enlarged to full size and put on the picture's own
full-resolution luma. Detail and brightness therefore come from the input by construction, and a big photo costs
what a `render_size` one does. See `keep_luminance` for the exactness guarantee.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from decrappify.errors import ConfigError, InputError
from decrappify.inference.ensemble import check_ensemble, model_ensemble, self_ensemble, view_groups
from decrappify.inference.memory import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    activation_elements_per_pixel,
    check_restorable,
    estimate_peak_bytes,
    meta_model,
    model_call_side,
)
from decrappify.inference.precision import describe_precision
from decrappify.inference.realesrgan import LABEL as REALESRGAN_LABEL
from decrappify.inference.realesrgan import is_realesrgan, load_realesrgan_runner
from decrappify.inference.runners import LoadedModel, Runner, TorchRunner, load_runner, resolve_device
from decrappify.inference.tiling import DEFAULT_MIN_TILE, TileCallback, restore_tiled
from decrappify.inference.zoo import display_name, resolve_model
from decrappify.io.images import Picture, picture_from_pil, picture_to_pil, read_image
from decrappify.tasks import is_colour_task, is_segmentation_task

__all__ = ["Restorer", "keep_luminance", "luma", "restore_tiled"]

log = logging.getLogger(__name__)

DEFAULT_TILE = 512
#: Context (input pixels) around each tile, at least. Models that downsample a lot get 4 of their strides (128
#: for a ResNet U-Net): their receptive field is wide, and with 32 pixels the tiles visibly disagree.
MIN_TILE_OVERLAP = 32
#: Colourisation: the model runs on the picture shrunk to this longer side (DeOldify renders at 16 x 35 = 560).
DEFAULT_RENDER_SIZE = 512
#: BT.601 luma weights, full range (JPEG's Y, Pillow's "L"): what a greyscale picture stores.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class Restorer:
    """A loaded model plus how to run it (backend, device, tiling). Build it with `from_pretrained`."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        name: str,
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        min_tile: int = DEFAULT_MIN_TILE,
        render_size: int | None = None,
        ensemble: str | None = None,
        precision_note: str | None = None,
    ):
        self._runner: Runner = loaded.runner
        #: What ran and why, for messages ("bf16 (auto: this CPU runs bf16 natively)").
        self.precision_note = precision_note or loaded.runner.precision
        self.config: dict[str, Any] = dict(loaded.config)
        self.info: dict[str, Any] = dict(loaded.info)
        self.name = name
        self.task: str = str(self.info.get("task", "restore"))
        if is_segmentation_task(self.task):  # its output is a mask's logits, not a picture
            raise ConfigError(
                f"model {name} finds text ({self.task}); it restores nothing: use it with `decrappify detect` or "
                "`restore --only-masked --mask-model`"
            )
        self.scale: int = int(loaded.runner.scale)
        if tile_overlap is None:
            tile_overlap = max(MIN_TILE_OVERLAP, 4 * loaded.runner.size_multiple)
        if tile < 0 or tile_overlap < 0:
            raise ConfigError(f"tile ({tile}) and tile overlap ({tile_overlap}) cannot be negative")
        self.tile, self.tile_overlap, self.min_tile = int(tile), int(tile_overlap), int(min_tile)
        if render_size is None:
            render_size = int(self.info.get("render_size", DEFAULT_RENDER_SIZE))
        if render_size < 0:
            raise ConfigError(f"render size cannot be negative, got {render_size}")
        self.render_size = int(render_size)  # colourisation only; 0: run the model at full size
        # Views averaged per tile (`decrappify.inference.ensemble`); None: the one the model file names, else none.
        self.ensemble = model_ensemble(self.info) if ensemble is None else check_ensemble(ensemble)
        self._activations_per_pixel: float | None = None  # `_elements_per_pixel`, once worked out

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str = "auto",
        backend: str = "torch",
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        threads: int | None = None,
        opt_level: str = "all",
        render_size: int | None = None,
        ensemble: str | None = None,
        precision: str = "fp32",
    ) -> Restorer:
        """Load a shipped model by name or a model file by path (safetensors, or an ONNX file, which is known
        by its content and always runs on ONNX Runtime; `backend` chooses for safetensors files).

        `tile` is the core size in input pixels (0: whole picture); each model call sees at most
        `tile + 2 * tile_overlap` pixels a side; `tile_overlap=None` picks one from the model's stride.
        `threads` and `opt_level` apply to ONNX Runtime only. `render_size` (colourisation): the longer side the
        model sees (None: the model file's `info["render_size"]`, else 512; 0: full size). `ensemble`: average
        the model over mirrored ("flip", 2 calls) or all eight turned and mirrored views ("dihedral") of each
        tile, for ~0.1 dB at that many times the time (`decrappify.inference.ensemble` says which models suit
        which); None: the one the model file names (`info["ensemble"]`), else "none". `precision`: "fp32",
        "bf16" (autocast, torch backend) or "auto" (bf16 where the CPU runs it natively, unless the model file pins
        fp32; `decrappify.inference.precision`).
        """
        if is_realesrgan(name_or_path):  # the peer, converted in memory from its installed ncnn files
            options = dict(backend=backend, device=device, threads=threads, opt_level=opt_level)
            loaded, name = load_realesrgan_runner(**options, precision=precision), REALESRGAN_LABEL
        else:
            path = resolve_model(name_or_path)
            loaded = load_runner(
                path, backend=backend, device=device, threads=threads, opt_level=opt_level, precision=precision
            )
            name = display_name(path, loaded.info)
        return cls(
            loaded,
            name=name,
            tile=tile,
            tile_overlap=tile_overlap,
            render_size=render_size,
            ensemble=ensemble,
            precision_note=describe_precision(precision, resolve_device(device), loaded.info)
            if isinstance(loaded.runner, TorchRunner)
            else "fp32 (ONNX Runtime)",
        )

    @property
    def backend(self) -> str:
        return "torch" if isinstance(self._runner, TorchRunner) else "onnx"

    @property
    def precision(self) -> str:
        """The number format the network runs in: "fp32" or "bf16"."""
        return self._runner.precision

    @property
    def device(self) -> str:
        """Where the model runs: a torch device name, or "onnxruntime"."""
        return str(self._runner.device) if isinstance(self._runner, TorchRunner) else "onnxruntime"

    def estimate_peak_bytes(self, width: int, height: int) -> int:
        """Peak memory (bytes, this process) of restoring a `width` x `height` picture with this restorer's
        tile, ensemble and device; an upper-bound estimate (`decrappify.inference.memory`), nothing is run."""
        model_height, model_width = height, width
        colourise = is_colour_task(self.task)
        if colourise and self.render_size and max(height, width) > self.render_size:
            factor = self.render_size / max(height, width)  # the model sees the shrunk picture
            model_height, model_width = max(1, round(height * factor)), max(1, round(width * factor))
        multiple = self._runner.size_multiple
        sides = [model_call_side(n, self.tile, self.tile_overlap, multiple) for n in (model_height, model_width)]
        on_cpu = not isinstance(self._runner, TorchRunner) or self._runner.device.type == "cpu"
        return estimate_peak_bytes(
            input_pixels=width * height,
            output_pixels=width * height * self.scale**2,
            colourise=colourise,
            call_pixels=sides[0] * sides[1] if on_cpu else 0,
            elements_per_pixel=self._elements_per_pixel() if on_cpu else 0.0,
            batch=max(len(group) for group in view_groups(self.ensemble)),
        )

    def check_fits(
        self,
        width: int,
        height: int,
        *,
        path: str | Path | None = None,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
        max_memory_bytes: int | None = None,
    ) -> None:
        """`InputError` naming `path` when a `width` x `height` picture would make an output over
        `max_output_pixels` or need more memory than `max_memory_bytes` (None: what is available now).

        Call it with the size from the file's header (`io.images.read_image_size`), before decoding: the
        picture is refused before anything is spent on it, whatever the input-pixel limit let through.
        """
        peak = self.estimate_peak_bytes(width, height)
        check_restorable(
            path,
            (width, height),
            scale=self.scale,
            peak_bytes=peak,
            max_output_pixels=max_output_pixels,
            max_memory_bytes=max_memory_bytes,
        )

    def _elements_per_pixel(self) -> float:
        """`activation_elements_per_pixel` of this model, worked out on first use (one small forward pass)."""
        if self._activations_per_pixel is None:
            runner = self._runner
            if isinstance(runner, TorchRunner):
                model, device = runner.model, runner.device
            else:  # ONNX Runtime: the same network, rebuilt from its config on the meta device
                model, device = meta_model(self.config), torch.device("meta")
            found = 0.0 if model is None else activation_elements_per_pixel(model, runner.size_multiple, device)
            self._activations_per_pixel = found
        return self._activations_per_pixel

    def restore_tensor(self, lq: torch.Tensor, *, on_tile: TileCallback | None = None) -> torch.Tensor:
        """(N, 3, h, w) float32 CPU tensor in [0, 1] -> (N, 3, h*s, w*s) on the CPU, clamped to [0, 1].

        `on_tile(done, total)`: called after each tile, for a progress bar on one large picture."""
        with torch.inference_mode():
            pred = restore_tiled(
                self_ensemble(self._runner, self.ensemble),
                lq,
                scale=self.scale,
                tile=self.tile,
                overlap=self.tile_overlap,
                multiple=self._runner.size_multiple,
                min_tile=self.min_tile,
                on_tile=on_tile,
            )
            return pred.clamp_(0.0, 1.0)

    def restore_array(
        self, rgb: np.ndarray, *, levels: int | None = None, on_tile: TileCallback | None = None
    ) -> np.ndarray:
        """H x W x 3 float array in [0, 1] -> (H*s) x (W*s) x 3 float32 in [0, 1].

        Colourisation keeps the input's luma; `levels` (255 for 8 bits) makes that hold after rounding too.
        """
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
            shape = getattr(rgb, "shape", type(rgb).__name__)
            raise InputError(None, f"expected an H x W x 3 image array, got {shape}")
        if is_colour_task(self.task):
            return self._colourise(rgb, levels, on_tile)
        return np.ascontiguousarray(self._run(rgb, on_tile))

    def _run(self, rgb: np.ndarray, on_tile: TileCallback | None = None) -> np.ndarray:
        lq = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
        return self.restore_tensor(lq, on_tile=on_tile)[0].permute(1, 2, 0).numpy()

    def _colourise(self, rgb: np.ndarray, levels: int | None, on_tile: TileCallback | None = None) -> np.ndarray:
        """The model's colour, from its run on the shrunk luma, on the input's full-resolution luma."""
        height, width = rgb.shape[:2]
        grey = np.repeat(luma(rgb)[..., None], 3, axis=2).astype(np.float32)
        longer = max(height, width)
        if self.render_size and longer > self.render_size:
            factor = self.render_size / longer
            small = (max(1, round(height * factor)), max(1, round(width * factor)))
            grey = _resize(grey, small, "area")
        pred = self._run(grey, on_tile)
        return keep_luminance(rgb, pred, size=(height * self.scale, width * self.scale), levels=levels)

    @overload
    def restore(self, picture: Picture | str | Path, *, on_tile: TileCallback | None = None) -> Picture: ...
    @overload
    def restore(self, picture: np.ndarray, *, on_tile: TileCallback | None = None) -> np.ndarray: ...
    @overload
    def restore(self, picture: Image.Image, *, on_tile: TileCallback | None = None) -> Image.Image: ...

    def restore(self, picture, *, on_tile=None):
        """Restore a `Picture`, an image file's path, a numpy array or a Pillow image; the result is the same kind.

        A `Picture` (or a path, read with `io.images.read_image`) gives a new `Picture`: restored colour, alpha
        resized to match; bit depth, ICC and EXIF untouched. An array is H x W x 3 (or H x W grey): uint8 and
        uint16 come back in their own type, floats in [0, 1] as float32. A Pillow image comes back as an 8-bit
        RGB (RGBA when it has alpha) Pillow image. `on_tile(done, total)`: called after each tile.
        """
        if isinstance(picture, str | Path):
            picture = read_image(picture)
        if isinstance(picture, np.ndarray):
            return self._restore_ndarray(picture, on_tile)
        if isinstance(picture, Image.Image):
            restored = self.restore(picture_from_pil(picture), on_tile=on_tile)
            image = picture_to_pil(restored)
            if restored.alpha is not None:
                image.putalpha(Image.fromarray(np.rint(np.clip(restored.alpha, 0, 1) * 255).astype(np.uint8)))
            return image
        if not isinstance(picture, Picture):
            raise InputError(
                None, f"expected a Picture, a path, a numpy array or a PIL image, got {type(picture).__name__}"
            )
        levels = 2**picture.bit_depth - 1
        restored = picture.with_rgb(self.restore_array(picture.rgb, levels=levels, on_tile=on_tile))
        if is_colour_task(self.task) and restored.grayscale:
            restored = dataclasses.replace(restored, grayscale=False)  # colour added: write it as colour
        return restored

    def _restore_ndarray(self, array: np.ndarray, on_tile: TileCallback | None) -> np.ndarray:
        """`restore` for arrays: integers scaled by their type's maximum and returned in that type."""
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if np.issubdtype(array.dtype, np.integer):
            levels = int(np.iinfo(array.dtype).max)
            if array.dtype not in (np.uint8, np.uint16):
                raise InputError(None, f"expected a uint8, uint16 or float image array, got {array.dtype}")
            rgb = self.restore_array(array.astype(np.float32) / levels, levels=levels, on_tile=on_tile)
            return np.rint(rgb * levels).astype(array.dtype)
        return self.restore_array(array, on_tile=on_tile)

    def __repr__(self) -> str:
        return (
            f"Restorer(name={self.name!r}, task={self.task!r}, scale={self.scale}, backend={self.backend!r}"
            + (f", ensemble={self.ensemble!r})" if self.ensemble != "none" else ")")
        )


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 full-range luma 0.299 R + 0.587 G + 0.114 B (float64): a grey picture's own values."""
    return np.asarray(rgb, dtype=np.float64) @ LUMA_WEIGHTS


def _resize(array: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """H x W x C float array to `size` (height, width) with torch interpolation (`area` to shrink)."""
    if array.shape[:2] == tuple(size):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]
    align = None if mode == "area" else False
    out = F.interpolate(tensor, size=tuple(size), mode=mode, align_corners=align)
    return out[0].permute(1, 2, 0).numpy()


def keep_luminance(
    source_rgb: np.ndarray,
    pred_rgb: np.ndarray,
    *,
    size: tuple[int, int] | None = None,
    levels: int | None = None,
) -> np.ndarray:
    """Colourisation: the prediction's colour on the source's own luma (BT.601 full range, see `luma`).

    The output has `size` (default: the prediction's); the source is enlarged (bicubic) and the prediction's
    colour (its RGB minus its luma, which has zero luma) resized (bilinear) to it. Where source luma plus colour
    would leave [0, 1], the colour is scaled down (desaturated) rather than clipped, so the luma stays exact.
    `levels` (255 for 8 bits): the output lies on that grid and its luma rounds to the source's rounded luma
    (for an 8-bit picture, Pillow's `convert("L")` of the output equals the source's): the luma is off by at
    most 0.06 levels, 0.29 where blue is pinned at 0 or full, so `metrics.rgb_to_y` stays within 0.25.
    """
    size = tuple(size or pred_rgb.shape[:2])
    source = np.clip(_resize(np.asarray(source_rgb, dtype=np.float32), size, "bicubic"), 0.0, 1.0)
    pred = np.asarray(pred_rgb, dtype=np.float64)
    colour = _resize(pred - luma(pred)[..., None], size, "bilinear").astype(np.float64)
    colour -= luma(colour)[..., None]  # float32 resizing leaves ~1e-8 of luma: remove it
    target = luma(source)
    if levels:
        target = np.rint(target * levels) / levels
    rgb = _fit_gamut(target, colour)
    if levels:
        rgb = _quantize_keeping_luma(rgb, np.rint(target * levels), levels) / levels
    return np.ascontiguousarray(rgb, dtype=np.float32)


def _fit_gamut(y: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """y + s * colour with the largest s in [0, 1] keeping every channel in [0, 1] (luma unchanged)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(colour > 0, (1.0 - y)[..., None] / colour, np.inf)
        room = np.minimum(room, np.where(colour < 0, y[..., None] / -colour, np.inf))
    factor = np.clip(room.min(axis=-1), 0.0, 1.0)
    return np.clip(y[..., None] + factor[..., None] * colour, 0.0, 1.0)


def _quantize_keeping_luma(rgb: np.ndarray, target: np.ndarray, levels: int) -> np.ndarray:
    """Round to integer levels, then nudge the channels until the luma is within 0.45 levels of `target`.

    Blue moves luma least (0.114 a level), so it goes first and last: alone it lands within 0.057; green (0.29)
    and red step in only when blue is pinned at 0 or `levels`. A pixel still off (never seen) becomes grey.
    """
    quantized = np.rint(rgb * levels)
    for channel in (2, 1, 2, 0, 2):
        error = target - quantized @ LUMA_WEIGHTS
        step = np.rint(error / LUMA_WEIGHTS[channel])
        quantized[..., channel] = np.clip(quantized[..., channel] + step, 0, levels)
    bad = np.abs(target - quantized @ LUMA_WEIGHTS) > 0.45
    quantized[bad] = target[bad][:, None]
    return quantized
