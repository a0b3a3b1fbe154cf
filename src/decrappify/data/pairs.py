"""Training data: a folder of clean images -> random crops -> pairs degraded on the fly by a `degrade` preset.

Speed on a small CPU decides the design. Images are decoded once into memory as uint8 arrays (BSDS500's 400
photos take 185 MB), a sample is cut out *before* it is degraded (degrading a 128-pixel crop costs a fraction of a
millisecond, degrading the photo costs tens), and batches leave here as uint8 tensors: the trainer converts them
to float on its device. Every random choice comes from a generator seeded by (seed, stage, epoch, position), so a
batch is a pure function of its place in the run: a resumed run sees exactly the batches the interrupted one would
have, and the order does not depend on how many worker processes built them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from decrappify.data.degrade import modcrop, rng_for, scale_box
from decrappify.errors import ConfigError, InputError
from decrappify.io.listing import images_in_folder

log = logging.getLogger(__name__)

#: (image index, crop side, seed words): everything needed to build one training pair.
SampleKey = tuple[int, int, tuple[int, ...]]


def keyed_images(folders: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Images under each folder (recursive), as (path, key) sorted by key; key = folder name / relative path.

    The folder's name in the key keeps two folders' `0001.png` apart and ties each key to its data set.
    """
    found: list[tuple[Path, str]] = []
    for folder in map(Path, folders):
        found += [(path, f"{folder.name}/{relative}") for path, relative in images_in_folder(folder)]
    return sorted(found, key=lambda item: item[1])


def validation_count(num_images: int, size: int, fraction: float) -> int:
    """How many of `num_images` training images to hold out: `size`, but at most `fraction` of them (a small
    folder shrinks it), and at least one while there are two images or more (0 when `size` is 0)."""
    if size <= 0 or num_images < 2:
        return 0
    return max(1, min(size, math.floor(num_images * fraction)))


def split_validation(
    items: Sequence[tuple[Path, str]], size: int, seed: int
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """A fixed, seeded choice of `size` items held out for validation: (train, val), both in input order."""
    if size == 0:
        return list(items), []
    if size >= len(items):
        raise ConfigError(
            f"data.val_size={size} would leave no training images out of {len(items)}; "
            "lower it or pass a separate validation folder (--val)"
        )
    chosen = set(np.random.default_rng(seed).choice(len(items), size=size, replace=False).tolist())
    train = [item for i, item in enumerate(items) if i not in chosen]
    return train, [item for i, item in enumerate(items) if i in chosen]


def load_rgb(path: Path) -> Image.Image:
    """An 8-bit RGB image with its EXIF orientation applied; `InputError` naming the file if unreadable."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(path, f"cannot read image: {error}") from None


def _header_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding (EXIF turns may swap them: only min() is used)."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(path, f"cannot read image: {error}") from None


class ImageStore:
    """Training images as uint8 H x W x 3 arrays, decoded once (`cache=True`) or on every access."""

    def __init__(self, paths: Sequence[Path], *, cache: bool = True):
        self.paths = list(paths)
        self.cache = cache
        self._arrays: list[np.ndarray | None] = [None] * len(self.paths)
        self.sizes: list[tuple[int, int]] = []  # (height, width)
        for i, path in enumerate(self.paths):
            if cache:
                self._arrays[i] = np.asarray(load_rgb(path))
                self.sizes.append(self._arrays[i].shape[:2])
            else:
                self.sizes.append(_header_size(path))
        log.debug("image store: %d images, cache=%s", len(self.paths), cache)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        array = self._arrays[index]
        return array if array is not None else np.asarray(load_rgb(self.paths[index]))

    def eligible(self, crop: int) -> list[int]:
        """Indices of the images at least `crop` pixels on both sides."""
        return [i for i, (h, w) in enumerate(self.sizes) if min(h, w) >= crop]


def _augment(patch: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Random flips (`hflip`) or any of the 8 flips/turns (`dihedral`) of an H x W x 3 patch."""
    if mode == "none":
        return patch
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if mode == "dihedral":
        if rng.random() < 0.5:
            patch = patch[::-1]
        if rng.random() < 0.5:
            patch = patch.transpose(1, 0, 2)
    return patch


class PairDataset(torch.utils.data.Dataset):
    """`dataset[key] -> (lq, hq)` uint8 H x W x 3 arrays for a `SampleKey`: crop, augment, degrade.

    numpy, not torch, on purpose: a torch op here (even `torch.stack`) runs on torch's intra-op thread pool, which
    the model's forward/backward is using at the same moment; on 2 cores the two spin against each other. And
    H x W x 3, as images are stored: batches become N x C x H x W tensors by a `permute` that copies nothing and
    leaves them in the channels-last layout, which is also the faster one for the convolutions on a CPU.
    """

    def __init__(
        self,
        store: ImageStore,
        pipeline: Callable,
        augment: str = "hflip",
        *,
        with_boxes: bool = False,
        degrade_photo: bool = False,
        box_crops: float = 0.5,
    ):
        self.store, self.pipeline, self.augment = store, pipeline, augment
        self.with_boxes = with_boxes  # also return `box_mask` of the watermark boxes (for a weighted loss)
        self.degrade_photo = degrade_photo  # degrade the whole photo, then crop (`DataConfig.degrade`)
        self.box_crops = box_crops  # with degrade_photo: the share of crops placed over a watermark box

    def __len__(self) -> int:
        return len(self.store)

    def eligible(self, crop: int) -> list[int]:
        """Indices of the images a `crop`-pixel (clean) sample can be cut from."""
        return self.store.eligible(crop)

    def __getitem__(self, key: SampleKey) -> tuple[np.ndarray, ...]:
        """(lq, hq), or with `with_boxes` (lq, hq, mask): mask is H x W x 1 uint8, 1 inside a watermark box."""
        index, crop, seed = key
        rng = np.random.default_rng(seed)
        image = self.store[index]
        if self.degrade_photo:
            lq, patch, boxes, scale = self._degrade_then_crop(image, crop, rng)
            if self.with_boxes:
                return lq, patch, box_mask(boxes, scale, patch.shape[:2])
            return lq, patch
        top = int(rng.integers(0, image.shape[0] - crop + 1))
        left = int(rng.integers(0, image.shape[1] - crop + 1))
        patch = np.ascontiguousarray(_augment(image[top : top + crop, left : left + crop], self.augment, rng))
        degraded = self.pipeline(Image.fromarray(patch), rng)
        lq = _rgb_array(degraded.image)
        expected = crop // degraded.scale
        if lq.shape[:2] != (expected, expected):
            raise ConfigError(
                f"degradation {self.pipeline} turned a {crop}-pixel crop into {lq.shape[1]}x{lq.shape[0]}, "
                f"expected {expected}x{expected}"
            )
        if self.with_boxes:
            return lq, patch, box_mask(degraded.boxes, degraded.scale, patch.shape[:2])
        return lq, patch


    def _degrade_then_crop(
        self, image: np.ndarray, crop: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]], int]:
        """Degrade the whole augmented photo, then cut the same crop from both sides.

        Returns (lq crop, hq crop, the watermark boxes moved into the crop, in lq pixels, scale). With probability
        `box_crops` the crop is placed around a random pixel of a watermark box, else anywhere: a photo's text
        covers ~8 % of it, so uniform crops alone would rarely show the model a whole word.
        """
        scale = int(self.pipeline.scale)
        photo = modcrop(Image.fromarray(np.ascontiguousarray(_augment(image, self.augment, rng))), scale)
        degraded = self.pipeline(photo, rng)
        lq_photo, hq_photo = _rgb_array(degraded.image), np.asarray(photo)
        small = crop // scale  # the crop on the degraded photo
        height, width = lq_photo.shape[:2]
        if degraded.boxes and rng.random() < self.box_crops:
            left, top, right, bottom = degraded.boxes[int(rng.integers(len(degraded.boxes)))]
            x, y = int(rng.integers(left, right)), int(rng.integers(top, bottom))  # a pixel of the box
            x0, y0 = x - int(rng.integers(0, small)), y - int(rng.integers(0, small))
        else:
            x0, y0 = int(rng.integers(0, width - small + 1)), int(rng.integers(0, height - small + 1))
        x0, y0 = min(max(x0, 0), width - small), min(max(y0, 0), height - small)
        lq = np.ascontiguousarray(lq_photo[y0 : y0 + small, x0 : x0 + small])
        hq = np.ascontiguousarray(hq_photo[y0 * scale : (y0 + small) * scale, x0 * scale : (x0 + small) * scale])
        boxes = [
            (max(left - x0, 0), max(top - y0, 0), min(right - x0, small), min(bottom - y0, small))
            for left, top, right, bottom in degraded.boxes
            if left - x0 < small and top - y0 < small and right - x0 > 0 and bottom - y0 > 0
        ]
        return lq, hq, boxes, scale


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def box_mask(boxes: Sequence[Sequence[int]], scale: int, shape: tuple[int, int]) -> np.ndarray:
    """H x W x 1 uint8 mask, 1 inside any of `boxes` (given on the degraded image, so scaled up by `scale`)."""
    mask = np.zeros((*shape, 1), dtype=np.uint8)
    for box in boxes:
        left, top, right, bottom = scale_box(box, scale)
        mask[top:bottom, left:right] = 1
    return mask


def collate_pairs(samples: Sequence[tuple[np.ndarray, ...]]) -> tuple[torch.Tensor, ...]:
    """Stack samples into (lq, hq[, mask]) uint8 N x C x H x W tensors, channels-last in memory (`PairDataset`)."""
    return tuple(torch.from_numpy(np.stack(side)).permute(0, 3, 1, 2) for side in zip(*samples, strict=True))


@dataclass(frozen=True)
class EpochPlan:
    """Which samples this process trains on, batch by batch: a seeded shuffle split across processes.

    Like `DistributedSampler` with `drop_last`: each epoch shuffles (image, repeat) pairs with a generator seeded
    by (seed, stage, epoch); process `rank` takes every `world_size`-th sample; only whole batches are kept.
    """

    images: tuple[int, ...]  # eligible image indices
    crop: int
    batch: int
    seed: int
    stage: int = 0
    crops_per_image: int = 1
    rank: int = 0
    world_size: int = 1

    @property
    def batches_per_epoch(self) -> int:
        return len(self.images) * self.crops_per_image // (self.batch * self.world_size)

    def batch_keys(self, epoch: int, batch: int) -> list[SampleKey]:
        if not 0 <= batch < self.batches_per_epoch:
            raise IndexError(f"batch {batch} outside 0..{self.batches_per_epoch - 1}")
        order = _permutation(len(self.images) * self.crops_per_image, (self.seed, self.stage, epoch))
        start = (batch * self.batch) * self.world_size + self.rank
        positions = range(start, start + self.batch * self.world_size, self.world_size)
        n = len(self.images)
        return [(self.images[order[p] % n], self.crop, (self.seed, self.stage, epoch, p)) for p in positions]

    def keys_from(self, epoch: int, batch: int) -> Iterator[list[SampleKey]]:
        """Batches of keys from (epoch, batch) onwards, without end."""
        while True:
            for b in range(batch, self.batches_per_epoch):
                yield self.batch_keys(epoch, b)
            epoch, batch = epoch + 1, 0


_PERMUTATIONS: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}


def _permutation(n: int, seed: tuple[int, ...]) -> np.ndarray:
    """`default_rng(seed).permutation(n)`, remembered for the latest few seeds (batch_keys asks per batch)."""
    key = (n, seed)
    if key not in _PERMUTATIONS:
        if len(_PERMUTATIONS) > 4:
            _PERMUTATIONS.clear()
        _PERMUTATIONS[key] = np.random.default_rng(seed).permutation(n)
    return _PERMUTATIONS[key]


def iterate_batches(
    dataset: PairDataset, keys: Iterator[list[SampleKey]], *, workers: int = 0, prefetch: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(lq, hq) uint8 batches for each list of keys, in order: in this process, a helper thread, or workers."""
    if workers > 0:
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=keys, num_workers=workers, collate_fn=collate_pairs, prefetch_factor=2
        )
        return iter(loader)
    batches = (collate_pairs([dataset[key] for key in batch]) for batch in keys)
    return Prefetcher(batches) if prefetch else batches


class Prefetcher:
    """Builds the next item of an iterator in a background thread while the caller uses the current one.

    Pillow and numpy release the GIL in their heavy loops, so on a 2-core machine batch building overlaps the
    model's compute without a second process (no memory copy, no start-up cost). `close()` stops the thread.
    """

    _END = object()

    def __init__(self, iterator: Iterator, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True, name="prefetch")
        self._thread.start()

    def _run(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(self._END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._queue.put(error)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
            self._thread.join(timeout=0.05)


# ---------------------------------------------------------------------------------------------------------
# Validation


@dataclass
class ValidationSet:
    """Degraded inputs and clean targets, made once so every epoch scores exactly the same pairs."""

    names: list[str]
    lq: list[torch.Tensor]  # 1 x 3 x h x w float32 in [0, 1]
    hq: list[np.ndarray]  # H x W x 3 float32 in [0, 1]
    scale: int
    boxes: list[list[tuple[int, int, int, int]]] = field(default_factory=list)  # watermark boxes on hq, per image

    def __len__(self) -> int:
        return len(self.names)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    if size <= 0 or (image.width <= size and image.height <= size):
        return image
    w, h = min(size, image.width), min(size, image.height)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))


def build_validation(
    items: Sequence[tuple[Path, str]], pipeline: Callable, *, seed: int, crop: int = 0
) -> ValidationSet:
    """Each image modcropped (and centre-cropped to `crop` if given), degraded with `rng_for(seed, key)`."""
    scale = int(pipeline.scale)
    names, lqs, hqs, boxes = [], [], [], []
    for path, key in items:
        image = modcrop(_center_crop(load_rgb(path), crop), scale)
        degraded = pipeline(image, rng_for(seed, key))
        lq = np.asarray(degraded.image.convert("RGB"), dtype=np.float32) / 255.0
        names.append(key)
        lqs.append(torch.from_numpy(lq.transpose(2, 0, 1).copy()).unsqueeze(0))
        hqs.append(np.asarray(image, dtype=np.float32) / 255.0)
        boxes.append(degraded.clean_boxes())
    return ValidationSet(names, lqs, hqs, scale, boxes)
