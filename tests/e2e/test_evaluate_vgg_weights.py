"""Where `decrappify evaluate` gets VGG16 weights for the perceptual distance: --vgg-weights, else the environment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from decrappify.cli import main
from decrappify.errors import WeightsError
from decrappify.evaluation.evaluate import evaluate
from decrappify.nn.backbones import create_backbone
from decrappify.weights import VGG_WEIGHTS_ENV


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised VGG16 in torchvision's layout (full size: the file must load strictly)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "random-vgg16.safetensors"
    save_file(create_backbone("vgg16").state_dict(), path)
    return path


@pytest.fixture
def clean_dir(tmp_path: Path) -> Path:
    root = tmp_path / "clean"
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / "noise.png")
    return root


@pytest.fixture(autouse=True)
def _no_vgg_in_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(VGG_WEIGHTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # and nothing beside the working directory is looked for


def _perceptual(clean_dir: Path, tmp_path: Path, *flags: str) -> float | None:
    out = tmp_path / "scores.json"
    assert main(["-q", "evaluate", str(clean_dir), "--task", "restore-x1", "--json", str(out), *flags]) == 0
    return json.loads(out.read_text())["results"][0]["perceptual"]


def test_without_weights_the_column_stays_empty(clean_dir: Path, tmp_path: Path) -> None:
    assert _perceptual(clean_dir, tmp_path) is None


def test_the_flag_and_the_environment_give_the_same_distance(
    clean_dir: Path, tmp_path: Path, vgg_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_flag = _perceptual(clean_dir, tmp_path, "--vgg-weights", str(vgg_file))
    assert from_flag is not None and from_flag > 0
    assert _perceptual(clean_dir, tmp_path, "--vgg-weights", str(vgg_file), "--no-perceptual") is None
    monkeypatch.setenv(VGG_WEIGHTS_ENV, str(vgg_file))
    assert _perceptual(clean_dir, tmp_path) == from_flag


def test_a_missing_file_given_is_an_error_naming_it(clean_dir: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere.safetensors"
    assert main(["-q", "evaluate", str(clean_dir), "--task", "restore-x1", "--vgg-weights", str(missing)]) == 1
    assert "nowhere.safetensors: weights file not found" in capsys.readouterr().err


def test_a_required_distance_without_weights_says_how_to_give_them(clean_dir: Path) -> None:
    with pytest.raises(WeightsError, match=f"--vgg-weights PATH.*{VGG_WEIGHTS_ENV}"):
        evaluate(clean_dir, "restore-x1", perceptual=True)
