"""Video in, video out: frames, timestamps, rotation and audio kept; bad inputs refused; interrupted runs resumed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import save_tiny_model
from tests.video_clips import make_clip, require_av

av = require_av()

from decrappify.errors import ConfigError, InputError, OutputError  # noqa: E402
from decrappify.inference.restorer import Restorer  # noqa: E402
from decrappify.inference.video import (  # noqa: E402
    VideoOptions,
    describe_clip,
    restore_video,
    restore_video_frames,
)
from decrappify.io.video import iter_frames, probe_video  # noqa: E402
from decrappify.io.video_encode import decode_times  # noqa: E402

X1 = {"arch": "compact", "scale": 1, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


@pytest.fixture(scope="module")
def restorer(model_file) -> Restorer:
    return Restorer.from_pretrained(model_file, device="cpu")  # the tiny x2 model


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=8, rotation=90)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        return [(p.pts, bytes(p)) for p in container.demux(container.streams.audio[0]) if p.size]


def test_probe_reads_the_clip(clip):
    info = probe_video(clip)
    assert (info.width, info.height, info.frames, info.fps, info.rotation) == (64, 48, 8, 24, 90)
    assert [track.codec for track in info.audio] == ["aac"]
    frames = list(iter_frames(info))
    assert [f.index for f in frames] == list(range(8)) and frames[0].rgb.shape == (48, 64, 3)
    assert [f.index for f in iter_frames(info, start=6)] == [6, 7]


def test_restored_clip_keeps_frames_timestamps_rotation_and_audio(restorer, clip, tmp_path):
    before = _digest(clip)
    target = restore_video(restorer, clip, tmp_path / "out" / "clip.mp4", options=VideoOptions(segment_frames=3))
    source, restored = describe_clip(clip), describe_clip(target)
    assert restored["size"] == "128x96" and source["size"] == "64x48"
    for key in ("frames", "fps", "rotation", "first_pts_s", "last_pts_s", "audio"):
        assert restored[key] == source[key], key
    assert _audio_packets(target) == _audio_packets(clip)  # copied packet for packet, not re-encoded
    assert [f.pts for f in iter_frames(probe_video(target))] == [f.pts for f in iter_frames(probe_video(clip))]
    assert _digest(clip) == before  # the input is never modified
    assert not list((tmp_path / "out").glob(".*"))  # the work folder is gone


def test_bad_videos_are_one_line_errors_naming_the_file(restorer, clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    truncated = tmp_path / "cut.mp4"  # a download cut short: the index (at the front) is whole, the frames not
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size * 2 // 3])
    headless = tmp_path / "head.mp4"  # cut inside its header
    headless.write_bytes(clip.read_bytes()[:200])
    sound = tmp_path / "sound.mp4"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    unknown = tmp_path / "unknown.mkv"  # a codec FFmpeg has no decoder for
    lossless = make_clip(tmp_path / "lossless.mkv", frames=2, codec="ffv1", audio=False).read_bytes()
    unknown.write_bytes(lossless.replace(b"V_FFV1", b"V_ZZZ9"))
    cases = [(text, "not a readable video"), (truncated, "truncated: its index needs"), (headless, "no video stream"),
             (sound, "no video stream"), (unknown, "unsupported video codec")]  # fmt: skip
    for bad, reason in cases:
        with pytest.raises(InputError, match=reason) as caught:
            restore_video(restorer, bad, tmp_path / "out" / bad.name)
        assert str(bad) in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_outputs_are_never_overwritten_without_asking(restorer, clip, tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"earlier result")
    with pytest.raises(OutputError, match="already exists"):
        restore_video(restorer, clip, target)
    assert target.read_bytes() == b"earlier result"
    with pytest.raises(OutputError, match="input"):
        restore_video(restorer, clip, clip, overwrite=True)
    restore_video(restorer, clip, target, overwrite=True)
    assert describe_clip(target)["frames"] == 8


def test_an_interrupted_run_continues_where_it_stopped(restorer, tmp_path):
    clip = make_clip(tmp_path / "clip.mkv", frames=9, codec="ffv1", audio=False)
    options = VideoOptions(codec="ffv1", segment_frames=2)
    whole = restore_video(restorer, clip, tmp_path / "whole.mkv", options=options)

    def stop_at_five(done: int, total: int | None) -> None:
        if done == 5:
            raise KeyboardInterrupt

    target = tmp_path / "resumed.mkv"
    with pytest.raises(KeyboardInterrupt):
        restore_video(restorer, clip, target, options=options, on_progress=stop_at_five)
    assert not target.exists() and (tmp_path / ".resumed.mkv.partial" / "progress.json").is_file()
    starts: list[int] = []
    restore_video(restorer, clip, target, options=options, on_progress=lambda done, _: starts.append(done))
    assert starts[0] == 5  # the frame being written at Ctrl-C was kept: nothing is restored twice
    frames = [f.rgb for f in iter_frames(probe_video(target))]
    expected = [f.rgb for f in iter_frames(probe_video(whole))]
    assert len(frames) == 9 and all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))


def test_a_partial_run_with_other_options_is_not_mixed_in(restorer, tmp_path):
    clip = make_clip(tmp_path / "clip.mkv", frames=4, codec="ffv1", audio=False)
    target = tmp_path / "out.mkv"

    def stop(done: int, total: int | None) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_video(restorer, clip, target, options=VideoOptions(segment_frames=1), on_progress=stop)
    with pytest.raises(OutputError, match="other options"):
        restore_video(restorer, clip, target, options=VideoOptions(outscale=3))
    restore_video(restorer, clip, target, options=VideoOptions(outscale=3), overwrite=True)
    assert describe_clip(target)["size"] == "192x144"


def test_frames_dir_writes_upright_pngs_with_their_timestamps(restorer, clip, tmp_path):
    folder = restore_video_frames(restorer, clip, tmp_path / "frames", options=VideoOptions(outscale=1.5))
    pngs = sorted(folder.glob("frame_*.png"))
    assert len(pngs) == 8
    from PIL import Image

    assert Image.open(pngs[0]).size == (72, 96)  # 64 x 48 at x1.5, turned upright (display rotation 90)
    import json

    record = json.loads((folder / "frames.json").read_text())
    assert record["frames"] == 8 and len(record["pts"]) == 8 and record["fps"] == "24"
    with pytest.raises(OutputError):
        restore_video_frames(restorer, clip, folder)


def test_colourising_a_colour_clip_needs_force(tmp_path):
    model = save_tiny_model(tmp_path / "colour.safetensors", X1, task="colorize", scale=1)
    colouriser = Restorer.from_pretrained(model, device="cpu")
    clip = make_clip(tmp_path / "vivid.mp4", frames=3, vivid=True)
    with pytest.raises(InputError, match="already in colour"):
        restore_video(colouriser, clip, tmp_path / "out.mp4")
    restore_video(colouriser, clip, tmp_path / "out.mp4", options=VideoOptions(force=True))
    assert describe_clip(tmp_path / "out.mp4")["frames"] == 3


def test_odd_sized_frames_and_codec_choices(tmp_path):
    restorer = Restorer.from_pretrained(save_tiny_model(tmp_path / "x1.safetensors", X1, scale=1), device="cpu")
    clip = make_clip(tmp_path / "odd.mkv", frames=3, size=(33, 25), codec="ffv1", audio=False)
    target = restore_video(restorer, clip, tmp_path / "odd.mp4")  # 4:2:0 needs even sides: 4:4:4 is used
    assert describe_clip(target)["size"] == "33x25"
    with pytest.raises(ConfigError, match="cannot hold ffv1"):
        restore_video(restorer, clip, tmp_path / "odd2.mp4", options=VideoOptions(codec="ffv1"))
    with pytest.raises(ConfigError, match="takes 0..51"):
        restore_video(restorer, clip, tmp_path / "odd3.mp4", options=VideoOptions(crf=99))


def test_decode_times_are_one_delay_for_the_whole_clip():
    # Two segments of an encoder with two B-frames, then a short one without: presentation times in decode order.
    pts = [0, 3, 1, 2, 4, 7, 5, 6, 8, 9]
    dts = decode_times(pts)
    assert all(b > a for a, b in zip(dts, dts[1:], strict=False))
    assert all(d <= p for d, p in zip(dts, pts, strict=True))
    assert dts[-1] == 8  # one frame of delay, kept to the end: durations stay one frame


def test_help_loads_neither_torch_nor_pyav():
    import subprocess
    import sys

    code = ("import sys\nfrom decrappify.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('av' in sys.modules, 'torch' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False False"
