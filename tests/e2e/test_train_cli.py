"""`decrappify train` end to end: a tiny run, resume, NaN stop, config errors, LR finder, 2-process torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decrappify.cli import main
from decrappify.train.checkpoint import find_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "sr-x4.toml"
TINY = [
    "model={arch='compact', scale=4, widths=[8, 8, 8], blocks=[1, 1, 1]}",
    "stages=[{crop=32, batch=2, epochs=2}]",
    "data.val_size=2",
    "data.crops_per_image=1",
    "train.threads=1",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_train_then_resume_a_finished_run(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert (
        main(["-q", "train", "--config", str(RECIPE), "--data", str(photos), "--out", str(out), *TINY]) == 0
    )
    printed = capsys.readouterr().out
    assert f"model: {out / 'model.safetensors'}, validation PSNR_Y" in printed
    assert (out / "best.safetensors").is_file() and (out / "samples" / "stage1_epoch002.png").is_file()
    assert len((out / "log.csv").read_text().splitlines()) == 1 + 2
    state = load_checkpoint(find_checkpoint(out / "checkpoints")).state
    assert state.done and state.step == 4
    assert main(["-q", "train", "--out", str(out), "--resume"]) == 0  # nothing left: still a success
    assert load_checkpoint(find_checkpoint(out / "checkpoints")).state.step == 4


def test_the_model_file_records_how_it_was_trained(photos: Path, tmp_path: Path) -> None:
    from decrappify.io.model_metadata import read_model_metadata

    out = tmp_path / "run"
    assert (
        main(["-q", "train", "--config", str(RECIPE), "--data", str(photos), "--out", str(out), *TINY]) == 0
    )
    config, info = read_model_metadata(out / "model.safetensors")
    assert config == {"arch": "compact", "scale": 4, "widths": [8, 8, 8], "blocks": [1, 1, 1]}
    assert (
        info["task"] == "sr-x4" and info["name"] == "run" and info["command"].startswith("decrappify train")
    )
    assert info["train_seconds"] >= 0 and "psnr_y" in info["metrics"]


def test_nan_loss_exits_1_with_a_clear_message(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    argv = ["-q", "train", "--config", str(RECIPE), "--data", str(photos), "--out", str(out), *TINY]
    assert main([*argv, "train.debug_nan_step=3"]) == 1
    err = capsys.readouterr().err
    assert "decrappify train: error: non-finite loss or gradient at step 3" in err
    assert "last good checkpoint (step 2)" in err and "Traceback" not in err
    assert load_checkpoint(find_checkpoint(out / "checkpoints")).state.step == 2
    assert (
        main(["-q", "train", "--out", str(out), "--resume", "train.debug_nan_step=0"]) == 0
    )  # and it continues
    assert load_checkpoint(find_checkpoint(out / "checkpoints")).state.step == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["optim.lrr=1"], "unknown key 'lrr' in [optim]; valid keys: lr,"),
        (["data.preset=nope"], "unknown preset 'nope'; choose one of: sr-x4"),
        (["model.scale=2"], "model.scale=2 but preset 'sr-x4' degrades by x4"),
    ],
)
def test_config_errors_exit_2(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    argv = [
        "train",
        "--config",
        str(RECIPE),
        "--data",
        str(photos),
        "--out",
        str(tmp_path / "r"),
        *TINY,
        *extra,
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_config_and_data_are_usage_errors(photos: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(photos)]) == 2
    assert "--config FILE is required" in capsys.readouterr().err
    assert main(["train", "--config", str(RECIPE), "--out", str(tmp_path / "r")]) == 2
    assert "no training data: pass --data DIR" in capsys.readouterr().err


def test_lr_find_prints_suggestions_and_writes_the_curve(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lr"
    argv = [
        "-q",
        "train",
        "--config",
        str(RECIPE),
        "--data",
        str(photos),
        "--out",
        str(out),
        "--lr-find",
        *TINY,
    ]
    assert main([*argv, "data.crops_per_image=10"]) == 0
    printed = capsys.readouterr().out
    assert "steepest descent: lr = " in printed and "minimum / 10:" in printed
    assert "suggested:        lr = " in printed and "valley rule" in printed
    assert (out / "lr_find.csv").read_text().startswith("lr,loss\n")
    assert (out / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / "checkpoints").exists()


def test_two_process_torchrun_trains_and_only_rank_0_writes(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "decrappify",
        "-q",
        "train",
        "--config",
        str(RECIPE),
        "--data",
        str(photos),
        "--out",
        str(out),
        *TINY,
        "data.crops_per_image=2",
    ]
    # a session of its own, so a hang can be killed with every rank (torchrun's children) on timeout
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish in 120 s:\n{stderr[-3000:]}")
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.count("model: ") == 1  # only rank 0 reports
    state = load_checkpoint(find_checkpoint(out / "checkpoints")).state
    assert state.done and state.step == 2 * 2  # 8 samples / (2 per batch x 2 processes) = 3 steps per epoch
    steps = (out / "steps.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in steps[1:]] == ["1", "2", "3", "4"]  # one writer: no duplicates
    assert sorted(p.name for p in out.iterdir()) == [
        "best.safetensors",
        "checkpoints",
        "config.json",
        "log.csv",
        "model.safetensors",
        "samples",
        "steps.csv",
    ]
