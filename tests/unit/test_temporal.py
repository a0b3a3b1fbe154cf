"""Flicker, the video evaluation, and temporal smoothing that lowers flicker where the motion explains it."""

from __future__ import annotations

import numpy as np
import pytest

from decrappify.cli import main
from decrappify.evaluation.video import FRAME_KEY, evaluate_video, flicker
from tests.video_clips import make_clip, require_av, scene

pytest.importorskip("cv2")
from decrappify.inference.temporal import TemporalSmoother  # noqa: E402


class Flickering:
    """A method that restores nothing and adds fresh noise every frame: flicker, and nothing else."""

    def __init__(self, scale: int = 1, sigma: float = 0.03):
        self.name, self.scale, self.sigma = "flickering", scale, sigma
        self.rng = np.random.default_rng(0)

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray:
        noise = self.rng.normal(0.0, self.sigma, rgb_lq.shape).astype(np.float32)
        return np.clip(rgb_lq + noise, 0.0, 1.0)


def test_flicker_is_change_beyond_the_truths():
    frames = [f.astype(np.float32) / 255 for f in scene(64, 48, 4)]
    assert flicker(frames, frames) == 0.0
    still = [frames[0]] * 4
    assert flicker(still, frames) < 0  # steadier than the truth (the moving patch froze)
    noisy = [np.clip(f + 0.05 * np.random.default_rng(i).standard_normal(f.shape), 0, 1) for i, f in enumerate(frames)]
    assert flicker(noisy, frames) > 1.0


def test_smoothing_follows_motion_and_damps_flicker():
    frames = [f.astype(np.float32) / 255 for f in scene(96, 64, 6, step=3)]
    method, smoother = Flickering(), TemporalSmoother(0.6)
    raw, smooth = [], []
    for frame in frames:
        out = method(frame)
        raw.append(out)
        smooth.append(smoother(frame, out))
    assert flicker(smooth, frames) < 0.6 * flicker(raw, frames)
    # The moving patch is not smeared into a ghost: fidelity improves, it does not drop.
    error = [np.abs(s - f).mean() - np.abs(r - f).mean() for s, r, f in zip(smooth, raw, frames, strict=True)]
    assert max(error[1:]) < 0


def test_evaluate_video_degrades_every_frame_alike_and_scores_smoothing(tmp_path):
    require_av()
    clip = make_clip(tmp_path / "clean.mkv", frames=5, size=(96, 64), codec="ffv1", audio=False)
    result = evaluate_video(clip, "restore-x1", [Flickering()], smoothing=0.5)
    rows = {row.method: row for row in result.rows}
    assert list(rows) == ["input", "flickering", "flickering +smoothing 0.5"]
    assert result.frames == 5 and FRAME_KEY == "video"
    # Every frame is degraded with the same draws: where nothing moves, the degraded input does not change.
    assert rows["input"].flicker < 0.5
    assert rows["flickering +smoothing 0.5"].flicker < rows["flickering"].flicker
    assert "| flickering |" in result.to_markdown()


def test_evaluate_cli_takes_a_clip(tmp_path, capsys, model_file):
    require_av()
    clip = make_clip(tmp_path / "clean.mkv", frames=3, size=(64, 48), codec="ffv1", audio=False)
    code = main(["evaluate", str(clip), "--task", "sr-x4", "--model", "bicubic", "--json", str(tmp_path / "v.json"),
                 "-q"])  # fmt: skip
    assert code == 0
    assert "| bicubic |" in capsys.readouterr().out
    assert '"flicker"' in (tmp_path / "v.json").read_text()
