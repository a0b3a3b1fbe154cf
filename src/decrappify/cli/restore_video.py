"""`decrappify restore clip.mp4 -o out/`: the options, output names and job for video inputs of `restore`.

Not a subcommand of its own: `cli/restore.py` hands each input with a video suffix to `restore_video_item`,
which makes one library call (`inference.video.restore_video`, or `restore_video_frames` with --frames-dir)
under a progress bar of frames with frames/s and ETA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from decrappify.inference.temporal import DEFAULT_SMOOTHING
from decrappify.inference.video import FRAMES_MANIFEST, VideoOptions, restore_video, restore_video_frames
from decrappify.io.jobs import BatchItem, output_path
from decrappify.io.video_encode import CODECS, CONTAINERS, output_suffix

VIDEO_FORMATS = ("keep", *(suffix.lstrip(".") for suffix in CONTAINERS))


def add_video_options(parser: argparse.ArgumentParser) -> None:
    """The options that apply to video inputs (needs decrappify[video])."""
    group = parser.add_argument_group(
        "videos (inputs named .mp4, .mov, .mkv, .webm, .avi, ...; needs decrappify[video])",
        "A video is restored frame by frame and written with the same frame count, timestamps, rotation and "
        "audio (copied, not re-encoded). An interrupted run continues where it stopped when run again with the "
        "same options (its work is kept in a hidden .NAME.partial folder beside the result).",
    )
    group.add_argument(
        "--video-format",
        choices=VIDEO_FORMATS,
        default="keep",
        help="container of restored videos: keep = the input's (Matroska for containers other than "
        f"{', '.join(CONTAINERS)}) (default keep)",
    )
    group.add_argument(
        "--video-codec",
        choices=tuple(CODECS),
        default=None,
        help="video codec: h264 (default; vp9 for .webm), h265 (smaller, slower), vp9, ffv1 (lossless, .mkv)",
    )
    group.add_argument(
        "--crf",
        type=int,
        default=None,
        metavar="N",
        help="constant quality, lower is better and larger (default: h264 18, h265 20, vp9 30: visually "
        "lossless for most clips)",
    )
    group.add_argument(
        "--frames-dir",
        metavar="DIR",
        default=None,
        help="write each video's restored frames as PNG files in DIR/<video name>/ (upright, with frames.json "
        "holding each frame's timestamp) instead of a video file",
    )
    group.add_argument(
        "--temporal-smoothing",
        type=float,
        nargs="?",
        const=DEFAULT_SMOOTHING,
        default=0.0,
        metavar="S",
        help="blend each restored frame with the previous one moved along the optical flow, where the motion "
        f"explains the input: less flicker, slightly softer (S in 0..1, {DEFAULT_SMOOTHING} when given alone; "
        "default off; needs OpenCV)",
    )


def is_frames_output(args: argparse.Namespace) -> bool:
    return getattr(args, "frames_dir", None) is not None


def video_target(item: BatchItem, args: argparse.Namespace, default_suffix: str) -> Path:
    """Where a video's result goes: a video file under `-o` (or beside the input with `--suffix`), or a folder
    under `--frames-dir`."""
    if is_frames_output(args):
        folder = output_path(item, Path(args.frames_dir)).with_suffix("")
        return folder.with_name(f"{folder.name}{args.suffix}") if args.suffix else folder
    requested = None if args.video_format == "keep" else args.video_format
    suffix_text = args.suffix if args.suffix is not None else ("" if args.output else default_suffix)
    container = output_suffix(item.source, requested)
    target = output_path(item, Path(args.output), container) if args.output else item.source.with_suffix(container)
    return target.with_name(f"{target.stem}{suffix_text}{target.suffix}") if suffix_text else target


def video_result_exists(target: Path, args: argparse.Namespace) -> bool:
    """A finished result: the video file, or a frames folder with its frames.json."""
    return (target / FRAMES_MANIFEST).is_file() if is_frames_output(args) else target.exists()


def restore_video_item(restorer, item: BatchItem, target: Path, args: argparse.Namespace) -> Path:
    """Restore one video input into `target` (file or frames folder) under a frames progress bar."""
    options = VideoOptions(
        codec=args.video_codec,
        crf=args.crf,
        container=None if args.video_format == "keep" else args.video_format,
        outscale=args.outscale,
        shrink_first=args.shrink_first,
        smoothing=args.temporal_smoothing,
        force=args.force,
    )
    run = restore_video_frames if is_frames_output(args) else restore_video
    with _FrameProgress(item.source.name, quiet=args.quiet) as progress:
        return run(
            restorer,
            item.source,
            target,
            options=options,
            overwrite=args.overwrite,
            max_pixels=args.max_pixels,
            max_output_pixels=args.max_output_pixels,
            max_memory_bytes=args.max_memory,
            on_progress=progress,
        )


class _FrameProgress:
    """`on_progress` for one video: a bar of frames with frames/s and ETA (on a terminal, not with -q)."""

    def __init__(self, name: str, *, quiet: bool):
        self.name, self.quiet = name, quiet
        self.bar: tqdm | None = None

    def __enter__(self) -> _FrameProgress:
        return self

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, desc=self.name, unit="frame", position=1, leave=False,
                            file=sys.stderr, disable=None, smoothing=0.1)  # fmt: skip
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)
