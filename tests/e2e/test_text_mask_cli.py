"""Issue 22 end to end: train a text-mask model from its recipe, score it, detect text, restore only the
watermark (command line and service)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decrappify.cli import main
from decrappify.data.degrade import create_preset, rng_for
from decrappify.inference.text_mask import blend_weights
from decrappify.io.model_metadata import read_model_metadata
from tests.conftest import save_tiny_model
from tests.text_mask_models import save_constant_mask_model

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "text-mask.toml"
TINY_X1 = {"arch": "compact", "scale": 1, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


def photo(seed: int, width: int = 80, height: int = 64) -> Image.Image:
    small = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(5):
        photo(i).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "all": save_constant_mask_model(folder / "all-text.safetensors", text=True),
        "none": save_constant_mask_model(folder / "no-text.safetensors", text=False),
        "x1": save_tiny_model(folder / "tiny-x1.safetensors", TINY_X1, scale=1),
    }


@pytest.fixture
def watermarked(tmp_path: Path) -> tuple[Path, Path]:
    """A photo with text drawn on it (the watermark preset) and the file of its true mask."""
    degraded = create_preset("watermark")(photo(7), rng_for(0, "w"))
    picture, mask = tmp_path / "in" / "photo.png", tmp_path / "photo_mask.png"
    picture.parent.mkdir()
    degraded.image.save(picture)
    Image.fromarray(degraded.text_mask().astype(np.uint8) * 255).save(mask)
    return picture, mask


def test_the_recipe_trains_a_text_mask_model_and_its_no_skip_twin(photos: Path, tmp_path: Path) -> None:
    tiny = ["model.widths=[4, 4, 4]", "model.blocks=[1, 0, 0]", "model.space_to_depth=2", "data.val_size=2",
            "stages=[{crop=16, batch=2, epochs=1}]", "train.time_budget_minutes=0", "data.prefetch=false",
            "train.samples=1"]  # fmt: skip
    for name, extra in (("unet", []), ("noskip", ["model.skips=false"])):
        run = tmp_path / name
        argv = ["-q", "train", "--config", str(RECIPE), "--data", str(photos), "--out", str(run), *tiny, *extra]
        assert main(argv) == 0
        config, info = read_model_metadata(run / "best.safetensors")
        assert info["task"] == "text-mask" and info["presets"] == ["restore-x1", "restore-x4"]
        assert config["skips"] == (name == "unet")
        header = (run / "log.csv").read_text().splitlines()[0].split(",")
        assert {"val_iou", "val_f1", "val_box_recall"} <= set(header)
        assert (run / "samples" / "stage1_epoch001.png").is_file()


def test_evaluate_text_mask_writes_the_table_json_and_report(photos, models, tmp_path, capsys) -> None:
    out = tmp_path / "scores.json"
    argv = ["-q", "evaluate", str(photos), "--model", str(models["all"]), "--json", str(out),
            "--report", str(tmp_path / "report")]  # fmt: skip
    assert main(argv) == 0  # the task comes from the model file
    assert "| all-text |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["task"] == "text-mask" and data["results"][0]["box_recall"] == 0.0  # one box: the whole photo
    assert data["results"][0]["recall"] == 1.0
    assert (tmp_path / "report" / "index.html").is_file()
    assert main(["-q", "evaluate", str(photos), "--task", "restore-x1", "--preset", "watermark"]) == 2


def test_detect_writes_the_mask_and_a_preview_and_never_replaces_them(watermarked, models, tmp_path) -> None:
    picture, _ = watermarked
    out = tmp_path / "masks"
    assert main(["-q", "detect", str(picture.parent), "-o", str(out), "--model", str(models["all"])]) == 0
    mask, preview = out / "photo_mask.png", out / "photo_overlay.jpg"
    with Image.open(mask) as written, Image.open(preview) as shown:
        assert written.mode == "L" and written.size == shown.size == (80, 64)
        assert np.asarray(written).min() == 255
    before = mask.read_bytes()
    assert main(["-q", "detect", str(picture), "-o", str(out), "--model", str(models["none"])]) == 1
    assert mask.read_bytes() == before
    assert main(["-q", "detect", str(picture), "-o", str(out), "--model", str(models["x1"])]) == 2


def test_detect_on_a_big_photo_gives_a_mask_of_its_size_at_any_working_side(models, tmp_path, capsys) -> None:
    big = tmp_path / "big.png"
    photo(3, 704, 448).save(big)
    for side in ("512", "0"):
        out = tmp_path / f"side-{side}"
        assert main(["-q", "detect", str(big), "-o", str(out), "--model", str(models["all"]), "--mask-side", side]) == 0
        with Image.open(out / "big_mask.png") as written:
            assert written.size == (704, 448) and np.asarray(written).min() == 255
    assert main(["-q", "detect", str(big), "-o", str(tmp_path / "x"), "--model", str(models["all"]),
                 "--mask-side", "8"]) == 2  # fmt: skip
    assert "working side must be 0" in capsys.readouterr().err


def test_restore_only_masked_keeps_every_pixel_outside_the_grown_mask(watermarked, models, tmp_path) -> None:
    picture, mask_file = watermarked
    out = tmp_path / "out"
    argv = ["-q", "restore", str(picture), "-o", str(out), "--model", str(models["x1"]), "--only-masked",
            "--mask", str(mask_file), "--mask-grow", "1", "--mask-feather", "2"]  # fmt: skip
    assert main(argv) == 0
    source, result = (np.asarray(Image.open(path)) for path in (picture, out / "photo.png"))
    mask = np.asarray(Image.open(mask_file)) > 0
    outside = blend_weights(mask, grow=1, feather=2) == 0
    np.testing.assert_array_equal(result[outside], source[outside])
    assert (result[mask] != source[mask]).any()
    # A predicted mask that finds nothing leaves the picture as it was, bit for bit.
    argv = ["-q", "restore", str(picture), "-o", str(tmp_path / "none"), "--model", str(models["x1"]),
            "--only-masked", "--mask-model", str(models["none"])]  # fmt: skip
    assert main(argv) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "none" / "photo.png")), source)
    assert main(["-q", "restore", str(picture), "-o", str(tmp_path / "x"), "--mask", str(mask_file)]) == 2


def test_the_service_detects_text_and_repairs_only_the_watermark(models, watermarked) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from decrappify.serve import ServeSettings, create_app

    picture, _ = watermarked
    app = create_app(ServeSettings(models=(str(models["x1"]),), mask_model=str(models["none"]), device="cpu"))
    client = TestClient(app)
    assert client.get("/v1/models").json()["text_mask"] == "no-text"
    upload = {"image": ("photo.png", picture.read_bytes(), "image/png")}
    detected = client.post("/v1/detect", files=upload)
    assert detected.status_code == 200 and detected.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(detected.content)).size == (80, 64)
    kept = client.post("/v1/restore", files=upload, data={"only_masked": "true", "format": "png"})
    assert kept.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(kept.content))), np.asarray(Image.open(picture)))
    without = TestClient(create_app(ServeSettings(mask_model=""), restorers=app.state.restorers))
    assert without.get("/v1/models").json()["text_mask"] is None
    assert without.post("/v1/restore", files=upload, data={"only_masked": "true"}).status_code == 400
    assert without.post("/v1/detect", files=upload).status_code == 404
