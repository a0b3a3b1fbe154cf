"""`decrappify restore clip.mp4 -o out/`: the command a user runs, on clips made in the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from decrappify.cli import main
from decrappify.inference import video as video_module
from decrappify.inference.video import describe_clip
from tests.video_clips import make_clip, require_av

require_av()


@pytest.fixture
def clip(tmp_path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    return make_clip(folder / "holiday.mp4", frames=6, rotation=270)


def test_restore_a_clip_then_refuse_to_overwrite_it(model_file, clip, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["restore", str(clip), "-o", str(out), "--model", str(model_file), "--device", "cpu"]
    assert main(args) == 0
    restored, source = describe_clip(out / "holiday.mp4"), describe_clip(clip)
    assert (restored["frames"], restored["fps"], restored["rotation"], restored["audio"]) == (
        source["frames"], source["fps"], 270, source["audio"])  # fmt: skip
    capsys.readouterr()
    assert main(args) == 1
    error = capsys.readouterr().err
    assert "holiday.mp4" in error and "already exists" in error
    assert main([*args, "--skip-existing"]) == 0
    # A glob reaches videos too; --video-format and --crf choose the container and quality.
    assert main(["restore", str(clip.parent / "*.mp4"), "-o", str(tmp_path / "mkv"), "--model", str(model_file),
                 "--video-format", "mkv", "--crf", "30", "-q"]) == 0  # fmt: skip
    assert describe_clip(tmp_path / "mkv" / "holiday.mkv")["frames"] == 6


def test_bad_video_is_one_line_and_the_rest_still_run(model_file, clip, tmp_path, capsys):
    broken = clip.parent / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    code = main(["restore", str(broken), str(clip), "-o", str(tmp_path / "out"), "--model", str(model_file), "-q"])
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "broken.mp4" in line]
    assert len(errors) == 1 and "not a readable video" in errors[0]
    assert (tmp_path / "out" / "holiday.mp4").is_file()


def test_ctrl_c_then_the_same_command_finishes_the_clip(model_file, clip, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_call = video_module.FramePipeline.__call__

    def interrupted(self, rgb):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_call(self, rgb)

    monkeypatch.setattr(video_module.FramePipeline, "__call__", interrupted)
    args = ["restore", str(clip), "-o", str(tmp_path / "out"), "--model", str(model_file), "-q"]
    assert main(args) == 130
    assert not (tmp_path / "out" / "holiday.mp4").exists()
    calls["n"] = 10  # no more interruptions
    assert main(args) == 0
    assert calls["n"] == 10 + 3  # frames 4 to 6 only: the first three were kept
    assert describe_clip(tmp_path / "out" / "holiday.mp4")["frames"] == 6


def test_frames_dir_and_temporal_smoothing(model_file, clip, tmp_path):
    pytest.importorskip("cv2")
    code = main(["restore", str(clip), "--frames-dir", str(tmp_path / "frames"), "--model", str(model_file),
                 "--temporal-smoothing", "--outscale", "1", "-q"])  # fmt: skip
    assert code == 0
    assert len(list((tmp_path / "frames" / "holiday").glob("frame_*.png"))) == 6
    assert (tmp_path / "frames" / "holiday" / "frames.json").is_file()
