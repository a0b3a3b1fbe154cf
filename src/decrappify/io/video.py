"""Reading video files: what a clip holds (`probe_video`) and its frames, one at a time (`iter_frames`).

Decoding goes through PyAV (the `av` package, which bundles FFmpeg: no system ffmpeg is needed), an optional
dependency (`decrappify[video]`) imported only when a video is opened. Frames are decoded as a stream, so memory
does not grow with the clip's length. Every failure (not a video, a truncated file, a codec this FFmpeg cannot
decode) is an `InputError` naming the file; the file is only ever opened for reading.

Frames come in their stored orientation: a phone clip filmed upright is stored sideways with a display rotation
(FFmpeg's display matrix), which `VideoInfo.display_matrix` keeps so that the restored clip carries it too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from decrappify.errors import ConfigError, InputError
from decrappify.io.checks import short_reason, too_large

log = logging.getLogger(__name__)

#: Suffixes read as videos by `restore` (any file named explicitly is still tried as a picture otherwise).
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv",
     ".3gp", ".ogv", ".nut"}
)  # fmt: skip
#: The rate assumed when a stream states none (rare: raw streams); only used to fill missing timestamps.
FALLBACK_FPS = Fraction(25)
_DISPLAY_MATRIX = "DISPLAYMATRIX"


def require_av() -> ModuleType:
    """The `av` module, or a `ConfigError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise ConfigError(
            "videos need PyAV, which is not installed: pip install 'decrappify[video]'"
        ) from None
    return av


def av_available() -> bool:
    """Whether PyAV is installed (without importing it)."""
    return importlib.util.find_spec("av") is not None


def is_video_path(path: str | Path) -> bool:
    """True when the file's suffix is a video container's (`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream, copied as it is into a restored clip."""

    index: int
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class ColourTags:
    """FFmpeg's colour description of a stream (its enum values; 2 means unspecified), kept on the output."""

    colorspace: int = 2
    color_range: int = 0
    color_primaries: int = 2
    color_trc: int = 2


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` read from a clip's header and its first frame.

    `width` x `height` is the stored frame size (before the display rotation); `frames` is the count the
    container states, or None when it states none (then `expected_frames` estimates it from the duration);
    `rotation` is the display rotation in degrees counter-clockwise and `display_matrix` the exact matrix
    (flips included), None when there is none.
    """

    path: Path
    container: str
    codec: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int | None
    duration_s: float
    bit_depth: int = 8
    rotation: int = 0
    display_matrix: tuple[int, ...] | None = None
    colour: ColourTags = field(default_factory=ColourTags)
    audio: tuple[AudioTrack, ...] = ()
    dropped_streams: tuple[str, ...] = ()  # subtitle and data streams, which are not copied

    @property
    def expected_frames(self) -> int | None:
        """The stated frame count, else duration x rate rounded; None when neither is known."""
        if self.frames:
            return self.frames
        if self.duration_s > 0:
            return max(1, round(self.duration_s * float(self.fps)))
        return None

    @property
    def frame_step(self) -> int:
        """One frame's duration in `time_base` units (at least 1), for frames that come without a timestamp."""
        return max(1, round(1 / (self.fps * self.time_base)))

    def describe(self) -> str:
        """One line: `clip.mp4: 48 frames at 24 fps, 64 x 48 h264, rotation 90, audio aac 44100 Hz 2 ch`."""
        frames = f"{self.frames} frames" if self.frames else f"~{self.expected_frames or '?'} frames"
        parts = [f"{frames} at {float(self.fps):.4g} fps, {self.width} x {self.height} {self.codec}"]
        if self.rotation:
            parts.append(f"rotation {self.rotation}")
        audio = "; ".join(f"{a.codec} {a.sample_rate} Hz {a.channels} ch" for a in self.audio)
        parts.append(f"audio {audio}" if audio else "no audio")
        return f"{self.path.name}: " + ", ".join(parts)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its position, its timestamp (`VideoInfo.time_base` units) and its pixels.

    `rgb` is H x W x 3, uint8 for 8-bit sources and uint16 for deeper ones (`VideoInfo.bit_depth` > 8).
    """

    index: int
    pts: int
    rgb: np.ndarray

    def as_float(self) -> np.ndarray:
        """The pixels as float32 in [0, 1]."""
        top = 255.0 if self.rgb.dtype == np.uint8 else 65535.0
        return self.rgb.astype(np.float32) / np.float32(top)


@contextlib.contextmanager
def open_input(path: str | Path) -> Iterator[Any]:
    """An opened PyAV input container; every FFmpeg or OS failure becomes an `InputError` naming `path`."""
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "not a file")
    try:
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        reason = f"not a readable video (not a video, or truncated or damaged): {_ffmpeg_reason(error)}"
        raise InputError(path, reason) from None
    try:
        yield container
    finally:
        container.close()


def probe_video(path: str | Path, *, max_pixels: int | None = None) -> VideoInfo:
    """Read a clip's streams and decode its first frame; `InputError` naming the file when it is not a video
    this FFmpeg decodes, is truncated, has no frame, or has frames over `max_pixels` (None: no limit)."""
    path = Path(path)
    with open_input(path) as container:
        if not container.streams.video:
            raise InputError(path, "not a video: it has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise InputError(path, "unsupported video codec: this FFmpeg has no decoder for it")
        _check_not_truncated(path, container)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if max_pixels is not None and width * height > max_pixels:
            raise too_large(path, (width, height), max_pixels)
        first = _first_frame(path, container, stream)
        info = _info(path, container, stream, first)
    if info.width * info.height <= 0:
        raise InputError(path, f"video frames have no pixels ({info.width} x {info.height})")
    return info


def _first_frame(path: Path, container: Any, stream: Any) -> Any:
    av = require_av()
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as error:
        codec = getattr(stream.codec_context, "name", "unknown codec")
        raise InputError(path, f"cannot decode its video ({codec}): {_ffmpeg_reason(error)}") from None
    raise InputError(path, "its video stream holds no frame (empty or truncated)")


def _info(path: Path, container: Any, stream: Any, first: Any) -> VideoInfo:
    time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate or FALLBACK_FPS
    duration = float(stream.duration * time_base) if stream.duration else 0.0
    if not duration and container.duration:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    matrix = _display_matrix(first)
    audio, dropped = [], []
    for other in container.streams:
        if other.type == "audio" and other.codec_context is not None:
            context = other.codec_context
            layout = getattr(context, "layout", None)
            channels = int(getattr(context, "channels", 0) or getattr(layout, "nb_channels", 0))
            audio.append(AudioTrack(other.index, context.name, int(context.sample_rate or 0), channels))
        elif other.type == "audio":
            dropped.append(f"audio stream {other.index} (a codec this FFmpeg does not know)")
        elif other.type not in ("video", "audio"):
            dropped.append(f"{other.type} stream {other.index}")
    if len(container.streams.video) > 1:
        dropped.extend(f"video stream {s.index}" for s in container.streams.video[1:])
    return VideoInfo(
        path=path,
        container=str(container.format.name),
        codec=str(stream.codec_context.name),
        width=int(first.width),
        height=int(first.height),
        fps=Fraction(fps).limit_denominator(1_000_000),
        time_base=time_base,
        frames=int(stream.frames) or None,
        duration_s=duration,
        bit_depth=_bit_depth(first.format),
        rotation=int(first.rotation or 0) % 360 if matrix is not None else 0,
        display_matrix=matrix,
        colour=ColourTags(int(first.colorspace), int(first.color_range), int(first.color_primaries),
                          int(first.color_trc)),  # fmt: skip
        audio=tuple(audio),
        dropped_streams=tuple(dropped),
    )


def _display_matrix(frame: Any) -> tuple[int, ...] | None:
    """The frame's display matrix (nine int32, FFmpeg's layout), or None."""
    for side_data in frame.side_data:
        if str(side_data.type).rsplit(".", 1)[-1] == _DISPLAY_MATRIX:
            data = bytes(side_data)
            if len(data) == 36:
                matrix = struct.unpack("<9i", data)
                identity = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
                return None if matrix == identity else matrix
    return None


def _bit_depth(video_format: Any) -> int:
    """Bits per component of a pixel format (8 for yuv420p, 10 for yuv420p10le)."""
    components = getattr(video_format, "components", ())
    depths = [int(component.bits) for component in components if getattr(component, "bits", 0)]
    return max(depths) if depths else 8


def _check_not_truncated(path: Path, container: Any) -> None:
    """`InputError` when the container's own index points past the end of the file (a cut-off download)."""
    size = path.stat().st_size
    end = 0
    for stream in container.streams:
        with contextlib.suppress(AttributeError, TypeError):
            entries = stream.index_entries
            if entries:
                last = entries[len(entries) - 1]
                end = max(end, int(last.pos) + int(last.size))
    if end > size:
        raise InputError(path, f"truncated: its index needs {end:,} bytes but the file has {size:,}")


def iter_frames(info: VideoInfo, *, start: int = 0) -> Iterator[Frame]:
    """The clip's frames in display order from index `start` (those before are decoded and dropped, which is
    exact where seeking by timestamp is not), one at a time.

    Timestamps are the stream's own, made strictly increasing (a frame without one, or a repeated one, gets the
    previous plus one frame's duration) so that any encoder accepts them. `InputError` when decoding fails.
    """
    av = require_av()
    rgb_format = "rgb24" if info.bit_depth <= 8 else "rgb48le"
    step = info.frame_step
    last_pts: int | None = None
    index = 0
    with open_input(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else (None if last_pts is None else last_pts + step)
                pts = 0 if pts is None else int(pts)
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + step
                last_pts = pts
                if index >= start:
                    yield Frame(index, pts, frame.to_ndarray(format=rgb_format))
                index += 1
        except av.FFmpegError as error:
            raise InputError(info.path, f"cannot decode frame {index + 1}: {_ffmpeg_reason(error)}") from None
    if index < start:
        raise InputError(info.path, f"has {index} frames, fewer than the {start} already restored")
    if info.frames and index < info.frames:
        raise InputError(info.path, f"truncated or damaged: only {index} of its {info.frames} frames decode")


def _ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's own words without the file name PyAV appends ("Invalid data found when processing input")."""
    reason = getattr(error, "strerror", None) or short_reason(error)
    return str(reason).rstrip(".")
