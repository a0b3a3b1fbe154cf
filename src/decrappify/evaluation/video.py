"""Scoring methods on a video: fidelity per frame, and flicker between frames.

`evaluate_video(clip, task, methods)` decodes a clean clip, degrades every frame with the task's preset and the
same random stream (`rng_for(seed, "video")`, drawn afresh for each frame), so that what the preset draws at
random (the watermark's text, place and colour, the JPEG quality) stays the same from frame to frame, as in a
re-encoded video; then it runs every method frame by frame and scores:

- PSNR_Y and SSIM_Y per frame against the clean frame (means over the clip), as `evaluate` does for pictures;
- `flicker`: the mean absolute difference between consecutive output frames (over R, G and B, in 8-bit levels, so
  that a colouriser's colour changing from frame to frame counts), minus the same for the clean frames. On a
  static-camera clip the clean frames change only where something moves, so what is left is change the method
  added; 0 is as steady as the truth, lower is steadier (below 0: steadier than the truth, e.g. smeared motion).

Methods are `evaluate`'s (the baseline first, then models), each also run with temporal smoothing when
`smoothing` is given (`inference.temporal.TemporalSmoother`, a row named "MODEL +smoothing S").
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from decrappify.data import degrade
from decrappify.errors import InputError
from decrappify.evaluation import metrics
from decrappify.evaluation.methods import Method, create_methods, to_uint8
from decrappify.inference.temporal import TemporalSmoother, check_smoothing
from decrappify.io.video import iter_frames, probe_video
from decrappify.tasks import check_task, is_colour_task

PSNR_CAP = 100.0
#: The key every frame's random stream is drawn from: the same for every frame of a clip.
FRAME_KEY = "video"


class FlickerMeter:
    """Accumulates the mean absolute difference between consecutive frames (R, G, B; 8-bit levels)."""

    def __init__(self, border: int = 0):
        self.border = border
        self.previous: np.ndarray | None = None
        self.total, self.count = 0.0, 0

    def add(self, rgb: np.ndarray) -> None:
        values = metrics.crop_border(np.asarray(rgb, dtype=np.float64) * 255.0, self.border)
        if self.previous is not None:
            self.total += float(np.mean(np.abs(values - self.previous)))
            self.count += 1
        self.previous = values

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None


def flicker(frames: Sequence[np.ndarray], clean: Sequence[np.ndarray], border: int = 0) -> float:
    """Mean |frame_t - frame_t-1| over consecutive `frames` (R, G, B), minus the same over the `clean` frames
    (8-bit levels);
    H x W x 3 float arrays in [0, 1]. `InputError` for fewer than two frames."""
    if len(frames) < 2 or len(frames) != len(clean):
        counts = f"{len(frames)} and {len(clean)}"
        raise InputError(None, f"flicker needs two or more frames and as many clean ones, got {counts}")
    made, truth = FlickerMeter(border), FlickerMeter(border)
    for frame, reference in zip(frames, clean, strict=True):
        made.add(frame)
        truth.add(reference)
    return float(made.value - truth.value)


@dataclass
class VideoRow:
    """One method's scores on a clip (means over its frames; `seconds` is the total)."""

    method: str
    psnr_y: float = 0.0
    ssim_y: float = 0.0
    flicker: float | None = None
    seconds: float = 0.0


@dataclass
class VideoEvaluation:
    """`evaluate_video`'s result: one row per method, plus the clean clip's own frame-to-frame change."""

    task: str
    clip: str
    scale: int
    frames: int
    seed: int
    truth_change: float | None
    rows: list[VideoRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "clip": self.clip, "scale": self.scale, "frames": self.frames, "seed": self.seed,
            "truth_change": self.truth_change, "results": [asdict(row) for row in self.rows],
        }  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def to_markdown(self) -> str:
        change = f"{self.truth_change:.3f}" if self.truth_change is not None else "n/a"
        lines = [
            f"{self.clip}: {self.frames} frames, task {self.task} (x{self.scale}), seed {self.seed}; the clean clip "
            f"changes {change} levels a frame",
            "",
            "| method | PSNR_Y | SSIM_Y | flicker | frames/s |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in self.rows:
            rate = self.frames / row.seconds if row.seconds else 0.0
            shown = f"{row.flicker:+.3f}" if row.flicker is not None else "n/a"
            lines.append(f"| {row.method} | {row.psnr_y:.2f} | {row.ssim_y:.4f} | {shown} | {rate:.1f} |")
        return "\n".join(lines) + "\n"


class _Smoothed:
    """A method followed by temporal smoothing (stateful: one instance per clip)."""

    def __init__(self, method: Method, strength: float, keep_luma: bool = False):
        self.method, self.smoother = method, TemporalSmoother(strength, keep_luma=keep_luma)
        self.name, self.scale = f"{method.name} +smoothing {strength:g}", method.scale

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray:
        return self.smoother(rgb_lq, self.method(rgb_lq))


def evaluate_video(
    clip: str | Path,
    task: str,
    methods: Sequence[str | Method] = (),
    *,
    seed: int = 0,
    smoothing: float = 0.0,
    max_frames: int | None = None,
    ensemble: str | None = None,
    precision: str = "fp32",
    progress: bool = False,
) -> VideoEvaluation:
    """Degrade every frame of the clean `clip` with `task`'s preset and score the baseline and `methods` (see
    the module docstring); `smoothing` > 0 adds a smoothed row per model. `InputError` for a clip that is not
    a readable video or has fewer than two frames."""
    pipeline = degrade.create_preset(check_task(task))
    scale = int(pipeline.scale)
    smoothing = check_smoothing(smoothing)
    info = probe_video(clip)
    chosen: list[Method] = create_methods(methods, scale, ensemble=ensemble, precision=precision)
    if smoothing:
        chosen += [_Smoothed(method, smoothing, is_colour_task(task)) for method in chosen[1:]]
    rows = {method.name: VideoRow(method.name) for method in chosen}
    meters = {method.name: FlickerMeter(scale) for method in chosen}
    truth = FlickerMeter(scale)
    count = 0
    frames = iter_frames(info)
    total = min(info.expected_frames or 0, max_frames or 10**9) or None
    for frame in tqdm(frames, total=total, desc=f"evaluate {Path(clip).name}", unit="frame", disable=not progress):
        if max_frames is not None and count >= max_frames:
            break
        hq, lq = _degrade_frame(frame.rgb, pipeline, seed, scale)
        truth.add(hq)
        for method in chosen:
            started = time.perf_counter()
            out = method(lq)
            rows[method.name].seconds += time.perf_counter() - started
            pred = to_uint8(out).astype(np.float32) / 255.0
            if pred.shape != hq.shape:
                raise InputError(Path(clip), f"{method.name} returned {pred.shape}, expected {hq.shape}")
            rows[method.name].psnr_y += min(metrics.psnr_y(pred, hq, scale), PSNR_CAP)
            rows[method.name].ssim_y += metrics.ssim_y(pred, hq, scale)
            meters[method.name].add(pred)
        count += 1
    if count < 2:
        raise InputError(Path(clip), f"has {count} frame(s); flicker needs at least two")
    for name, row in rows.items():
        row.psnr_y, row.ssim_y = row.psnr_y / count, row.ssim_y / count
        row.flicker = meters[name].value - truth.value
    return VideoEvaluation(task, Path(clip).name, scale, count, seed, truth.value, list(rows.values()))


def _degrade_frame(rgb: np.ndarray, pipeline: degrade.Pipeline, seed: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(clean frame cropped to a multiple of `scale`, its degraded version), float32 in [0, 1]."""
    image = Image.fromarray(rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8))
    clean = degrade.modcrop(image, scale)
    degraded = pipeline(clean, degrade.rng_for(seed, FRAME_KEY)).image.convert("RGB")
    return np.asarray(clean, dtype=np.float32) / 255.0, np.asarray(degraded, dtype=np.float32) / 255.0
