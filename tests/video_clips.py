"""Tiny test clips made on the spot: a BSDS500 photo seen by a static camera, with a patch of it moving across.

Skips the calling test when PyAV is missing, except in CI (`CI=true`), where that is a failure: CI installs the
`video` extra, so the video tests cannot silently stop running there.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BSDS_TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bsds500" / "train"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_av():
    """The `av` module, or skip (fail in CI)."""
    try:
        import av
    except ImportError:
        if IN_CI:
            pytest.fail("PyAV is not installed; CI must run the video tests (the [video] extra)")
        pytest.skip("PyAV is not installed (pip install 'decrappify[video]')", allow_module_level=True)
    return av


def background(width: int, height: int) -> np.ndarray:
    """A crop of a BSDS500 training photo (a seeded random texture where the data is absent), uint8."""
    photos = sorted(BSDS_TRAIN.glob("*.jpg")) if BSDS_TRAIN.is_dir() else []
    if photos:
        image = Image.open(photos[0]).convert("RGB")
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return np.asarray(image.crop((left, top, left + width, top + height)))
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def scene(width: int, height: int, frames: int, step: int = 2, vivid: bool = False) -> list[np.ndarray]:
    """`frames` views of a static background with a 12 px patch of it moving `step` pixels a frame; `vivid`
    tints its halves red and blue (a colour clip by any measure)."""
    base = background(width, height)
    if vivid:
        tints = np.where(np.arange(width)[None, :, None] < width // 2, [1.0, 0.25, 0.25], [0.25, 0.25, 1.0])
        base = np.clip(base * tints * 1.6, 0, 255).astype(np.uint8)
    patch = base[:12, -12:].copy()
    views = []
    for index in range(frames):
        frame = base.copy()
        x, y = 4 + step * index, height // 2 - 6
        frame[y : y + 12, x : x + 12] = patch
        views.append(frame)
    return views


def make_clip(
    path: Path,
    *,
    frames: int = 8,
    size: tuple[int, int] = (64, 48),
    fps: int = 24,
    codec: str = "libx264",
    rotation: int = 0,
    audio: bool = True,
    step: int = 2,
    vivid: bool = False,
) -> Path:
    """Write a clip (h264 by default, or "ffv1" lossless in .mkv) with a display rotation and an AAC track."""
    av = require_av()
    width, height = size
    options = {"movflags": "+faststart"} if path.suffix == ".mp4" else {}  # index first, as phones write it
    with av.open(str(path), mode="w", options=options) as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p" if codec == "libx264" else "yuv444p"
        if codec == "libx264":
            video.options = {"crf": "10"}
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=8000) if audio else None
        for index, rgb in enumerate(scene(width, height, frames, step, vivid)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            samples = 8000 * frames // fps
            tone = (0.1 * np.sin(np.arange(samples) * 0.2)).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 8000, 0
            for packet in sound.encode(chunk):
                container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path
