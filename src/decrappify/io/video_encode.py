"""Writing restored clips: encoded segments that survive an interruption, then one mux with the source's audio.

A restored clip is encoded in segments (`SegmentWriter`), each a NUT file that starts with a keyframe, so that an
interrupted run loses at most the segment it was writing. NUT files do not keep the encoder's timestamps as they
were (the muxer shifts them), so each segment records its packets' own (pts, dts) beside it. `mux_clip` then
copies every segment's packets, with those timestamps, and the source's audio packets (copied, never
re-encoded) into the final container, interleaved by time, with the source's display matrix (rotation): the
result has the source's frame count, timestamps, rotation and audio.

PyAV (`decrappify[video]`) is imported only when a clip is written.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from decrappify.errors import ConfigError, InputError, OutputError
from decrappify.io.video import ColourTags, VideoInfo, open_input, require_av

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoCodec:
    """An encoder and how decrappify drives it. `crf`: the default constant-quality value (lower: better and
    larger; None for a lossless codec); `crf_range`: the values the encoder takes."""

    name: str
    encoder: str
    pix_fmt: str
    deep_pix_fmt: str  # for sources with more than 8 bits a component
    crf: int | None
    crf_range: tuple[int, int]
    options: dict[str, str] = field(default_factory=dict)
    odd_size_pix_fmt: str | None = None  # 4:2:0 needs even sides in this encoder; used when a side is odd


CODECS: dict[str, VideoCodec] = {
    "h264": VideoCodec("h264", "libx264", "yuv420p", "yuv420p10le", 18, (0, 51), {"preset": "medium"}, "yuv444p"),
    "h265": VideoCodec("h265", "libx265", "yuv420p", "yuv420p10le", 20, (0, 51),
                       {"preset": "medium", "x265-params": "log-level=error"}, "yuv444p"),
    "vp9": VideoCodec("vp9", "libvpx-vp9", "yuv420p", "yuv420p", 30, (0, 63),
                      {"b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}),
    "ffv1": VideoCodec("ffv1", "ffv1", "yuv444p", "yuv444p16le", None, (0, 0), {"level": "3"}),
}  # fmt: skip
DEFAULT_CODEC = "h264"
#: Output containers and the codecs each is written with; a source in another container is written as .mkv.
CONTAINERS: dict[str, tuple[str, ...]] = {
    ".mp4": ("h264", "h265", "vp9"),
    ".m4v": ("h264", "h265"),
    ".mov": ("h264", "h265"),
    ".mkv": ("h264", "h265", "vp9", "ffv1"),
    ".webm": ("vp9",),
}
FALLBACK_CONTAINER = ".mkv"
_FORMAT_NAMES = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
_SEGMENT_FORMAT = "nut"


def output_suffix(source: Path, requested: str | None = None) -> str:
    """The container a restored clip is written in: `requested` (".mp4", "mkv"), else the source's own when it
    is one of `CONTAINERS`, else Matroska, which holds any audio codec the source may carry."""
    if requested:
        suffix = requested if requested.startswith(".") else f".{requested}"
        if suffix.lower() not in CONTAINERS:
            raise ConfigError(f"video container '{requested}': choose one of {', '.join(CONTAINERS)}")
        return suffix.lower()
    suffix = source.suffix.lower()
    return suffix if suffix in CONTAINERS else FALLBACK_CONTAINER


def choose_codec(name: str | None, suffix: str) -> VideoCodec:
    """The codec for a container: `name`, or h264 (vp9 for .webm); `ConfigError` when the container cannot
    hold it, listing the codecs it can."""
    allowed = CONTAINERS[suffix]
    name = name or (DEFAULT_CODEC if DEFAULT_CODEC in allowed else allowed[0])
    if name not in CODECS:
        raise ConfigError(f"unknown video codec '{name}'; choose one of: {', '.join(CODECS)}")
    if name not in allowed:
        raise ConfigError(f"a {suffix} file cannot hold {name} video; choose one of: {', '.join(allowed)}")
    return CODECS[name]


def check_crf(codec: VideoCodec, crf: int | None) -> int | None:
    """The quality value to encode with: `crf`, else the codec's default; `ConfigError` out of its range."""
    if codec.crf is None:
        if crf is not None:
            log.warning("%s is lossless: --crf %s is ignored", codec.name, crf)
        return None
    if crf is None:
        return codec.crf
    low, high = codec.crf_range
    if not low <= crf <= high:
        raise ConfigError(f"--crf {crf}: {codec.name} takes {low}..{high} (lower is better; default {codec.crf})")
    return crf


@dataclass(frozen=True)
class EncodeSpec:
    """Everything an encoder session needs; identical for every segment of a clip, so that their packets form
    one stream (the same parameter sets)."""

    codec: VideoCodec
    crf: int | None
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    bit_depth: int = 8
    colour: ColourTags = field(default_factory=ColourTags)

    @property
    def pix_fmt(self) -> str:
        deep = self.bit_depth > 8
        if (self.width % 2 or self.height % 2) and self.codec.odd_size_pix_fmt and not deep:
            return self.codec.odd_size_pix_fmt
        return self.codec.deep_pix_fmt if deep else self.codec.pix_fmt

    @property
    def frame_step(self) -> int:
        """One frame's duration in `time_base` units."""
        return max(1, round(1 / (self.fps * self.time_base)))

    def encoder_options(self) -> dict[str, str]:
        options = dict(self.codec.options)
        if self.crf is not None:
            options["crf"] = str(self.crf)
        return options


class SegmentWriter:
    """One segment: frames in, encoded packets to a NUT file, their own timestamps kept in `timestamps`.

    Written under `path` + ".part" and renamed by `close`, so a segment under its final name is whole.
    """

    def __init__(self, path: Path, spec: EncodeSpec):
        self.av = require_av()
        self.path, self.spec = Path(path), spec
        self.partial = self.path.with_name(self.path.name + ".part")
        self.timestamps: list[tuple[int, int, int]] = []  # (pts, dts, duration) of each packet
        self.frames = 0
        try:
            self.container = self.av.open(str(self.partial), mode="w", format=_SEGMENT_FORMAT)
            self.stream = self.container.add_stream(spec.codec.encoder, rate=spec.fps,
                                                    options=spec.encoder_options())  # fmt: skip
        except (self.av.FFmpegError, OSError) as error:
            raise OutputError(self.path, f"cannot start the {spec.codec.encoder} encoder: {error}") from None
        context = self.stream.codec_context
        self.stream.width, self.stream.height, self.stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
        self.stream.time_base = context.time_base = spec.time_base
        for name, value in vars(spec.colour).items():
            if value not in (0, 2):  # 0/2: unspecified; the encoder's own default stands
                setattr(context, name, value)

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one H x W x 3 uint8 (or uint16 for deep sources) frame shown at `pts` (spec.time_base)."""
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=_rgb_format(rgb))
        colour = self.spec.colour
        frame = frame.reformat(
            format=self.spec.pix_fmt,
            dst_colorspace=colour.colorspace if colour.colorspace not in (0, 2) else None,
            dst_color_range=colour.color_range or None,
        )
        frame.pts, frame.time_base = int(pts), self.spec.time_base
        self._mux(self.stream.encode(frame))
        self.frames += 1

    def _mux(self, packets: Sequence[Any]) -> None:
        for packet in packets:
            pts = int(packet.pts) if packet.pts is not None else None
            dts = int(packet.dts) if packet.dts is not None else pts
            duration = int(packet.duration or 0) or self.spec.frame_step
            self.timestamps.append((pts if pts is not None else dts, dts, duration))
            self.container.mux(packet)

    def close(self) -> Path:
        """Flush the encoder, close the file and give it its final name."""
        self._mux(self.stream.encode(None))
        self.container.close()
        with open(self.partial, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the segment being written (an error, or Ctrl-C during the flush)."""
        with contextlib.suppress(Exception):  # the encoder may be in any state; the file is removed anyway
            self.container.close()
        self.partial.unlink(missing_ok=True)


def _rgb_format(rgb: np.ndarray) -> str:
    return "rgb24" if rgb.dtype == np.uint8 else "rgb48le"


@dataclass(frozen=True)
class Segment:
    """A finished segment file and its packets' (pts, dts, duration), in the clip's time base."""

    path: Path
    timestamps: tuple[tuple[int, int, int], ...]


def mux_clip(path: Path, suffix: str, segments: Sequence[Segment], info: VideoInfo, spec: EncodeSpec) -> None:
    """Write the final clip to `path` (a temporary from `io.atomic.atomic_write_path`; the format comes from
    `suffix`): the segments' video packets with their timestamps, the source's display
    matrix and its audio streams copied, interleaved by time. `OutputError` when the container cannot hold
    one of the source's audio codecs (checked before anything is written: choose another container)."""
    av = require_av()
    options = {"movflags": "+faststart"} if _FORMAT_NAMES[suffix] in ("mp4", "mov") else {}
    with open_input(segments[0].path) as template, open_input(info.path) as source:
        out = av.open(str(path), mode="w", format=_FORMAT_NAMES[suffix], options=options)
        try:
            _check_audio(out, info, suffix)
            video = out.add_stream_from_template(template.streams.video[0])
            video.time_base = spec.time_base
            if info.display_matrix is not None:
                video.set_display_matrix(list(info.display_matrix))
            audio = {track.index: out.add_stream_from_template(source.streams[track.index]) for track in info.audio}
            packets = _interleave(_video_packets(segments, spec.time_base), _audio_packets(source, info))
            for number, packet in packets:
                packet.stream = video if number == 0 else audio[packet.stream.index]
                out.mux(packet)
        except av.FFmpegError as error:
            raise OutputError(path, f"cannot write the clip: {error}") from None
        finally:
            out.close()


def _check_audio(out: Any, info: VideoInfo, suffix: str) -> None:
    supported = out.supported_codecs
    for track in info.audio:
        if track.codec not in supported:
            fits = [other for other in CONTAINERS if other != suffix]
            raise InputError(
                info.path,
                f"its {track.codec} audio cannot be copied into a {suffix} file; choose another container "
                f"({', '.join(fits)}) with --video-format",
            )


def _video_packets(segments: Sequence[Segment], time_base: Fraction) -> Iterator[tuple[Fraction, Any]]:
    """Every segment's packets with their recorded pts and durations, and decode times for the whole clip."""
    dts = iter(decode_times([pts for segment in segments for pts, _, _ in segment.timestamps]))
    for segment in segments:
        with open_input(segment.path) as container:
            count = 0
            for packet in container.demux(container.streams.video[0]):
                if not packet.size:
                    continue
                if count >= len(segment.timestamps):
                    raise InputError(segment.path, f"holds more packets than its record's {count}")
                pts, _, duration = segment.timestamps[count]
                packet.pts, packet.dts, packet.time_base = pts, next(dts), time_base
                packet.duration = duration
                count += 1
                yield Fraction(packet.dts) * time_base, packet
            if count != len(segment.timestamps):
                raise InputError(segment.path, f"holds {count} packets, its record {len(segment.timestamps)}")


def decode_times(pts: Sequence[int]) -> list[int]:
    """Decode timestamps for packets in decode order with these presentation timestamps (all distinct).

    Each segment's encoder starts its own B-frame delay (a short last segment may have none), so the encoders'
    decode times jump at the joins, and MP4 turns decode-time steps into frame durations. Instead the whole
    clip gets one delay of `d` packets: packet i decodes at the i - d th presentation time (extrapolated by
    one frame each below the first), the smallest `d` that decodes every packet no later than it is shown.
    """
    ordered = sorted(pts)
    rank = {value: position for position, value in enumerate(ordered)}
    delay = max([0, *(index - rank[value] for index, value in enumerate(pts))])
    step = ordered[1] - ordered[0] if len(ordered) > 1 else 1
    return [ordered[i - delay] if i >= delay else ordered[0] - (delay - i) * step for i in range(len(pts))]


def _audio_packets(source: Any, info: VideoInfo) -> Iterator[tuple[Fraction, Any]]:
    if not info.audio:
        return
    streams = [source.streams[track.index] for track in info.audio]
    for packet in source.demux(streams):
        if packet.size == 0 or packet.dts is None:
            continue
        yield Fraction(packet.dts) * packet.time_base, packet


def _interleave(*streams: Iterator[tuple[Fraction, Any]]) -> Iterator[tuple[int, Any]]:
    """(stream number, packet) of several time-ordered packet streams, merged in time order (what players
    read best); ties go to the earlier stream."""
    tagged = [_tagged(number, stream) for number, stream in enumerate(streams)]
    for _, number, packet in heapq.merge(*tagged, key=lambda item: (item[0], item[1])):
        yield number, packet


def _tagged(number: int, stream: Iterator[tuple[Fraction, Any]]) -> Iterator[tuple[Fraction, int, Any]]:
    for when, packet in stream:
        yield when, number, packet
