"""No-reference and spectral scores: NIQE and BRISQUE rank known degradations, the ratios read 1.0 on the truth."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from decrappify.errors import ConfigError
from decrappify.evaluation import quality, text_detection

BSDS_TEST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bsds500" / "test"
needs_brisque = pytest.mark.skipif(not quality.brisque_available(), reason="needs the brisque package's model")
needs_detector = pytest.mark.skipif(not text_detection.available(), reason="needs rapidocr-onnxruntime")


def _jpeg(image: Image.Image, quality_: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality_)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _bicubic_x4(image: Image.Image) -> Image.Image:
    small = image.resize((image.width // 4, image.height // 4), Image.Resampling.BICUBIC)
    return small.resize(image.size, Image.Resampling.BICUBIC)


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """Three BSDS500 *test* photos (training data, never the BSD100 benchmark), cropped to multiples of 4."""
    paths = sorted(BSDS_TEST.glob("*.jpg"))[:3]
    if len(paths) < 3:
        pytest.skip(f"needs the BSDS500 test photos in {BSDS_TEST}")
    images = [Image.open(path).convert("RGB") for path in paths]
    return [image.crop((0, 0, image.width // 4 * 4, image.height // 4 * 4)) for image in images]


VARIANTS = {
    "truth": lambda image: image,
    "q30": lambda image: _jpeg(image, 30),
    "q10": lambda image: _jpeg(image, 10),
    "blur1": lambda image: image.filter(ImageFilter.GaussianBlur(1)),
    "blur2": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "bicubic": _bicubic_x4,
}


def _ranking(photos: list[Image.Image], score) -> dict[str, float]:
    return {name: float(np.mean([score(_array(make(p))) for p in photos])) for name, make in VARIANTS.items()}


def _assert_ranks(means: dict[str, float]) -> None:
    assert means["truth"] < means["q30"] < means["q10"], means
    assert means["truth"] < means["blur1"] < means["blur2"], means
    assert means["truth"] < means["bicubic"], means


def test_niqe_ranks_jpeg_blur_and_bicubic_below_the_truth(photos) -> None:
    _assert_ranks(_ranking(photos, quality.niqe))


@needs_brisque
def test_brisque_ranks_jpeg_blur_and_bicubic_below_the_truth(photos) -> None:
    _assert_ranks(_ranking(photos, quality.brisque))


def test_shipped_niqe_model_is_a_36_feature_gaussian() -> None:
    mean, cov = quality.load_niqe_model()
    assert mean.shape == (36,) and cov.shape == (36, 36) and np.allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > -1e-9)


def test_niqe_refuses_a_picture_smaller_than_a_patch() -> None:
    with pytest.raises(ConfigError, match="96x96"):
        quality.niqe(np.zeros((64, 200, 3), np.float32))


def test_half_size_matches_opencv_inter_cubic() -> None:
    cv2 = pytest.importorskip("cv2")
    grey = np.random.default_rng(0).random((81, 120))
    expected = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(quality._half_cubic(grey), expected, atol=1e-9)


@needs_brisque
def test_brisque_model_loads_without_unpickling_classes() -> None:
    model = quality.load_brisque_model()
    assert model["vectors"].shape == (len(model["coefficients"]), 36) and model["min"].shape == (36,)


def _texture(seed: int = 0, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((size // 4, size // 4, 3)) * 255).astype(np.uint8))
    return _array(image.resize((size, size), Image.Resampling.BICUBIC))


def test_hf_ratio_is_one_on_the_truth_below_for_blur_above_for_noise() -> None:
    hq = _texture()
    blurred = _array(Image.fromarray(np.rint(hq * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2)))
    noisy = np.clip(hq + np.random.default_rng(1).normal(0, 0.05, hq.shape), 0, 1)
    assert quality.hf_ratio(hq, hq) == pytest.approx(1.0)
    assert quality.hf_ratio(blurred, hq) < 0.5 and quality.hf_ratio(noisy, hq) > 1.05


def test_periodic_artifact_flags_a_checkerboard_but_not_noise() -> None:
    hq = _texture()
    y, x = np.mgrid[0:128, 0:128]
    checker = np.clip(hq + 0.02 * ((x + y) % 2 * 2 - 1)[..., None], 0, 1)  # a period-2 pattern, +-5 levels
    period4 = np.clip(hq + 0.02 * (x % 4 == 0)[..., None], 0, 1)
    noisy = np.clip(hq + np.random.default_rng(2).normal(0, 0.02, hq.shape), 0, 1)
    assert quality.periodic_artifact(hq, hq) == pytest.approx(1.0)
    assert quality.periodic_artifact(checker, hq) > 5 and quality.periodic_artifact(period4, hq) > 5
    assert quality.periodic_artifact(noisy, hq) < 2


@needs_detector
def test_text_is_found_in_its_box_and_not_in_an_empty_one() -> None:
    image = Image.fromarray((np.full((240, 360, 3), 200)).astype(np.uint8))
    ImageDraw.Draw(image).text((40, 100), "WATERMARK 2024", fill=(20, 20, 20), font_size=32)
    rgb = _array(image)
    text_box, empty_box = (30, 90, 330, 145), (30, 170, 330, 230)
    assert text_detection.share_of_boxes_with_text(rgb, [text_box]) == 1.0
    assert text_detection.share_of_boxes_with_text(rgb, [text_box, empty_box]) == 0.5
    assert text_detection.share_of_boxes_with_text(rgb, []) is None


@needs_brisque
@needs_detector
def test_evaluate_reports_every_quality_score_and_the_truth_row(tmp_path: Path) -> None:
    from decrappify.evaluation.evaluate import evaluate
    from decrappify.evaluation.report import write_report

    data = tmp_path / "clean"
    data.mkdir()
    Image.fromarray(np.rint(_texture(3, 128) * 255).astype(np.uint8)).save(data / "a.png")
    result = evaluate(data, "restore-x4", [], perceptual=False)
    row = result.to_dict()["results"][0]
    assert all(row[key] is not None for key in ("niqe", "brisque", "hf_ratio", "periodic_artifact"))
    assert row["text_boxes_detected"] in (0.0, 1.0)
    assert set(result.to_dict()["truth"]) == {"niqe", "brisque", "text_boxes_detected"}
    assert set(result.to_dict()["input"]) == {"text_boxes_detected"}
    table = result.to_markdown()
    assert "| NIQE | BRISQUE | HF ratio | periodic 2/4 px | text boxes |" in table and "\n| truth | - |" in table
    page = write_report(result, tmp_path / "report").read_text()
    assert "<th>NIQE</th>" in page and "<th>text boxes</th>" in page and "<td>truth</td>" in page
    skipped = evaluate(data, "restore-x4", [], perceptual=False, no_reference=False, text_detection=False)
    assert "truth" not in skipped.to_dict() and skipped.to_dict()["results"][0]["niqe"] is None


def test_ratios_against_a_flat_truth_are_one_or_undefined_never_infinite() -> None:
    flat = np.full((32, 32, 3), 0.5, np.float32)
    noisy = np.clip(flat + np.random.default_rng(0).normal(0, 0.05, flat.shape), 0, 1)
    assert quality.hf_ratio(flat, flat) == 1.0 and quality.periodic_artifact(flat, flat) == 1.0
    assert quality.hf_ratio(noisy, flat) is None and quality.periodic_artifact(noisy, flat) is None
