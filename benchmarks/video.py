"""Video: what a restored clip keeps (round trip), and flicker with and without temporal smoothing.

    python benchmarks/video.py roundtrip [--model restore-x4] [--frames 48]
    python benchmarks/video.py flicker [--models restore-x4 restore-x1 colorize] [--frames 24] [--smoothing 0.5] [--pan]
    python benchmarks/video.py memory [--model restore-x1] [--lengths 60 300]

Both make their clip from a BSD100 photo (BSDS500 val, `--photo`): a static camera on the photo, with a 64 px
patch of it moving 3 px a frame across (someone walking through a still shot); `--pan` moves the camera instead.

`roundtrip` writes it as the phones do (H.264 in MP4 at 30000/1001 fps, AAC audio, a display rotation of 90),
runs `decrappify restore CLIP -o OUT` and prints both clips' summaries, counted by decoding: frames, rate,
first and last timestamps, size, rotation, audio (and whether the audio packets are byte for byte the same).

`flicker` writes it losslessly (FFV1) and runs `decrappify evaluate CLIP --task T --model M --temporal-smoothing
S` for each model: PSNR_Y, SSIM_Y and flicker (the mean |Y_t - Y_t-1| of the output minus the clean clip's), with
and without smoothing.

`memory` restores 1280 x 720 clips of each of `--lengths` frames in a fresh process each and prints its peak
resident memory: with frames streamed, it must not grow with the clip's length. For docs/benchmarks/video.md.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from decrappify.inference.video import describe_clip
from decrappify.inference.zoo import resolve_model
from decrappify.io.model_metadata import read_model_metadata

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "val"


def frames_of(photo: Path, size: tuple[int, int], count: int, step: int = 3, pan: bool = False) -> list[np.ndarray]:
    """A static shot of the photo with a 64 px patch moving `step` px a frame, or with `pan` the camera moving
    one pixel a frame to the right (every pixel changes, and the JPEG grid slides over the content)."""
    image = np.asarray(Image.open(photo).convert("RGB"))
    width, height = size
    patch = image[-64:, -64:]
    views = []
    for index in range(count):
        if pan:
            views.append(image[:height, index : index + width].copy())
            continue
        frame = image[:height, :width].copy()
        x, y = 8 + step * index, height // 2 - 32
        visible = max(0, min(64, width - x))
        frame[y : y + 64, x : x + visible] = patch[:, :visible]
        views.append(frame)
    return views


def write_clip(path: Path, views, *, lossless: bool, rotation: int = 0) -> Path:
    """Frames (a list, or any iterable) to a clip at 30000/1001 fps: FFV1 in .mkv, or H.264 + AAC in .mp4."""
    views = iter(views)
    first = next(views)
    rate = Fraction(30000, 1001)
    options = {} if lossless else {"movflags": "+faststart"}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream("ffv1" if lossless else "libx264", rate=rate)
        video.height, video.width = first.shape[:2]
        video.pix_fmt = "yuv444p" if lossless else "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        audio = None if lossless else container.add_stream("aac", rate=48000)
        count = 0
        for index, rgb in enumerate(itertools.chain([first], views)):
            count += 1
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            seconds = count / rate
            samples = np.sin(np.arange(int(48000 * seconds)) * 2 * np.pi * 440 / 48000).astype(np.float32)[None] * 0.2
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, 0
            container.mux(audio.encode(chunk))
            container.mux(audio.encode(None))
    return path


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def roundtrip(args: argparse.Namespace, folder: Path) -> None:
    clip = write_clip(folder / "clip.mp4", frames_of(args.photo, (320, 240), args.frames), lossless=False, rotation=90)
    print(f"$ decrappify restore clip.mp4 -o out/ --model {args.model}")
    start = time.perf_counter()
    command = ["restore", str(clip), "-o", str(folder / "out"), "--model", args.model, "-q"]
    subprocess.run([sys.executable, "-m", "decrappify", *command], check=True)
    seconds = time.perf_counter() - start
    restored = folder / "out" / "clip.mp4"
    print("| | " + " | ".join(describe_clip(clip)) + " |")
    print("| --- " * (len(describe_clip(clip)) + 1) + "|")
    for name, path in (("input", clip), ("restored", restored)):
        print(f"| {name} | " + " | ".join(str(v) for v in describe_clip(path).values()) + " |")
    same = audio_packets(clip) == audio_packets(restored)
    rate = f"{args.frames / seconds:.1f} frames/s including start-up"
    print(f"audio packets identical: {same}; {args.frames} frames in {seconds:.1f} s ({rate})")


def flicker(args: argparse.Namespace, folder: Path) -> None:
    clip = write_clip(folder / "clean.mkv", frames_of(args.photo, (320, 240), args.frames, pan=args.pan), lossless=True)
    for model in args.models:
        task = read_model_metadata(resolve_model(model))[1].get("task")
        command = ["evaluate", str(clip), "--task", task, "--model", model, "--temporal-smoothing", str(args.smoothing),
                   "--no-quality", "--no-perceptual", "-q"]  # fmt: skip
        print(f"\n$ decrappify evaluate clean.mkv --task {task} --model {model} --temporal-smoothing {args.smoothing}")
        subprocess.run([sys.executable, "-m", "decrappify", *command], check=True)


def memory(args: argparse.Namespace, folder: Path) -> None:
    photo = np.asarray(Image.open(args.photo).convert("RGB").resize((1400, 933)))
    for length in args.lengths:
        views = (photo[: 720, index : index + 1280] for index in range(length))  # a slow pan, made as it is written
        clip = write_clip(folder / f"pan{length}.mkv", views, lossless=True)
        code = (
            "import resource, sys, time\n"
            "from decrappify.inference.restorer import Restorer\n"
            "from decrappify.inference.video import restore_video\n"
            f"restorer = Restorer.from_pretrained({args.model!r})\n"
            "start = time.perf_counter()\n"
            f"restore_video(restorer, {str(clip)!r}, {str(folder / f'out{length}.mp4')!r})\n"
            "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            f"print(f'{length} frames of 1280 x 720 with {args.model}: peak RSS {{peak:.0f}} MiB, "
            "{time.perf_counter() - start:.0f} s')\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("roundtrip", "flicker", "memory"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[60, 300])
    parser.add_argument("--photo", type=Path, default=DATA / "148026.jpg")
    parser.add_argument("--pan", action="store_true", help="flicker: a panning camera instead of a static one")
    parser.add_argument("--model", default="restore-x4")
    parser.add_argument("--models", nargs="+", default=["restore-x4", "restore-x1", "colorize"])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--smoothing", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="decrappify-video-") as folder:
        {"roundtrip": roundtrip, "flicker": flicker, "memory": memory}[args.part](args, Path(folder))


if __name__ == "__main__":
    main()
