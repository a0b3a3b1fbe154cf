"""Crappify degradations: sizes, determinism, JPEG strength, watermark boxes, presets."""

from __future__ import annotations

import itertools
import pickle
import string

import numpy as np
import pytest
from PIL import Image

from decrappify.data import degrade
from decrappify.data.degrade import (
    PRESETS,
    Degraded,
    Downscale,
    GaussianBlur,
    GaussianNoise,
    Grayscale,
    Jpeg,
    Pipeline,
    TextWatermark,
    create_preset,
    modcrop,
    rng_for,
)
from decrappify.errors import ConfigError, InputError


def photo_like(seed: int, width: int = 64, height: int = 48) -> Image.Image:
    """A smooth colour field with some texture: JPEG has to work on it, unlike on pure noise or a flat image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 6.28)
        channels.append(0.5 + 0.35 * np.sin(fx * x + phase) * np.cos(fy * y))
    rgb = np.stack(channels, axis=2) + rng.normal(0, 0.04, (height, width, 3))
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((pixels(a).astype(np.float64) - pixels(b)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def changed_mask(before: Image.Image, after: Image.Image) -> np.ndarray:
    return (pixels(before) != pixels(after)).any(axis=2)


def inside(mask: np.ndarray, boxes: list[degrade.Box]) -> np.ndarray:
    allowed = np.zeros_like(mask)
    for left, top, right, bottom in boxes:
        allowed[top:bottom, left:right] = True
    return allowed


# ------------------------------------------------------------------------------------------------ rng, modcrop


def test_rng_for_is_stable_and_keyed():
    first = rng_for(0, "a/b.png").integers(0, 2**31, size=4)
    assert np.array_equal(first, rng_for(0, "a/b.png").integers(0, 2**31, size=4))
    assert not np.array_equal(first, rng_for(1, "a/b.png").integers(0, 2**31, size=4))
    assert not np.array_equal(first, rng_for(0, "a/c.png").integers(0, 2**31, size=4))
    # Pinned: changing the hash would silently change every crappified dataset and every evaluation.
    assert rng_for(7, "img.png").integers(0, 1000, size=3).tolist() == [445, 79, 729]


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_rng_for_rejects_bad_seeds(seed):
    with pytest.raises(ConfigError):
        rng_for(seed, "a.png")


def test_modcrop_crops_right_and_bottom():
    image = photo_like(0, 37, 22)
    cropped = modcrop(image, 4)
    assert cropped.size == (36, 20)
    assert np.array_equal(pixels(cropped), pixels(image)[:20, :36])
    assert modcrop(image, 1) is image
    with pytest.raises(InputError):
        modcrop(photo_like(0, 3, 9), 4)


# ---------------------------------------------------------------------------------------------------- downscale


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((481, 321), 4, (120, 80)),
        ((7, 5), 2, (3, 2)),
        ((9, 13), 3, (3, 4)),
        ((3, 9), 4, (1, 2)),
        ((2, 2), 4, (1, 1)),
    ],
)
def test_downscale_output_size_is_floor_of_size_over_scale(size, scale, expected):
    out = Downscale(scale)(Degraded(photo_like(1, *size)), rng_for(0, "k"))
    assert out.image.size == expected
    assert out.scale == scale


def test_downscale_is_bicubic_of_the_modcropped_image():
    image = photo_like(2, 67, 45)
    out = Downscale(4, "bicubic")(Degraded(image), rng_for(0, "k")).image
    expected = modcrop(image, 4).resize((16, 11), Image.Resampling.BICUBIC)
    assert np.array_equal(pixels(out), pixels(expected))


def test_downscale_random_resample_is_seeded():
    step = Downscale(2, ("nearest", "bicubic", "lanczos"))
    image = photo_like(3)
    outs = {step(Degraded(image), rng_for(s, "k")).image.tobytes() for s in range(12)}
    assert len(outs) > 1
    again = step(Degraded(image), rng_for(5, "k")).image.tobytes()
    assert again == step(Degraded(image), rng_for(5, "k")).image.tobytes()


@pytest.mark.parametrize("kwargs", [{"scale": 0}, {"scale": 2.0}, {"resample": "cubic"}, {"resample": ()}])
def test_downscale_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        Downscale(**kwargs)


# --------------------------------------------------------------------------------------------------------- jpeg


def test_jpeg_quality_lowers_psnr_monotonically():
    qualities = [10, 30, 50, 70, 90]
    mean_psnr = []
    for quality in qualities:
        step = Jpeg(quality)
        scores = [
            psnr(image, step(Degraded(image), rng_for(seed, "k")).image)
            for seed in range(4)
            for image in [photo_like(seed), photo_like(seed + 10, 80, 64)]
        ]
        mean_psnr.append(np.mean(scores))
    assert all(a < b for a, b in itertools.pairwise(mean_psnr)), mean_psnr
    assert mean_psnr[-1] - mean_psnr[0] > 3


def test_jpeg_range_draws_qualities_from_the_range():
    image = photo_like(4)
    outs = {Jpeg((10, 70))(Degraded(image), rng_for(s, "k")).image.tobytes() for s in range(8)}
    assert len(outs) > 1
    rng = rng_for(3, "k")
    quality = int(rng_for(3, "k").integers(10, 71))
    assert (
        Jpeg((10, 70))(Degraded(image), rng).image.tobytes()
        == degrade.jpeg_roundtrip(image, quality).tobytes()
    )


@pytest.mark.parametrize("quality", [0, 101, 50.5, (70, 10), (10, 20, 30), True])
def test_jpeg_rejects_bad_quality(quality):
    with pytest.raises(ConfigError):
        Jpeg(quality)


# ---------------------------------------------------------------------------------------------------- watermark


@pytest.mark.parametrize("size", [(64, 48), (200, 120), (24, 24), (12, 40), (301, 97)])
def test_watermark_changes_pixels_only_inside_its_tight_box(size):
    for seed in range(12):
        image = photo_like(seed, *size)
        out = TextWatermark()(Degraded(image), rng_for(seed, "k"))
        changed = changed_mask(image, out.image)
        assert changed.any(), (size, seed)
        assert len(out.boxes) == 1
        left, top, right, bottom = out.boxes[0]
        assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]
        assert not (changed & ~inside(changed, out.boxes)).any()
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        assert (left, top, right, bottom) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


def test_watermark_text_is_legible_size_on_small_images():
    image = photo_like(0, 96, 64)
    heights = [TextWatermark()(Degraded(image), rng_for(s, "k")).boxes[0] for s in range(10)]
    # min_size=10 px font: glyph boxes of at least ~7 px tall even where 8% of 64 px would be 5 px.
    assert min(box[3] - box[1] for box in heights) >= 7


def test_watermark_keeps_earlier_boxes_and_probability_zero_is_identity():
    image = photo_like(5)
    sample = Degraded(image, [(1, 1, 3, 3)], 2)
    out = TextWatermark()(sample, rng_for(0, "k"))
    assert out.boxes[0] == (1, 1, 3, 3) and len(out.boxes) == 2 and out.scale == 2
    untouched = TextWatermark(probability=0.0)(Degraded(image), rng_for(0, "k"))
    assert untouched.image.tobytes() == image.tobytes() and untouched.boxes == []


@pytest.mark.parametrize(
    "kwargs",
    [{"opacity": 1.5}, {"size": (0.3, 0.1)}, {"min_size": 0}, {"words": (1.5, 2)}, {"probability": -1}],
)
def test_watermark_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        TextWatermark(**kwargs)


def test_random_text_uses_letters_digits_and_spaces():
    allowed = set(string.ascii_letters + string.digits + " ")
    for seed in range(20):
        text = degrade.random_text(rng_for(seed, "k"), words=(1, 2), word_length=(3, 8))
        assert set(text) <= allowed
        words = text.split(" ")
        assert 1 <= len(words) <= 2 and all(3 <= len(w) <= 8 for w in words)


@pytest.mark.parametrize("after", [Downscale(4, "bicubic"), Downscale(3, "lanczos"), GaussianBlur(1.5)])
def test_boxes_follow_the_watermark_through_later_steps(after):
    for seed in range(6):
        image = photo_like(seed, 160, 120)
        marked = TextWatermark()(Degraded(image), rng_for(seed, "k"))
        clean_out = after(Degraded(image), rng_for(0, "a"))
        marked_out = after(marked, rng_for(0, "a"))
        changed = changed_mask(clean_out.image, marked_out.image)
        assert changed.any()
        assert not (changed & ~inside(changed, marked_out.boxes)).any(), (seed, marked_out.boxes)


# ------------------------------------------------------------------------------------------- noise, blur, grey


def test_noise_blur_and_grayscale():
    image = photo_like(6)
    for step in [GaussianNoise((2.0, 8.0)), GaussianBlur((0.5, 2.0))]:
        out = step(Degraded(image), rng_for(1, "k")).image
        assert out.size == image.size and out.mode == "RGB"
        assert out.tobytes() != image.tobytes()
        assert out.tobytes() == step(Degraded(image), rng_for(1, "k")).image.tobytes()
    grey = pixels(Grayscale()(Degraded(image), rng_for(0, "k")).image)
    assert grey.shape == (48, 64, 3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert np.array_equal(grey[..., 0], pixels(image.convert("L")))


# --------------------------------------------------------------------------------------- pipeline and presets


def test_pipeline_is_deterministic_picklable_and_converts_to_rgb():
    pipeline = Pipeline([Downscale(2), TextWatermark(), GaussianBlur(), GaussianNoise(), Jpeg()])
    assert pipeline.scale == 2
    image = photo_like(7, 90, 70).convert("RGBA")
    first = pipeline(image, rng_for(0, "a.png"))
    assert first.image.mode == "RGB" and first.image.size == (45, 35) and first.scale == 2
    copy = pickle.loads(pickle.dumps(pipeline))
    assert copy == pipeline
    second = copy(image, rng_for(0, "a.png"))
    assert second.image.tobytes() == first.image.tobytes() and second.boxes == first.boxes
    assert pipeline(image, rng_for(1, "a.png")).image.tobytes() != first.image.tobytes()
    assert Pipeline([Downscale(2), Downscale(3)]).scale == 6


def test_pipeline_rejects_non_degradations():
    with pytest.raises(ConfigError):
        Pipeline([Downscale(2), "jpeg"])


@pytest.mark.parametrize(
    ("name", "scale"), [("sr-x4", 4), ("restore-x4", 4), ("restore-x1", 1), ("colorize", 1)]
)
def test_presets_are_discoverable_and_have_the_right_scale(name, scale):
    assert PRESETS[name].description
    pipeline = create_preset(name)
    assert isinstance(pipeline, Pipeline) and pipeline.scale == scale
    out = pipeline(photo_like(8, 64, 48), rng_for(0, "k"))
    assert out.image.size == (64 // scale, 48 // scale)
    assert bool(out.boxes) == name.startswith("restore")


def test_sr_x4_is_plain_bicubic():
    image = photo_like(9, 64, 48)
    out = create_preset("sr-x4")(image, rng_for(0, "k")).image
    assert out.tobytes() == image.resize((16, 12), Image.Resampling.BICUBIC).tobytes()


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ConfigError) as error:
        create_preset("restore-x3")
    for name in PRESETS:
        assert name in str(error.value)
