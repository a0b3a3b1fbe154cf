"""--outscale (any output size) and --strength (a model part way to its pair: weights, else pixels)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from decrappify.cli import main
from decrappify.errors import ConfigError, InputError
from decrappify.inference.outscale import (
    check_output,
    check_outscale,
    resize_rgb,
    restore_array_at,
    restore_picture_at,
)
from decrappify.inference.restorer import Restorer
from decrappify.inference.strength import ModelPair, check_strength, find_pair, restorer_with_strength
from decrappify.io.images import Picture, read_image, write_image
from decrappify.nn.models import create_model
from decrappify.weights import save_model
from tests.conftest import TINY_COMPACT, save_tiny_model

OTHER_ARCH = {"arch": "compact", "scale": 2, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


def _save(path, config=TINY_COMPACT, seed=0, **info):
    torch.manual_seed(seed)
    return save_model(create_model(config), path, config, {"name": path.stem, "task": "restore", **info})


@pytest.fixture
def rgb():
    return np.random.default_rng(0).random((20, 24, 3), dtype=np.float32)


# --------------------------------------------------------------------------------------------------- outscale


def test_resize_is_area_down_and_lanczos_up(rgb):
    small = resize_rgb(rgb, (12, 10))
    assert np.allclose(small[0, 0], rgb[:2, :2].mean(axis=(0, 1)), atol=1e-6)  # exact means of 2 x 2 blocks
    big = resize_rgb(rgb, (60, 50))
    assert big.shape == (50, 60, 3) and big.dtype == np.float32 and big.min() >= 0 and big.max() <= 1


def test_outscale_gives_any_size_and_keeps_alpha(model_file, rgb):
    restorer = Restorer.from_pretrained(model_file, device="cpu")  # x2
    for scale, size in ((1, (20, 24)), (1.5, (30, 36)), (3, (60, 72)), (7.25, (145, 174))):
        assert restore_array_at(restorer, rgb, scale).shape[:2] == size
    shrunk = restore_array_at(restorer, rgb, 1.5, shrink_first=True)
    assert shrunk.shape[:2] == (30, 36)
    picture = Picture(rgb, alpha=np.ones((20, 24), np.float32), bit_depth=16)
    out = restore_picture_at(restorer, picture, 2.5)
    assert out.rgb.shape == (50, 60, 3) and out.alpha.shape == (50, 60) and out.bit_depth == 16


def test_outscale_limits(model_file):
    restorer = Restorer.from_pretrained(model_file, device="cpu")
    for bad in (0.5, 9, "x", float("nan")):
        with pytest.raises(ConfigError, match="from 1 to 8"):
            check_outscale(bad)
    with pytest.raises(InputError, match="outscale 8"):
        check_output(restorer, 100, 100, outscale=8, path="a.png", max_output_pixels=500_000)
    with pytest.raises(InputError, match="200 x 200"):  # the model's own output is made first, then shrunk
        check_output(restorer, 100, 100, outscale=1, path="a.png", max_output_pixels=20_000)
    check_output(restorer, 100, 100, outscale=1, shrink_first=True, path="a.png", max_output_pixels=20_000)


def test_restore_cli_outscale(model_file, tmp_path):
    source = tmp_path / "in.png"
    write_image(Picture(np.random.default_rng(1).random((10, 14, 3), dtype=np.float32)), source)
    code = main(["restore", str(source), "-o", str(tmp_path / "out"), "--model", str(model_file), "--device", "cpu",
                 "--outscale", "3.5", "-q"])  # fmt: skip
    assert code == 0 and read_image(tmp_path / "out" / "in.png").size == (49, 35)
    assert main(["restore", str(source), "--outscale", "0.5", "-q"]) == 2  # argparse: 1..8


# --------------------------------------------------------------------------------------------------- strength


def test_interpolated_weights_between_two_fine_tunes(tmp_path, rgb):
    first = _save(tmp_path / "l1.safetensors", seed=0, strength_pair="gan.safetensors")
    second = _save(tmp_path / "gan.safetensors", seed=1)
    assert find_pair(first) == second  # the file beside it that its info names
    pair = ModelPair(first, second)
    assert pair.mode == "interpolate"
    model, _, info = pair.model_at(0.25)
    a, b = pair.first.model.state_dict(), pair.second.model.state_dict()
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.75 * a[key] + 0.25 * b[key], atol=1e-6), key
    assert info["strength"] == {"pair": "gan", "value": 0.25, "mode": "interpolate"}
    ends = [restorer_with_strength(first, s, device="cpu").restore_array(rgb) for s in (0.0, 1.0)]
    plain = [Restorer.from_pretrained(path, device="cpu").restore_array(rgb) for path in (first, second)]
    assert np.allclose(ends[0], plain[0]) and np.allclose(ends[1], plain[1])
    middle = restorer_with_strength(first, 0.5, device="cpu")
    assert middle.name == "l1+gan@0.5" and middle.restore_array(rgb).shape == (40, 48, 3)


def test_pairs_that_cannot_be_interpolated_are_blended_with_a_warning(tmp_path, rgb, caplog):
    first = _save(tmp_path / "a.safetensors")
    second = _save(tmp_path / "b.safetensors", OTHER_ARCH, seed=3)
    with caplog.at_level(logging.WARNING):
        restorer = restorer_with_strength(first, 0.5, blend_with=second, device="cpu", precision="fp32")
    assert "cannot be interpolated" in caplog.text and "blended pixel by pixel" in caplog.text
    outputs = [Restorer.from_pretrained(path, device="cpu").restore_array(rgb) for path in (first, second)]
    assert np.allclose(restorer.restore_array(rgb), 0.5 * outputs[0] + 0.5 * outputs[1], atol=1e-5)


def test_strength_errors_say_what_to_do(tmp_path):
    lone = _save(tmp_path / "lone.safetensors")
    with pytest.raises(ConfigError, match="--blend-with"):
        restorer_with_strength(lone, 0.5, device="cpu")
    with pytest.raises(ConfigError, match="from 0"):
        check_strength(1.5)
    missing = _save(tmp_path / "m.safetensors", strength_pair="no-such-gan")
    with pytest.raises(ConfigError, match="no-such-gan"):
        find_pair(missing)
    x4 = save_tiny_model(tmp_path / "x4.safetensors", {**OTHER_ARCH, "scale": 4}, scale=4)
    with pytest.raises(ConfigError, match="scales differ"):
        ModelPair(lone, x4)


def test_restore_cli_strength(tmp_path):
    first = _save(tmp_path / "l1.safetensors", seed=0, strength_pair="gan.safetensors")
    _save(tmp_path / "gan.safetensors", seed=1)
    source = tmp_path / "in.png"
    write_image(Picture(np.random.default_rng(2).random((12, 10, 3), dtype=np.float32)), source)
    args = ["restore", str(source), "--model", str(first), "--device", "cpu", "-q"]
    assert main([*args, "-o", str(tmp_path / "half"), "--strength", "0.5"]) == 0
    assert read_image(tmp_path / "half" / "in.png").size == (20, 24)
    assert main([*args, "-o", str(tmp_path / "x"), "--strength", "1.5"]) == 2
    lone = _save(tmp_path / "lone.safetensors")
    assert main(["restore", str(source), "--model", str(lone), "-o", str(tmp_path / "y"), "--strength", "0.3"]) == 2
