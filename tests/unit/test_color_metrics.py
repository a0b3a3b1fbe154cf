"""Colourfulness, CIELAB a*b* error, hue agreement, the VGG perceptual distance, and their columns in evaluate /
report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decrappify.errors import InputError
from decrappify.evaluation import metrics
from decrappify.evaluation.evaluate import evaluate
from decrappify.evaluation.perceptual import LAYERS, PerceptualDistance
from decrappify.evaluation.report import write_report
from decrappify.nn.backbones import VGGFeatures


def _photo(seed: int = 0, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A colourful smooth image with an edge and mild noise, float32 H x W x 3 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
    rgb = np.stack([x, 1 - y, 0.5 + 0.4 * np.sin(5 * x * y)], axis=-1)
    rgb[size[0] // 3 :, size[1] // 2 :] *= [1.0, 0.3, 0.2]
    return np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- colour


def test_grey_images_have_zero_colourfulness() -> None:
    grey = np.repeat(np.random.default_rng(0).uniform(0, 1, (16, 16, 1)), 3, axis=2)
    assert metrics.colourfulness(grey) == pytest.approx(0.0, abs=1e-9)


def test_colourfulness_follows_hasler_and_suesstrunk() -> None:
    red = np.zeros((8, 8, 3))
    red[..., 0] = 1.0  # rg = 255, yb = 127.5 everywhere: no spread, 0.3 * |mean|
    assert metrics.colourfulness(red) == pytest.approx(0.3 * math.hypot(255, 127.5))
    half = red.copy()
    half[:, 4:] = [0.0, 0.0, 1.0]  # red | blue: rg in {255, 0}, yb in {127.5, -255}
    expected = math.hypot(127.5, 191.25) + 0.3 * math.hypot(127.5, 63.75)
    assert metrics.colourfulness(half) == pytest.approx(expected)
    assert metrics.colourfulness(half) > 109  # "extremely colourful" on their scale
    desaturated = 0.5 * half + 0.5 * half.mean(axis=2, keepdims=True)
    assert 0 < metrics.colourfulness(desaturated) < metrics.colourfulness(half)


def test_ab_error_is_zero_for_identical_images_and_ignores_lightness() -> None:
    photo = _photo()
    assert metrics.ab_error(photo, photo) == 0.0
    dark_grey, light_grey = np.full((8, 8, 3), 0.2), np.full((8, 8, 3), 0.8)
    assert metrics.ab_error(dark_grey, light_grey) < 0.01  # a* = b* = 0 up to the D65 white point rounding
    grey = np.repeat(photo.mean(axis=2, keepdims=True), 3, axis=2)
    assert metrics.ab_error(grey, photo) > 10


def test_ab_error_matches_skimage_for_a_known_colour() -> None:
    from skimage.color import rgb2lab

    red, blue = np.zeros((2, 2, 3)), np.zeros((2, 2, 3))
    red[..., 0], blue[..., 2] = 1.0, 1.0
    lab_red, lab_blue = rgb2lab(red)[0, 0], rgb2lab(blue)[0, 0]
    assert metrics.ab_error(red, blue) == pytest.approx(math.dist(lab_red[1:], lab_blue[1:]))
    with pytest.raises(InputError, match="differ in shape"):
        metrics.ab_error(red, np.zeros((3, 2, 3)))


def _lch_patch(lightness: float, chroma: float, hue_degrees: float, size: int = 4) -> np.ndarray:
    """A flat sRGB patch of the given CIELAB lightness, chroma and hue (in gamut for the values used here)."""
    from skimage.color import lab2rgb

    hue = math.radians(hue_degrees)
    lab = np.array([lightness, chroma * math.cos(hue), chroma * math.sin(hue)])
    return np.broadcast_to(lab2rgb(lab[None, None]), (size, size, 3)).astype(np.float64)


def test_hue_agreement_counts_hues_within_30_degrees_of_the_truths() -> None:
    truth = _lch_patch(60, 40, 40)
    assert metrics.hue_agreement(truth, truth) == 1.0
    assert metrics.hue_agreement(_lch_patch(60, 40, 65), truth) == 1.0  # 25 degrees off, duller: agrees
    assert metrics.hue_agreement(_lch_patch(50, 15, 65), truth) == 1.0  # lightness and chroma do not matter
    assert metrics.hue_agreement(_lch_patch(60, 40, 75), truth) == 0.0  # 35 degrees off
    assert metrics.hue_agreement(_lch_patch(60, 40, 220), truth) == 0.0  # the opposite hue
    # the shorter way round the circle: 350 degrees is 20 from 10
    assert metrics.hue_agreement(_lch_patch(60, 30, 350), _lch_patch(60, 30, 10)) == 1.0


def test_hue_agreement_judges_only_colourful_truth_and_grey_never_agrees() -> None:
    colourful, muted = _lch_patch(60, 40, 40), _lch_patch(60, 5, 200)
    truth = np.concatenate([colourful, muted], axis=1)  # half the pixels have chroma 5: not judged
    pred = np.concatenate([colourful, colourful], axis=1)  # right where judged, "wrong" where not
    assert metrics.hue_agreement(pred, truth) == 1.0
    grey = np.full_like(truth, 0.5)
    assert metrics.hue_agreement(grey, truth) == 0.0  # no chroma, no hue (atan2(0, 0) would say red, 0 deg)
    assert metrics.hue_agreement(grey, grey) is None  # nothing colourful to judge
    half = np.concatenate([colourful, _lch_patch(60, 40, 160)], axis=1)
    assert metrics.hue_agreement(half, np.concatenate([colourful, colourful], axis=1)) == 0.5


# ---------------------------------------------------------------------------------------------- perceptual


@pytest.fixture(scope="module")
def tiny_distance() -> PerceptualDistance:
    torch.manual_seed(0)
    return PerceptualDistance(VGGFeatures("vgg16", width_divisor=16))


def test_perceptual_distance_is_zero_for_identical_and_grows_with_damage(tiny_distance) -> None:
    photo = _photo()
    rng = np.random.default_rng(1)
    mild = np.clip(photo + rng.normal(0, 0.02, photo.shape), 0, 1)
    strong = np.clip(photo + rng.normal(0, 0.2, photo.shape), 0, 1)
    assert tiny_distance(photo, photo) == 0.0
    assert 0 < tiny_distance(mild, photo) < tiny_distance(strong, photo) <= 4.0
    assert tiny_distance(mild, photo) == pytest.approx(tiny_distance(photo, mild), rel=1e-5)


def test_perceptual_reference_is_reused_and_border_cropped(tiny_distance) -> None:
    photo, other = _photo(0), _photo(1)
    reference = tiny_distance.reference(photo, border=4)
    assert tiny_distance.distance(other, reference, border=4) == pytest.approx(tiny_distance(other, photo, 4))
    framed = other.copy()
    framed[:4] = 0.0  # damage only inside the cropped border
    assert tiny_distance(framed, photo, 4) == pytest.approx(tiny_distance(other, photo, 4), rel=1e-6)


def test_small_images_use_the_layers_they_reach(tiny_distance) -> None:
    """A 12-pixel image cannot reach relu5_3 (4 max-pools): it is scored on the shallower layers."""
    assert tiny_distance._usable_layers(12, 20) == list(LAYERS[:4])
    photo = _photo(size=(12, 20))
    assert math.isfinite(tiny_distance(photo * 0.8, photo)) and tiny_distance(photo * 0.8, photo) > 0


# ---------------------------------------------------------------------------------------------- evaluate


class Sepia:
    """A scale-1 'colouriser' that paints every grey input brown."""

    name, scale = "sepia", 1

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray:
        return np.clip(rgb_lq * np.array([1.1, 0.9, 0.7], dtype=np.float32), 0, 1)


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for seed in range(2):
        Image.fromarray(np.rint(_photo(seed) * 255).astype(np.uint8)).save(root / f"p{seed}.png")
    return root


def test_colorize_evaluation_reports_colour_and_perceptual_columns(
    photo_dir, tiny_distance, tmp_path
) -> None:
    result = evaluate(photo_dir, "colorize", [Sepia()], perceptual=tiny_distance)
    data = result.to_dict()
    grey, sepia = data["results"]
    assert grey["method"] == "input" and grey["colourfulness"] == pytest.approx(0.0, abs=1e-6)
    assert sepia["colourfulness"] > 5 and grey["ab_error"] > 5 and sepia["ab_error"] > 0
    assert grey["perceptual"] > 0 and sepia["perceptual"] > 0
    assert data["truth"]["colourfulness"] > sepia["colourfulness"]
    assert grey["hue_agreement"] == 0.0 and 0 < sepia["hue_agreement"] < 1  # brown is right only where it is brown
    assert data["images"][0]["scores"]["sepia"]["hue_agreement"] is not None
    table = result.to_markdown()
    assert "| VGG dist | colourfulness | a*b* error | hue within 30° |" in table and "not LPIPS" in table
    assert "colourfulness of the truth" in table
    page = write_report(result, tmp_path / "report").read_text()
    assert "<th>VGG distance</th><th>colourfulness</th><th>a*b* error</th><th>hue within 30°</th>" in page
    assert "not LPIPS" in page and "hue within 30°: " in page


def test_other_tasks_have_no_colour_columns_and_perceptual_can_be_off(photo_dir) -> None:
    result = evaluate(photo_dir, "restore-x1", [], perceptual=False, keep_crops=False, no_reference=False,
                      text_detection=False)  # fmt: skip
    data = result.to_dict()
    assert set(data) == {"task", "dataset", "scale", "results", "images"}
    (row,) = data["results"]
    assert row["perceptual"] is None and row["colourfulness"] is None and row["ab_error"] is None
    assert row["hue_agreement"] is None
    assert "VGG dist" not in result.to_markdown() and "colourfulness" not in json.dumps(data).replace(
        '"colourfulness": null', ""
    )
