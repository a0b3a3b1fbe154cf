"""Finding the watermark (issue 22): the exact text mask of crappify, the mask data and model, BCE + Dice, the
segmentation scores, and restoring only inside the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from decrappify.data.degrade import Downscale, Jpeg, Pipeline, TextWatermark, create_preset, rng_for, shrink_mask
from decrappify.data.masks import MASK_ON, MaskDataset, build_mask_validation
from decrappify.data.pairs import ImageStore
from decrappify.errors import ConfigError, InputError
from decrappify.evaluation.segmentation import (
    MaskCounts,
    box_iou,
    boxes_found,
    count_mask,
    evaluate_text_mask,
    text_boxes,
)
from decrappify.inference.restorer import Restorer
from decrappify.inference.text_mask import TextMasker, blend_weights, keep_masked, restore_only_masked
from decrappify.io.images import Picture
from decrappify.nn import create_model
from decrappify.nn.segmentation import MaskUnet
from decrappify.train.config import load_config
from decrappify.train.losses import BceDiceLoss
from tests.conftest import save_tiny_model
from tests.text_mask_models import TINY_MASK_UNET, save_constant_mask_model

TINY_X1 = {"arch": "compact", "scale": 1, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


def photo(seed: int = 0, width: int = 96, height: int = 72) -> Image.Image:
    """A smooth random picture (so JPEG and text both change it visibly)."""
    small = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("clean")
    for i in range(4):
        photo(i, 96 + 8 * i, 72).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("mask-models")
    return {
        "all": save_constant_mask_model(folder / "all-text.safetensors", text=True),
        "none": save_constant_mask_model(folder / "no-text.safetensors", text=False),
        "x1": save_tiny_model(folder / "tiny-x1.safetensors", TINY_X1, scale=1),
    }


# ------------------------------------------------------------------------------------------ masks from crappify


def test_the_mask_is_every_pixel_the_text_changed_and_its_box_frames_it() -> None:
    clean = photo()
    degraded = create_preset("watermark")(clean, rng_for(0, "a.png"))
    mask = degraded.text_mask()
    changed = (np.asarray(degraded.image) != np.asarray(clean)).any(axis=2)
    np.testing.assert_array_equal(mask, changed)  # no JPEG in this preset: exactly the glyphs' pixels
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert degraded.boxes == [(cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)]


def test_masks_are_at_the_degraded_size_and_drawn_before_jpeg() -> None:
    clean = photo(1, 128, 96)
    for preset, size in (("restore-x1", (96, 128)), ("restore-x4", (24, 32))):
        degraded = create_preset(preset)(clean, rng_for(3, "b.png"))
        assert degraded.text_mask().shape == size and degraded.text_mask().any()
    # The same stream with and without the JPEG step draws the same text: the mask is the glyphs, not the artefacts.
    with_jpeg = Pipeline((TextWatermark(), Jpeg(30)))(clean, rng_for(1, "c"))
    without = Pipeline((TextWatermark(),))(clean, rng_for(1, "c"))
    np.testing.assert_array_equal(with_jpeg.text_mask(), without.text_mask())


def test_a_downscale_after_the_text_keeps_every_block_it_touched() -> None:
    mask = np.zeros((9, 10), dtype=bool)
    mask[4, 5] = True
    np.testing.assert_array_equal(shrink_mask(mask, 4), [[False, False], [False, True]])
    degraded = Pipeline((TextWatermark(), Downscale(2)))(photo(2), rng_for(0, "d"))
    assert degraded.text_mask().shape == (36, 48)
    left, top, right, bottom = degraded.boxes[0]
    assert not degraded.text_mask()[:top].any() and not degraded.text_mask()[:, right:].any()


def test_pictures_without_text_have_an_empty_mask() -> None:
    degraded = create_preset("sr-x4")(photo(), rng_for(0, "e"))
    assert degraded.mask is None and not degraded.text_mask().any() and degraded.text_mask().shape == (18, 24)


# ------------------------------------------------------------------------------------------ data and model


def test_mask_samples_mix_presets_at_the_inputs_size_and_repeat_exactly(photos) -> None:
    store = ImageStore(sorted(photos.glob("*.png")))
    dataset = MaskDataset(store, [create_preset("restore-x1"), create_preset("restore-x4")], box_crops=1.0)
    assert dataset.eligible(16) == [0, 1, 2, 3] and dataset.eligible(20) == []  # x4 needs 80-pixel photos
    shapes = set()
    for seed in range(6):
        lq, mask = dataset[(seed % 4, 16, (seed,))]
        again = dataset[(seed % 4, 16, (seed,))]
        np.testing.assert_array_equal(lq, again[0])
        np.testing.assert_array_equal(mask, again[1])
        shapes.add((lq.shape, mask.shape, str(mask.dtype)))
        assert set(np.unique(mask)) <= {0, MASK_ON}
    assert shapes == {((16, 16, 3), (16, 16, 1), "uint8")}
    crop_dataset = MaskDataset(store, [create_preset("restore-x1")], degrade_photo=False)
    lq, mask = crop_dataset[(0, 32, (0,))]
    assert lq.shape == (32, 32, 3) and mask.any()


def test_validation_masks_are_the_degraded_inputs(photos) -> None:
    items = [(path, path.name) for path in sorted(photos.glob("*.png"))]
    valset = build_mask_validation(items, create_preset("restore-x1"), seed=0)
    assert len(valset) == 4 and valset.lq[0].shape[-2:] == valset.masks[0].shape
    assert all(len(boxes) == 1 for boxes in valset.boxes)


def test_mask_unet_gives_one_logit_per_input_pixel_with_or_without_skips() -> None:
    x = torch.rand(2, 3, 37, 50)
    for skips in (True, False):
        model = create_model({**TINY_MASK_UNET, "skips": skips})
        assert model(x).shape == (2, 1, 37, 50)
        model.eval()
        assert model(x).min() < 0  # logits, not probabilities: nothing is clamped in eval mode
    with_skips, without = (create_model({**TINY_MASK_UNET, "skips": s}) for s in (True, False))
    assert with_skips.fuse0.in_channels == 2 * without.fuse0.in_channels
    with pytest.raises(ConfigError, match="skips"):
        create_model({**TINY_MASK_UNET, "skips": "no"})
    assert isinstance(with_skips, MaskUnet) and with_skips.scale == 1


def test_bce_dice_is_small_for_the_right_mask_and_fp32_under_autocast() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 3:6] = 1
    loss = BceDiceLoss()
    good, terms = loss(target * 20 - 10, target)
    bad, _ = loss(-(target * 20 - 10), target)
    assert good < 0.01 < 1.5 < bad and set(terms) == {"bce", "dice"}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = loss(torch.zeros(2, 1, 8, 8, dtype=torch.bfloat16), target)
    assert total.dtype == torch.float32


def test_a_text_mask_run_needs_its_loss_scale_and_arch() -> None:
    base = ["data.task='text-mask'", "model={arch='mask-unet'}"]
    assert load_config(None, [*base, "loss.kind=bce_dice", "data.extra_presets=['restore-x4']"]).data.task
    with pytest.raises(ConfigError, match="bce_dice"):
        load_config(None, base)
    with pytest.raises(ConfigError, match="extra_presets"):
        load_config(None, ["data.extra_presets=['restore-x4']"])
    with pytest.raises(ConfigError, match="data.task"):
        load_config(None, ["data.task='segment'"])


# ------------------------------------------------------------------------------------------ scores


def test_iou_f1_and_box_recall() -> None:
    truth = np.zeros((20, 40), dtype=bool)
    truth[5:10, 2:8] = truth[5:10, 10:16] = True  # two letters of one word
    pred = np.zeros_like(truth)
    pred[5:10, 2:8] = True
    counts = count_mask(pred, truth)
    assert (counts.tp, counts.fp, counts.fn) == (30, 0, 30)
    assert counts.iou == pytest.approx(0.5) and counts.f1 == pytest.approx(2 / 3)
    assert (counts + counts).iou == pytest.approx(0.5) and MaskCounts().iou == 1.0
    assert text_boxes(truth) == [(2, 5, 16, 10)]  # letters on one line join into the word's box
    assert boxes_found([(2, 5, 16, 10)], text_boxes(truth)) == 1
    assert boxes_found([(2, 5, 16, 10)], text_boxes(pred)) == 0  # half the word: IoU 0.43
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_evaluate_scores_each_mask_model_on_the_presets_text(photos, models) -> None:
    result = evaluate_text_mask(photos, [f"everything={models['all']}", str(models["none"])], keep_crops=True)
    everything, nothing = result.summaries()
    assert everything.method == "everything" and everything.counts.recall == 1.0 and everything.counts.fn == 0
    assert nothing.counts.tp == 0 and nothing.box_recall == 0.0
    data = result.to_dict()
    assert data["task"] == "text-mask" and data["preset"] == "restore-x1" and len(data["images"]) == 4
    assert "| everything |" in result.to_markdown()
    assert set(result.images[0].crops) == {"input", "everything", "no-text", "truth"}


# ------------------------------------------------------------------------------------------ restoring inside the mask


def test_blend_weights_are_one_near_the_text_and_exactly_zero_beyond_the_feather() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[15, 15] = True
    weights = blend_weights(mask, grow=2, feather=4)
    assert weights[15, 17] == 1.0 and 0 < weights[15, 19] < 1 and weights[15, 21] == 0.0
    assert np.count_nonzero(weights) < 13 * 13 and not blend_weights(np.zeros((4, 4), bool)).any()
    original, restored = np.zeros((30, 30, 3), np.float32), np.ones((30, 30, 3), np.float32)
    out = keep_masked(original, restored, weights)
    np.testing.assert_array_equal(out[weights == 0], original[weights == 0])
    np.testing.assert_array_equal(out[weights == 1], restored[weights == 1])


def test_only_masked_keeps_the_input_outside_the_grown_mask(models) -> None:
    restorer = Restorer.from_pretrained(models["x1"], device="cpu")
    degraded = create_preset("watermark")(photo(5), rng_for(0, "f"))
    picture = Picture(rgb=np.asarray(degraded.image, dtype=np.float32) / 255.0)
    mask = degraded.text_mask()
    out = restore_only_masked(restorer, picture, mask, grow=1, feather=2).rgb
    outside = blend_weights(mask, grow=1, feather=2) == 0
    np.testing.assert_array_equal(out[outside], picture.rgb[outside])
    np.testing.assert_allclose(out[mask], restorer.restore(picture).rgb[mask])
    assert restore_only_masked(restorer, picture, np.zeros_like(mask)) is picture  # no text: nothing run
    with pytest.raises(InputError, match="mask"):
        restore_only_masked(restorer, picture, mask[1:])


def test_mask_and_restoration_models_refuse_each_others_jobs(models, model_file) -> None:
    with pytest.raises(ConfigError, match="not a text-mask model"):
        TextMasker.from_pretrained(models["x1"], device="cpu")
    with pytest.raises(ConfigError, match="finds text"):
        Restorer.from_pretrained(models["all"], device="cpu")
    with pytest.raises(ConfigError, match="same-size"):
        x2 = Restorer.from_pretrained(model_file, device="cpu")
        restore_only_masked(x2, Picture(rgb=np.zeros((8, 8, 3), np.float32)), np.ones((8, 8), bool))
    masker = TextMasker.from_pretrained(models["all"], device="cpu", tile=16)
    assert masker.predict(np.zeros((40, 50, 3), np.float32)).all()  # tiled, every tile's answer kept


def test_a_big_picture_is_looked_at_scaled_down_to_the_working_side(models) -> None:
    masker = TextMasker.from_pretrained(models["all"], device="cpu", tile=0, working_side=64)
    seen: list[tuple[int, ...]] = []
    runner = masker._runner
    masker._runner = lambda lq: seen.append(tuple(lq.shape[-2:])) or runner(lq)  # type: ignore[assignment]
    masker._runner.size_multiple = runner.size_multiple  # type: ignore[attr-defined]
    assert masker.working_size(100, 200) == (32, 64) and masker.working_size(40, 60) == (40, 60)
    probabilities = masker.probabilities(np.zeros((100, 200, 3), np.float32))
    assert probabilities.shape == (100, 200) and (probabilities > 0.99).all()  # scaled back to the picture
    assert max(seen[0]) <= 64  # the model saw the small copy (padded to its multiple at most)
    native = TextMasker.from_pretrained(models["all"], device="cpu", tile=0, working_side=0)
    assert native.working_size(1000, 3000) == (1000, 3000)
    with pytest.raises(ConfigError, match="working side"):
        TextMasker.from_pretrained(models["all"], device="cpu", working_side=10)
