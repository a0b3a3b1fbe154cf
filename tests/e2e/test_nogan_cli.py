"""`decrappify train --config configs/restore-x4-gan.toml`: the shipped NoGAN recipe, made tiny by overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decrappify.cli import main

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "restore-x4-gan.toml"
TINY = [
    "model={arch='compact', scale=4, widths=[8, 8, 8], blocks=[1, 1, 1]}",
    "loss.kind='l1'",
    "stages=[{crop=32, batch=2, epochs=1}]",
    "data.val_size=1",
    "train.time_budget_minutes=0",
    "train.threads=1",
    "gan.critic={arch='patch', width=8}",
    "gan.crop=64",
    "gan.batch=2",
    "gan.critic_steps=2",
    "gan.steps=3",
    "gan.checkpoint_steps=2",
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_the_nogan_recipe_runs_all_stages_and_resume_knows_it_is_done(photos, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    args = ["-q", "train", "--config", str(RECIPE), "--data", str(photos), "--out", str(run_dir), *TINY]
    assert main(args) == 0
    assert f"model: {run_dir / 'model.safetensors'}" in capsys.readouterr().out
    stages = json.loads((run_dir / "nogan.json").read_text())["stages"]
    assert list(stages) == ["generator", "generate", "critic", "gan"] and stages["gan"]["steps"] == 3
    assert main(["-q", "train", "--resume", "--out", str(run_dir)]) == 0  # finished: nothing left to do
    assert main(args) == 1  # a second run into the same folder is refused
    assert "already holds a training run" in capsys.readouterr().err
