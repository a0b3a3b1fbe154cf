"""Training data: folders, the validation split, epoch plans across processes, crops degraded on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decrappify.data.degrade import create_preset
from decrappify.data.pairs import (
    EpochPlan,
    ImageStore,
    PairDataset,
    Prefetcher,
    box_mask,
    build_validation,
    collate_pairs,
    iterate_batches,
    keyed_images,
    split_validation,
)
from decrappify.errors import ConfigError, InputError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        size = (48, 40) if i else (24, 24)  # image 0 is too small for a 32-pixel crop
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "sub" / "5.jpg")
    (root / "notes.txt").write_text("not an image", encoding="utf-8")
    return root


def test_list_images_is_recursive_sorted_and_skips_other_files(folder: Path) -> None:
    items = keyed_images([folder])
    assert [key for _, key in items] == [f"photos/{i}.png" for i in range(5)] + ["photos/sub/5.jpg"]


def test_list_images_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        keyed_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no images found"):
        keyed_images([tmp_path / "empty"])


def test_validation_split_is_fixed_disjoint_and_complete(folder: Path) -> None:
    items = keyed_images([folder])
    train, val = split_validation(items, 2, seed=7)
    assert (train, val) == split_validation(items, 2, seed=7)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == sorted(items)
    assert split_validation(items, 0, seed=7) == (items, [])
    with pytest.raises(ConfigError, match="val_size=6 would leave no training images"):
        split_validation(items, 6, seed=7)


def test_store_decodes_once_and_knows_sizes(folder: Path) -> None:
    paths = [p for p, _ in keyed_images([folder])]
    cached, lazy = ImageStore(paths), ImageStore(paths, cache=False)
    assert cached[1].dtype == np.uint8 and cached[1].shape == (48, 40, 3)
    assert np.array_equal(cached[1], lazy[1])
    assert cached.sizes == lazy.sizes
    assert cached.eligible(32) == [1, 2, 3, 4, 5]


def plan(**kwargs) -> EpochPlan:
    defaults = {"images": tuple(range(10)), "crop": 32, "batch": 3, "seed": 0, "crops_per_image": 1}
    return EpochPlan(**{**defaults, **kwargs})


def test_plan_is_deterministic_and_reshuffles_each_epoch() -> None:
    p = plan()
    assert p.batches_per_epoch == 3  # 10 samples, whole batches of 3
    assert p.batch_keys(0, 1) == plan().batch_keys(0, 1)
    epoch0 = [k[0] for b in range(3) for k in p.batch_keys(0, b)]
    epoch1 = [k[0] for b in range(3) for k in p.batch_keys(1, b)]
    assert len(set(epoch0)) == 9 and epoch0 != epoch1
    assert plan(seed=1).batch_keys(0, 0) != p.batch_keys(0, 0)
    with pytest.raises(IndexError):
        p.batch_keys(0, 3)


def test_plan_splits_each_epoch_between_processes_without_overlap() -> None:
    ranks = [plan(world_size=2, rank=r, batch=2, crops_per_image=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == 5  # 20 samples / (2 x 2)
    seen = [k[2] for r in ranks for b in range(5) for k in r.batch_keys(0, b)]
    assert len(seen) == len(set(seen)) == 20  # every sample position exactly once


def test_keys_from_continues_into_the_next_epoch() -> None:
    p = plan()
    keys = p.keys_from(0, 2)
    assert next(keys) == p.batch_keys(0, 2)
    assert next(keys) == p.batch_keys(1, 0)


def test_pairs_are_reproducible_crops_degraded_by_the_preset(folder: Path) -> None:
    store = ImageStore([p for p, _ in keyed_images([folder])])
    dataset = PairDataset(store, create_preset("sr-x4"), augment="none")
    key = (2, 32, (0, 0, 0, 5))
    lq, hq = dataset[key]
    assert lq.dtype == hq.dtype == np.uint8
    assert lq.shape == (8, 8, 3) and hq.shape == (32, 32, 3)
    again_lq, again_hq = dataset[key]
    assert np.array_equal(lq, again_lq) and np.array_equal(hq, again_hq)
    image = store[2]
    patch = hq
    found = any(
        np.array_equal(image[t : t + 32, s : s + 32], patch) for t in range(17) for s in range(9)
    )  # without augmentation the target is a plain crop of the photo
    assert found
    expected_lq = np.asarray(Image.fromarray(patch).resize((8, 8), Image.Resampling.BICUBIC))
    assert np.array_equal(lq, expected_lq)
    assert not np.array_equal(dataset[(2, 32, (0, 0, 0, 6))][1], hq)


def test_same_size_presets_keep_the_crop_size(folder: Path) -> None:
    store = ImageStore([p for p, _ in keyed_images([folder])])
    lq, hq = PairDataset(store, create_preset("restore-x1"), augment="dihedral")[(1, 32, (1,))]
    assert lq.shape == hq.shape == (32, 32, 3)


def test_box_mask_scales_the_degraded_images_boxes() -> None:
    mask = box_mask([(1, 2, 3, 4)], 4, (20, 16))
    assert mask.shape == (20, 16, 1) and mask.dtype == np.uint8
    assert mask.sum() == 8 * 8 and mask[8:16, 4:12].all()


@pytest.mark.parametrize("preset", ["restore-x1", "restore-x4"])
def test_with_boxes_the_mask_covers_the_pixels_the_watermark_changed(tmp_path: Path, preset: str) -> None:
    flat = tmp_path / "flat.png"  # a flat photo: every pixel that changes a lot is the watermark's
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(flat)
    store = ImageStore([flat, flat])
    pipeline = create_preset(preset)
    dataset = PairDataset(store, pipeline, augment="none", with_boxes=True)
    lq, hq, mask = dataset[(1, 48, (3,))]
    plain_lq, plain_hq = PairDataset(store, pipeline, augment="none")[(1, 48, (3,))]
    assert np.array_equal(lq, plain_lq) and np.array_equal(hq, plain_hq)  # same pair, plus the mask
    assert mask.shape == (48, 48, 1) and 0 < mask.sum() < 48 * 48
    scale = pipeline.scale
    changed = np.abs(lq.astype(int) - 128).max(axis=2) > 40  # text, not JPEG ringing
    ys, xs = np.nonzero(changed)
    assert len(ys) > 0
    assert mask[ys * scale, xs * scale].all()  # every text pixel lies inside the mask
    batch = collate_pairs([dataset[(1, 48, (s,))] for s in range(2)])
    assert [t.shape[1] for t in batch] == [3, 3, 1]


def test_degrade_photo_crops_the_degraded_whole_photo(folder: Path) -> None:
    store = ImageStore([p for p, _ in keyed_images([folder])])
    dataset = PairDataset(store, create_preset("sr-x4"), augment="none", degrade_photo=True)
    lq, hq = dataset[(2, 16, (0, 7))]
    assert lq.shape == (4, 4, 3) and hq.shape == (16, 16, 3)
    photo = store[2]  # 48 x 40: already a multiple of 4
    whole_lq = np.asarray(Image.fromarray(photo).resize((10, 12), Image.Resampling.BICUBIC))
    hits = [(t, s) for t in range(9) for s in range(7) if np.array_equal(whole_lq[t : t + 4, s : s + 4], lq)]
    assert any(np.array_equal(photo[4 * t : 4 * t + 16, 4 * s : 4 * s + 16], hq) for t, s in hits)
    assert np.array_equal(dataset[(2, 16, (0, 7))][0], lq)  # reproducible


def test_degrade_photo_sizes_the_text_to_the_photo_and_box_crops_find_it(tmp_path: Path) -> None:
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(flat)
    store = ImageStore([flat])
    pipeline = create_preset("restore-x1")
    dataset = PairDataset(store, pipeline, augment="hflip", with_boxes=True, degrade_photo=True, box_crops=1.0)
    for seed in range(6):
        lq, hq, mask = dataset[(0, 48, (seed,))]
        assert lq.shape == hq.shape == (48, 48, 3) and mask.shape == (48, 48, 1)
        changed = np.abs(lq.astype(int) - 128).max(axis=2) > 40
        near = np.pad(mask[..., 0], 8)  # JPEG rings up to a block (8 px) past the text's box
        near = np.lib.stride_tricks.sliding_window_view(near, (17, 17)).max(axis=(2, 3))
        assert mask.any() and near[changed].all()  # every crop shows text, all of it at the mask
    text = PairDataset(store, pipeline, degrade_photo=True, box_crops=0.0, with_boxes=True)
    boxes = [text._degrade_then_crop(store[0], 48, np.random.default_rng(s))[2] for s in range(20)]
    assert any(not b for b in boxes)  # crops placed anywhere often miss the text


def test_iterate_batches_in_process_thread_and_workers_agree(folder: Path) -> None:
    store = ImageStore([p for p, _ in keyed_images([folder])])
    dataset = PairDataset(store, create_preset("sr-x4"), augment="dihedral")
    p = plan(images=tuple(store.eligible(32)), batch=2)
    results = []
    for kwargs in ({"prefetch": False}, {"prefetch": True}, {"workers": 1}):
        batches = iterate_batches(dataset, p.keys_from(0, 0), **kwargs)
        results.append([next(batches) for _ in range(3)])
        if hasattr(batches, "close"):
            batches.close()
    for other in results[1:]:
        for (lq_a, hq_a), (lq_b, hq_b) in zip(results[0], other, strict=True):
            assert torch.equal(lq_a, lq_b) and torch.equal(hq_a, hq_b)
    lq = results[0][0][0]
    assert lq.shape == (2, 3, 8, 8) and lq.is_contiguous(memory_format=torch.channels_last)


def test_prefetcher_passes_errors_through_and_stops() -> None:
    def items():
        yield 1
        raise ValueError("boom")

    prefetcher = Prefetcher(items())
    assert next(prefetcher) == 1
    with pytest.raises(ValueError, match="boom"):
        next(prefetcher)
    endless = Prefetcher(iter(range(10**9)))
    assert next(endless) == 0
    endless.close()
    assert not endless._thread.is_alive()


def test_validation_pairs_are_fixed_and_modcropped(folder: Path) -> None:
    items = keyed_images([folder])[1:3]
    pipeline = create_preset("restore-x4")
    first, second = build_validation(items, pipeline, seed=0), build_validation(items, pipeline, seed=0)
    assert first.names == ["photos/1.png", "photos/2.png"] and first.scale == 4
    assert first.hq[0].shape == (48, 40, 3) and tuple(first.lq[0].shape) == (1, 3, 12, 10)
    assert all(torch.equal(a, b) for a, b in zip(first.lq, second.lq, strict=True))
    cropped = build_validation(items, pipeline, seed=0, crop=32)
    assert cropped.hq[0].shape == (32, 32, 3)
