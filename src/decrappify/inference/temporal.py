"""Temporal smoothing for video: each restored frame blended with the previous one, moved to match it.

A restoration model sees one frame at a time, so detail it invents (texture, the colour a colouriser picks, how
it reads a JPEG block) can change from one frame to the next even where the scene does not: flicker.
`TemporalSmoother` keeps the previous restored frame, moves it onto the current one along the optical flow
between the two input frames (OpenCV's DIS flow, computed at input size, where it is cheap), and blends:

    out = restored + strength * confidence * (warped_previous - restored)

`confidence` is near 1 where the flow explains the input (the previous input frame, moved the same way,
matches the current one) and near 0 where it does not (occlusions, cuts, fast motion), so moving edges do not
leave ghosts. The blend is recursive (the previous frame is itself smoothed), an exponential average along
motion paths. `docs/benchmarks/video.md` measures how much it lowers flicker and what it costs in PSNR.

OpenCV (`opencv-contrib-python-headless`, in the `video` and `bench` extras) is imported when one is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from decrappify.errors import ConfigError

#: Input-frame error (8-bit levels, after motion compensation) at which confidence falls to exp(-1).
CONFIDENCE_LEVELS = 6.0
DEFAULT_SMOOTHING = 0.5


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "temporal smoothing needs OpenCV: pip install 'decrappify[video]' (opencv-contrib-python-headless)"
        ) from None
    return cv2


def check_smoothing(value: float | None) -> float:
    """`value` as a float in [0, 1) (0: off); `ConfigError` otherwise."""
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError):
        number = -1.0
    if not 0.0 <= number < 1.0:
        raise ConfigError(f"temporal smoothing {value!r}: choose a number from 0 (off) to below 1")
    return number


@dataclass
class SmootherState:
    """What carries from one frame to the next (saved with a video's progress, so a resumed run goes on
    exactly): the previous input frame's luma (uint8, input size) and the previous output (float32)."""

    grey: np.ndarray
    output: np.ndarray


class TemporalSmoother:
    """Call it on each (input frame, restored frame) pair in order; see the module docstring."""

    def __init__(self, strength: float = DEFAULT_SMOOTHING, *, keep_luma: bool = False):
        """`keep_luma`: smooth the colour only and keep each restored frame's own luma (colourisation, whose
        output's luma is the input's by contract)."""
        self.strength = check_smoothing(strength)
        self.keep_luma = keep_luma
        self.cv2 = _cv2()
        self.flow = self.cv2.DISOpticalFlow_create(self.cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.state: SmootherState | None = None

    def reset(self) -> None:
        """Forget the previous frame (a new clip)."""
        self.state = None

    def __call__(self, lq: np.ndarray, restored: np.ndarray) -> np.ndarray:
        """`restored` (H' x W' x 3 float32 in [0, 1]) smoothed against the previous frame; `lq` is its input."""
        grey = _grey(lq)
        previous = self.state
        if previous is None or previous.grey.shape != grey.shape or previous.output.shape != restored.shape:
            self.state = SmootherState(grey, np.asarray(restored, dtype=np.float32))
            return self.state.output
        flow = self.flow.calc(grey, previous.grey, None)  # current -> previous, input pixels
        confidence = self._confidence(grey, previous.grey, flow)
        height, width = restored.shape[:2]
        warped = self._warp(previous.output, flow, (width, height))
        weight = self.cv2.resize(confidence, (width, height), interpolation=self.cv2.INTER_LINEAR)
        weight = (self.strength * weight)[..., None]
        smoothed = restored + weight * (warped - restored)
        if self.keep_luma:
            smoothed += (_luma(restored) - _luma(smoothed))[..., None]
        self.state = SmootherState(grey, np.clip(smoothed, 0.0, 1.0).astype(np.float32, copy=False))
        return self.state.output

    def _confidence(self, grey: np.ndarray, previous: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """exp(-(error / CONFIDENCE_LEVELS)^2) of the previous input moved onto the current one, eased by a
        small blur so that single noisy pixels neither gain nor lose trust."""
        moved = self._warp(previous.astype(np.float32), flow, (grey.shape[1], grey.shape[0]))
        error = np.abs(moved - grey.astype(np.float32))
        error = self.cv2.GaussianBlur(error, (5, 5), 1.0)
        return np.exp(-((error / CONFIDENCE_LEVELS) ** 2)).astype(np.float32)

    def _warp(self, image: np.ndarray, flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """`image` sampled at x + flow(x), with the flow (input pixels) resized and scaled to `size`."""
        width, height = size
        flow_height, flow_width = flow.shape[:2]
        if (flow_width, flow_height) != (width, height):
            flow = self.cv2.resize(flow, (width, height), interpolation=self.cv2.INTER_LINEAR)
            flow = flow * np.array([width / flow_width, height / flow_height], dtype=np.float32)
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        return self.cv2.remap(np.ascontiguousarray(image, dtype=np.float32), grid_x + flow[..., 0],
                              grid_y + flow[..., 1], self.cv2.INTER_LINEAR,
                              borderMode=self.cv2.BORDER_REPLICATE)  # fmt: skip


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, float32."""
    return np.asarray(rgb, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma as uint8 (what the flow is computed on)."""
    return np.clip(np.rint(_luma(rgb) * 255.0), 0, 255).astype(np.uint8)
