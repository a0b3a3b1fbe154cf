"""The models shipped inside the package: listed, small, and usable by name with no download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from decrappify.cli import main
from decrappify.inference.zoo import DEFAULT_MODEL, FIDELITY_MODEL, MODELS_DIR, list_models, resolve_model
from decrappify.io.images import Picture, read_image, write_image

SHIPPED = {"restore-x4": ("restore-x4", 4), "restore-x1": ("restore-x1", 1), "sr-x4": ("sr-x4", 4),
           "colorize": ("colorize", 1), "restore-x4-gan": ("restore-x4", 4)}  # fmt: skip
# Every model ships inside the package. The compact models are 2-3 MB; colorize's U-Net on a pretrained
# EfficientNet-Lite0 encoder (issue 18) is 19 MB as fp16, hence the limit (tools/ship_model.py MAX_BYTES).
MAX_MODEL_BYTES = 25_000_000
CARDS = Path(__file__).resolve().parents[2] / "docs" / "models"


def test_registry_lists_every_shipped_model_under_the_size_limit() -> None:
    entries = {entry.name: entry for entry in list_models()}
    assert set(SHIPPED) <= set(entries), f"missing from {MODELS_DIR}: {set(SHIPPED) - set(entries)}"
    for name, (task, scale) in SHIPPED.items():
        entry = entries[name]
        assert (entry.task, entry.scale) == (task, scale)
        assert entry.size_bytes <= MAX_MODEL_BYTES
        assert entry.metrics, f"{name}: no metrics in the registry"
        assert (CARDS / f"{name}.md").is_file(), f"{name}: no model card"
    registry = json.loads((MODELS_DIR / "registry.json").read_text(encoding="utf-8"))
    assert all((MODELS_DIR / row["file"]).is_file() for row in registry["models"])


def test_models_command_lists_them(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert f"| {name} |" in out


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_restore_by_name_works_out_of_the_box(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = write_image(Picture(rng.random((40, 52, 3), dtype=np.float32)), tmp_path / "photo.jpg")
    args = ["restore", str(photo), "-o", str(tmp_path / "out")]
    args += [] if name == DEFAULT_MODEL else ["--model", name]
    args += ["--force"] if name == "colorize" else []  # random noise is "in colour": colorize refuses it unforced
    assert main(args) == 0
    scale = SHIPPED[name][1]
    assert read_image(tmp_path / "out" / "photo.jpg").size == (52 * scale, 40 * scale)
    assert resolve_model(name).parent == MODELS_DIR


def test_the_default_is_the_perceptual_model_and_strength_starts_from_its_l1_twin(tmp_path: Path, capsys) -> None:
    """`restore` without `--model` runs restore-x4-gan (issue 17: every bar met); with `--strength` it starts from
    restore-x4, whose file names restore-x4-gan as its pair, so S = 1 is the default's look."""
    assert DEFAULT_MODEL == "restore-x4-gan" and FIDELITY_MODEL == "restore-x4"
    rng = np.random.default_rng(1)
    photo = write_image(Picture(rng.random((24, 32, 3), dtype=np.float32)), tmp_path / "photo.png")
    assert main(["restore", str(photo), "-o", str(tmp_path / "a")]) == 0
    assert "model restore-x4-gan:" in capsys.readouterr().err
    assert main(["restore", str(photo), "-o", str(tmp_path / "b"), "--strength", "0.5"]) == 0
    log = capsys.readouterr().err
    assert "model restore-x4-gan:" not in log and "restore-x4" in log
    assert read_image(tmp_path / "b" / "photo.png").size == (128, 96)
