"""Restoring pictures with a trained model: load once, then any number of stateless calls.

`Restorer.from_pretrained("restore-x4")` (a shipped model) or `Restorer.from_pretrained("my.safetensors")`;
then `restorer.restore(picture)` for a `Picture` (alpha, bit depth, ICC and EXIF carried over by the I/O module)
or `restorer.restore_array(rgb)` for an H x W x 3 float array. Every call runs under `torch.inference_mode()`,
tile by tile (see `tiling`), and keeps nothing between calls, so one restorer can serve many threads' requests.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from decrappify.backends import LoadedModel, Runner, TorchRunner, load_runner
from decrappify.errors import ConfigError, InputError
from decrappify.metrics import rgb_to_y
from decrappify.tiling import DEFAULT_MIN_TILE, restore_tiled
from decrappify.zoo import resolve_model

if TYPE_CHECKING:
    from decrappify.imageio import Picture

__all__ = ["Restorer", "keep_luminance", "restore_tiled"]

log = logging.getLogger(__name__)

DEFAULT_TILE = 512
#: Context (input pixels) around each tile, at least. Models that downsample a lot get 4 of their strides (128
#: for a ResNet U-Net): their receptive field is wide, and with 32 pixels the tiles visibly disagree.
MIN_TILE_OVERLAP = 32
#: Tasks whose output must keep the input's luminance (the model only adds colour).
LUMINANCE_TASKS = frozenset({"colorize"})


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
    ):
        self._runner: Runner = loaded.runner
        self.config: dict[str, Any] = dict(loaded.config)
        self.info: dict[str, Any] = dict(loaded.info)
        self.name = name
        self.task: str = str(self.info.get("task", "restore"))
        self.scale: int = int(loaded.runner.scale)
        if tile_overlap is None:
            tile_overlap = max(MIN_TILE_OVERLAP, 4 * loaded.runner.size_multiple)
        if tile < 0 or tile_overlap < 0:
            raise ConfigError(f"tile ({tile}) and tile overlap ({tile_overlap}) cannot be negative")
        self.tile, self.tile_overlap, self.min_tile = int(tile), int(tile_overlap), int(min_tile)

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
    ) -> Restorer:
        """Load a shipped model by name or a model file by path (`.safetensors`; `.onnx` with backend="onnx").

        `tile` is the core size in input pixels (0: whole picture); each model call sees at most
        `tile + 2 * tile_overlap` pixels a side; `tile_overlap=None` picks one from the model's stride.
        `threads` and `opt_level` apply to ONNX Runtime only.
        """
        path = resolve_model(name_or_path)
        loaded = load_runner(path, backend=backend, device=device, threads=threads, opt_level=opt_level)
        name = str(loaded.info.get("name") or path.stem)
        return cls(loaded, name=name, tile=tile, tile_overlap=tile_overlap)

    @property
    def backend(self) -> str:
        return "torch" if isinstance(self._runner, TorchRunner) else "onnx"

    @property
    def device(self) -> str:
        """Where the model runs: a torch device name, or "onnxruntime"."""
        return str(self._runner.device) if isinstance(self._runner, TorchRunner) else "onnxruntime"

    def restore_tensor(self, lq: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) float32 CPU tensor in [0, 1] -> (N, 3, h*s, w*s) on the CPU, clamped to [0, 1]."""
        with torch.inference_mode():
            pred = restore_tiled(
                self._runner,
                lq,
                scale=self.scale,
                tile=self.tile,
                overlap=self.tile_overlap,
                multiple=self._runner.size_multiple,
                min_tile=self.min_tile,
            )
            return pred.clamp_(0.0, 1.0)

    def restore_array(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 float array in [0, 1] -> (H*s) x (W*s) x 3 float32 in [0, 1]."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
            shape = getattr(rgb, "shape", type(rgb).__name__)
            raise InputError(None, f"expected an H x W x 3 image array, got {shape}")
        lq = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
        pred = self.restore_tensor(lq)[0].permute(1, 2, 0).numpy()
        if self.task in LUMINANCE_TASKS:
            pred = keep_luminance(rgb, pred)
        return np.ascontiguousarray(pred)

    def restore(self, picture: Picture) -> Picture:
        """A new Picture: restored colour, alpha resized to match; bit depth, ICC and EXIF untouched."""
        restored = picture.with_rgb(self.restore_array(picture.rgb))
        if self.task in LUMINANCE_TASKS and restored.grayscale:
            restored = dataclasses.replace(restored, grayscale=False)  # colour added: write it as colour
        return restored

    def __repr__(self) -> str:
        return (
            f"Restorer(name={self.name!r}, task={self.task!r}, scale={self.scale}, backend={self.backend!r})"
        )


def keep_luminance(source_rgb: np.ndarray, pred_rgb: np.ndarray) -> np.ndarray:
    """Colourisation hook: the prediction's colour (Cb, Cr) on the source's own luminance (BT.601 Y).

    A colourising model should add colour, not change detail or brightness; taking Y from the input makes that
    true by construction. The source is resized (bicubic) when the model also upscales.
    """
    source = source_rgb.astype(np.float32)
    if source.shape[:2] != pred_rgb.shape[:2]:
        tensor = torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1)[None]
        tensor = F.interpolate(tensor, size=pred_rgb.shape[:2], mode="bicubic", align_corners=False)
        source = tensor[0].permute(1, 2, 0).clamp(0, 1).numpy()
    # rgb_to_y is MATLAB's BT.601 (Y in 16..235 for 0..1 input); shift both by the same Y difference.
    delta = (rgb_to_y(source) - rgb_to_y(pred_rgb)) / 219.0
    return np.clip(pred_rgb + delta[..., None], 0.0, 1.0).astype(np.float32)
