"""Restoring a video: frames decoded one at a time, restored, encoded in segments, then muxed with the audio.

`restore_video(restorer, "clip.mp4", "out/clip.mp4")` keeps the clip's frame count, timestamps (so its frame
rate, constant or variable), display rotation and audio (copied packet for packet, never re-encoded). Memory
does not grow with the clip: one decoded frame, its restored version and the encoder's look-ahead are held.

Resuming: the work happens in a hidden folder beside the result, `.clip.mp4.partial/`: encoded segments (each a
few seconds of video), `progress.json` (the source's identity, the options, the finished segments) and, with
temporal smoothing, the smoother's state. A run that stops (Ctrl-C, a crash, a power cut) keeps every finished
segment (Ctrl-C also finishes the one being written); run the same command again and it continues from there.
Only when every frame is done are the segments and the audio muxed into the result, written atomically, and
the folder removed. A partial run with other options or another source is never mixed in: it is an
`OutputError` unless `overwrite` (then it starts over).

`restore_video_frames` writes PNG frames into a folder instead (`--frames-dir`), resumable the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from decrappify.errors import DecrappifyError, InputError, OutputError
from decrappify.inference.colour_check import COLOUR_PHOTO_SPREAD, has_real_colour
from decrappify.inference.memory import DEFAULT_MAX_OUTPUT_PIXELS
from decrappify.inference.outscale import check_output, check_outscale, restore_array_at, scaled_size
from decrappify.inference.restorer import Restorer
from decrappify.inference.temporal import SmootherState, TemporalSmoother, check_smoothing
from decrappify.inference.video_progress import (
    MANIFEST,
    STATE,
    FrameSink,
    Progress,
    SegmentSink,
    load_state,
)
from decrappify.io.atomic import atomic_write_path, atomic_write_text
from decrappify.io.video import Frame, VideoInfo, iter_frames, probe_video
from decrappify.io.video_encode import (
    EncodeSpec,
    Segment,
    check_crf,
    choose_codec,
    mux_clip,
    output_suffix,
)
from decrappify.tasks import is_colour_task

log = logging.getLogger(__name__)

FRAMES_MANIFEST = "frames.json"
FORMAT_VERSION = 1
ProgressCallback = Callable[[int, "int | None"], None]


class VideoCancelled(DecrappifyError):
    """The caller's `cancel` event was set; the finished segments are kept for a later resume."""


@dataclass(frozen=True)
class VideoOptions:
    """How a clip is restored and written. `codec` None: h264 (vp9 for .webm); `crf` None: the codec's default;
    `container` None: the target's suffix; `outscale` None: the model's scale; `smoothing` 0: off (else the
    `TemporalSmoother` strength); segments close after `segment_frames` frames or `segment_seconds` of work."""

    codec: str | None = None
    crf: int | None = None
    container: str | None = None
    outscale: float | None = None
    shrink_first: bool = False
    smoothing: float = 0.0
    force: bool = False  # colourise a clip that is already in colour
    segment_frames: int = 240
    segment_seconds: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "outscale", check_outscale(self.outscale))
        object.__setattr__(self, "smoothing", check_smoothing(self.smoothing))


class FramePipeline:
    """One frame in, its restored version out: the model, the output scale, then temporal smoothing."""

    def __init__(self, restorer: Restorer, *, outscale: float | None = None, shrink_first: bool = False,
                 smoothing: float = 0.0, bit_depth: int = 8):  # fmt: skip
        self.restorer, self.outscale, self.shrink_first = restorer, outscale, shrink_first
        colour = is_colour_task(restorer.task)  # colourisation keeps the input's luma: only colour is smoothed
        self.smoother = TemporalSmoother(smoothing, keep_luma=colour) if smoothing else None
        self.levels = 255 if bit_depth <= 8 else 65535  # the grid a colourised frame's luma is exact on

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 float32 in [0, 1] -> the restored frame, float32 in [0, 1]."""
        out = restore_array_at(self.restorer, rgb, self.outscale, shrink_first=self.shrink_first,
                               levels=self.levels)  # fmt: skip
        return self.smoother(rgb, out) if self.smoother is not None else out


def output_frame_size(restorer: Restorer, info: VideoInfo, options: VideoOptions) -> tuple[int, int]:
    """The restored clip's frame size (stored orientation)."""
    if options.outscale is None:
        return info.width * restorer.scale, info.height * restorer.scale
    return scaled_size(info.width, info.height, options.outscale)


def restore_video(
    restorer: Restorer,
    source: str | Path,
    target: str | Path,
    *,
    options: VideoOptions = VideoOptions(),
    overwrite: bool = False,
    max_pixels: int | None = None,
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
    max_memory_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Restore `source` into the video file `target` (see the module docstring); returns `target`.

    `InputError` names the source when it is not a video this FFmpeg decodes, is truncated, or is too large for
    the limits (checked before any frame is restored); `OutputError` when `target` exists (without `overwrite`)
    or is the source. `on_progress(done, total)` after each frame (`total` None when the clip does not say).
    """
    source, target = Path(source), Path(target)
    suffix = output_suffix(target, options.container or target.suffix)
    codec = choose_codec(options.codec, suffix)
    crf = check_crf(codec, options.crf)
    info = _prepare(restorer, source, target, options, overwrite, max_pixels, max_output_pixels, max_memory_bytes)
    width, height = output_frame_size(restorer, info, options)
    spec = EncodeSpec(codec, crf, width, height, info.fps, info.time_base, 16 if info.bit_depth > 8 else 8,
                      info.colour)  # fmt: skip
    work = target.with_name(f".{target.name}.partial")
    identity = _identity(restorer, source, options, {"codec": codec.name, "crf": crf, "container": suffix})
    progress = Progress.open(work, identity, overwrite)
    sink = SegmentSink(work, spec, progress, options.segment_frames, options.segment_seconds)
    _run(restorer, info, options, progress, sink, on_progress, cancel)
    segments = [Segment(work / entry["file"], tuple(map(tuple, entry["timestamps"]))) for entry in progress.segments]
    if not segments:
        raise InputError(source, "no frame was restored")
    atomic_write_path(target, lambda temp: mux_clip(temp, suffix, segments, info, spec), overwrite=overwrite)
    shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %s (%d frames)", target, progress.done)
    return target


def restore_video_frames(
    restorer: Restorer,
    source: str | Path,
    folder: str | Path,
    *,
    options: VideoOptions = VideoOptions(),
    overwrite: bool = False,
    max_pixels: int | None = None,
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
    max_memory_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Restore `source` into PNG frames `folder/frame_000001.png`... (16-bit for deeper sources), turned to
    the clip's display orientation, plus `frames.json` (rate, time base, each frame's timestamp, audio left
    out); resumable like `restore_video`. `OutputError` when `folder` already holds a finished run."""
    source, folder = Path(source), Path(folder)
    done_marker = folder / FRAMES_MANIFEST
    info = _prepare(restorer, source, done_marker, options, overwrite, max_pixels, max_output_pixels,
                    max_memory_bytes)  # fmt: skip
    identity = _identity(restorer, source, options, {"frames": "png"})
    progress = Progress.open(folder / f".{MANIFEST}", identity, overwrite, folder_is_work=False)
    if not progress.done and any(folder.glob("frame_*.png")):
        if not overwrite:
            raise OutputError(folder, "already holds frame_*.png files (use --overwrite to replace them)")
        for stale in [*folder.glob("frame_*.png"), done_marker]:  # an earlier result: replaced whole, not mixed in
            stale.unlink(missing_ok=True)
    sink = FrameSink(folder, info, progress)
    _run(restorer, info, options, progress, sink, on_progress, cancel)
    width, height = output_frame_size(restorer, info, options)
    record = {
        "source": str(source), "frames": progress.done, "fps": str(info.fps), "time_base": str(info.time_base),
        "pts": progress.pts, "stored_size": [width, height], "rotation_applied": info.rotation,
        "audio": "not written: take it from the source",
    }  # fmt: skip
    atomic_write_text(done_marker, json.dumps(record, indent=1) + "\n", overwrite=True)
    (folder / f".{MANIFEST}").unlink(missing_ok=True)
    (folder / f".{STATE}").unlink(missing_ok=True)
    return folder


def _prepare(
    restorer: Restorer,
    source: Path,
    target: Path,
    options: VideoOptions,
    overwrite: bool,
    max_pixels: int | None,
    max_output_pixels: int | None,
    max_memory_bytes: int | None,
) -> VideoInfo:
    """Probe the source and refuse, before any work, what cannot be done."""
    if target.exists() and _same_file(source, target):
        raise OutputError(target, "is the input video; an input is never overwritten")
    if target.exists() and not overwrite:
        raise OutputError(target, "already exists (use --overwrite to replace it)")
    info = probe_video(source, max_pixels=max_pixels)
    check_output(restorer, info.width, info.height, outscale=options.outscale, shrink_first=options.shrink_first,
                 path=source, max_output_pixels=max_output_pixels, max_memory_bytes=max_memory_bytes)  # fmt: skip
    if is_colour_task(restorer.task):
        _check_not_in_colour(info, force=options.force)
    for dropped in info.dropped_streams:
        log.warning("%s: its %s is not copied", source, dropped)
    return info


def _check_not_in_colour(info: VideoInfo, *, force: bool) -> None:
    first = next(iter_frames(info), None)
    if first is None:
        return
    in_colour, spread = has_real_colour(first.as_float())
    if not in_colour:
        return
    reason = f"already in colour (colour spread {spread:.1f} > {COLOUR_PHOTO_SPREAD:g} on its first frame)"
    if not force:
        raise InputError(info.path, f"{reason}: colourising keeps only its luminance; --force colourises it anyway")
    log.warning("%s: %s (--force: colourised anyway)", info.path, reason)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or a.samefile(b)
    except OSError:
        return False


def _identity(restorer: Restorer, source: Path, options: VideoOptions, output: dict[str, Any]) -> dict[str, Any]:
    """What must match for a partial run to be continued: the source file, the model and every option."""
    stat = source.stat()
    settings = dataclasses.asdict(options)
    for key in ("force", "segment_frames", "segment_seconds", "codec", "crf", "container"):
        settings.pop(key)
    return {
        "format": FORMAT_VERSION,
        "source": {"path": str(source.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "model": {"name": restorer.name, "config": restorer.config, "strength": restorer.info.get("strength"),
                  "tile": restorer.tile, "tile_overlap": restorer.tile_overlap, "ensemble": restorer.ensemble,
                  "precision": restorer.precision, "render_size": restorer.render_size},  # fmt: skip
        "options": settings,
        "output": output,
    }


def _run(restorer: Restorer, info: VideoInfo, options: VideoOptions, progress: Progress, sink: SegmentSink | FrameSink,
         on_progress: ProgressCallback | None, cancel: threading.Event | None) -> None:  # fmt: skip
    """Restore the frames from `progress.done` on into `sink`, checkpointing as it goes and at any stop."""
    pipeline = FramePipeline(restorer, outscale=options.outscale, shrink_first=options.shrink_first,
                             smoothing=options.smoothing, bit_depth=info.bit_depth)  # fmt: skip
    if pipeline.smoother is not None and progress.done:
        pipeline.smoother.state = load_state(sink.state_path, progress.done)
    total = info.expected_frames
    done = progress.done
    if on_progress is not None:
        on_progress(done, total)
    try:
        for frame in _frames(info, done, cancel):
            restored = pipeline(frame.as_float())
            sink.write(frame, _to_integers(restored, info.bit_depth))
            done += 1
            if sink.due():
                sink.checkpoint(done, _state_of(pipeline))
            if on_progress is not None:
                on_progress(done, max(total or 0, done) or None)
    except BaseException:
        _keep_finished(sink, done, pipeline)
        raise
    sink.checkpoint(done, _state_of(pipeline))


def _frames(info: VideoInfo, start: int, cancel: threading.Event | None) -> Iterator[Frame]:
    for frame in iter_frames(info, start=start):
        if cancel is not None and cancel.is_set():
            raise VideoCancelled(f"{info.path}: cancelled after {frame.index} frames")
        yield frame


def _keep_finished(sink: SegmentSink | FrameSink, done: int, pipeline: FramePipeline) -> None:
    """At a stop: finish and record the open segment, so a resumed run loses nothing; if that fails too, drop
    it (the recorded segments stay valid)."""
    try:
        sink.checkpoint(done, _state_of(pipeline))
    except BaseException as error:  # noqa: BLE001 - the original failure is what gets raised
        log.debug("could not keep the last segment: %s", error)
        sink.abort()


def _to_integers(rgb: np.ndarray, bit_depth: int) -> np.ndarray:
    top, dtype = (255.0, np.uint8) if bit_depth <= 8 else (65535.0, np.uint16)
    return np.rint(np.clip(rgb, 0.0, 1.0) * np.float32(top)).astype(dtype)


def _state_of(pipeline: FramePipeline) -> SmootherState | None:
    return pipeline.smoother.state if pipeline.smoother is not None else None


def describe_clip(path: str | Path) -> dict[str, Any]:
    """An ffprobe-style summary of a clip, counted by decoding it: frames, rate, duration, timestamps' span,
    size, rotation, audio (for docs, tests and reports)."""
    info = probe_video(path)
    pts = [frame.pts for frame in iter_frames(info)]
    first, last = (pts[0], pts[-1]) if pts else (0, 0)
    return {
        "file": Path(path).name, "frames": len(pts), "fps": str(info.fps), "codec": info.codec,
        "size": f"{info.width}x{info.height}", "rotation": info.rotation,
        "first_pts_s": round(float(first * info.time_base), 6), "last_pts_s": round(float(last * info.time_base), 6),
        "duration_s": round(info.duration_s, 3),
        "audio": [f"{a.codec} {a.sample_rate} Hz {a.channels} ch" for a in info.audio] or None,
    }  # fmt: skip


__all__ = [
    "FramePipeline",
    "VideoCancelled",
    "VideoOptions",
    "describe_clip",
    "output_frame_size",
    "restore_video",
    "restore_video_frames",
]
