"""Restorer: loading by path or shipped name, stateless calls, tiling, alpha/16-bit/metadata, the colourise hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from decrappify.errors import ConfigError, DecrappifyError, InputError
from decrappify.evaluation.metrics import rgb_to_y
from decrappify.inference.restorer import Restorer, keep_luminance
from decrappify.inference.zoo import list_models, resolve_model
from decrappify.io.images import Picture
from decrappify.nn import create_model
from decrappify.weights import save_model

TINY = {"arch": "compact", "scale": 2, "widths": [8, 12, 16], "blocks": [1, 1, 1]}


def _save(path: Path, config: dict = TINY, **info) -> Path:
    torch.manual_seed(0)
    info = {"name": path.stem, "task": "restore", **info}
    return save_model(create_model(config), path, config, info)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("models") / "tiny-x2.safetensors", scale=2)


def _rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def test_restore_array_shape_range_and_repeatability(model_file: Path) -> None:
    restorer = Restorer.from_pretrained(model_file, device="cpu")
    assert (restorer.name, restorer.task, restorer.scale, restorer.backend) == (
        "tiny-x2",
        "restore",
        2,
        "torch",
    )
    a, b = _rgb(21, 30, 1), _rgb(17, 9, 2)
    first = restorer.restore_array(a)
    assert first.shape == (42, 60, 3) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    restorer.restore_array(b)  # another picture in between changes nothing: no state kept
    np.testing.assert_array_equal(restorer.restore_array(a), first)


def test_tiled_restorer_matches_untiled(model_file: Path) -> None:
    rgb = _rgb(40, 52, 3)
    whole = Restorer.from_pretrained(model_file, device="cpu", tile=0).restore_array(rgb)
    tiled = Restorer.from_pretrained(model_file, device="cpu", tile=16, tile_overlap=48).restore_array(rgb)
    assert np.abs(tiled - whole).max() < 1e-4


def test_restore_keeps_alpha_bit_depth_and_metadata(model_file: Path) -> None:
    restorer = Restorer.from_pretrained(model_file, device="cpu", tile=16)
    alpha = np.zeros((12, 10), np.float32)
    alpha[:, 5:] = 1.0
    picture = Picture(
        _rgb(12, 10), alpha=alpha, bit_depth=16, icc_profile=b"icc", exif=b"Exif", source_format="PNG"
    )
    restored = restorer.restore(picture)
    assert restored.rgb.shape == (24, 20, 3) and restored.alpha.shape == (24, 20)
    assert restored.alpha[:, :8].max() < 0.2 and restored.alpha[:, 12:].min() > 0.8  # resized, not lost
    assert (restored.bit_depth, restored.icc_profile, restored.exif) == (16, b"icc", b"Exif")
    assert picture.rgb.shape == (12, 10, 3)  # the input is untouched


def test_bad_array_is_an_input_error(model_file: Path) -> None:
    restorer = Restorer.from_pretrained(model_file, device="cpu")
    with pytest.raises(InputError, match="H x W x 3"):
        restorer.restore_array(np.zeros((8, 8), np.float32))


def test_default_model_not_installed_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("decrappify.inference.zoo.MODELS_DIR", tmp_path / "empty")
    assert list_models() == []
    with pytest.raises(ConfigError, match="no shipped model is installed yet; pass --model PATH"):
        Restorer.from_pretrained("restore-x4")
    with pytest.raises(ConfigError, match="model file not found"):
        resolve_model(tmp_path / "missing.safetensors")


def test_zoo_lists_and_resolves_shipped_models(tmp_path: Path) -> None:
    _save(tmp_path / "a.safetensors", name="restore-x2", task="restore", metrics={"psnr_y": 30.1})
    assert [(e.name, e.scale, e.metrics) for e in list_models(tmp_path)] == [
        ("restore-x2", 2, {"psnr_y": 30.1})
    ]
    assert resolve_model("restore-x2", tmp_path) == tmp_path / "a.safetensors"
    with pytest.raises(ConfigError, match="unknown model 'restore-x9'; choose one of: restore-x2"):
        resolve_model("restore-x9", tmp_path)
    registry = {"models": [{"name": "fast", "file": "a.safetensors", "description": "small"}]}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    (entry,) = list_models(tmp_path)
    assert (entry.name, entry.description, entry.task) == ("fast", "small", "restore")


def test_cuda_without_cuda_is_a_config_error(model_file: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Restorer.from_pretrained(model_file, device="cuda")


def test_colourise_keeps_the_input_luminance(tmp_path: Path) -> None:
    config = {**TINY, "scale": 1}
    restorer = Restorer.from_pretrained(
        _save(tmp_path / "colour.safetensors", config, task="colorize"), device="cpu"
    )
    levels = np.random.default_rng(0).integers(50, 205, (16, 16, 1))  # an 8-bit grey picture
    grey = np.repeat(levels / 255.0, 3, axis=2).astype(np.float32)
    restored = restorer.restore(Picture(grey, grayscale=True))
    assert not restored.grayscale  # colour was added: written back as colour
    np.testing.assert_allclose(rgb_to_y(restored.rgb), rgb_to_y(grey), atol=0.25)  # exact after rounding:
    out8 = np.rint(restored.rgb * 255.0)  # test_colorize.py checks that in detail
    np.testing.assert_array_equal(np.rint(out8 @ [0.299, 0.587, 0.114]), levels[..., 0])


def test_keep_luminance_upscales_the_source() -> None:
    source = np.full((4, 4, 3), 0.5, np.float32)
    pred = np.zeros((8, 8, 3), np.float32)
    pred[..., 0] = 0.6  # reddish, darker than the source
    out = keep_luminance(source, pred)
    np.testing.assert_allclose(rgb_to_y(out), rgb_to_y(np.full((8, 8, 3), 0.5)), atol=1e-3)
    assert out[..., 0].mean() > out[..., 1].mean()  # the colour is the prediction's


def test_out_of_memory_through_the_restorer(model_file: Path) -> None:
    """A tile too big for memory is halved and the result is still sound; nothing fits: one clear error."""
    restorer = Restorer.from_pretrained(model_file, device="cpu", tile=0, tile_overlap=8)
    rgb = _rgb(64, 64, 5)
    expected = restorer.restore_array(rgb)
    runner = restorer._runner

    def small_memory(lq: torch.Tensor) -> torch.Tensor:
        if lq.shape[-2] * lq.shape[-1] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return runner(lq)

    restorer._runner = small_memory  # the runner's scale and stride are no longer needed past this point
    restorer._runner.size_multiple = runner.size_multiple
    limit = 48 * 48
    error = restorer.restore_array(rgb) - expected
    assert 10 * np.log10(1 / np.mean(error**2)) > 35  # tiles with a short overlap: close, not identical
    limit = 0
    with pytest.raises(DecrappifyError, match="out of memory even with"):
        restorer.restore_array(rgb)
