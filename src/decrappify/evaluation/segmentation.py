"""Scoring text masks: pixel IoU and F1, and box-level recall, on clean photos degraded by a watermark preset.

`evaluate --task text-mask` degrades each clean image exactly as `evaluate --task PRESET` does (the same
`rng_for(seed, relative path)`), so the text a mask model must find is the text the restoration models are scored
on; the truth is `Degraded.text_mask()`, the glyphs as drawn, at the degraded input's size. Per method:

- IoU = TP / (TP + FP + FN) and F1 = 2 TP / (2 TP + FP + FN) over every pixel of every image pooled (a photo
  with little text weighs as its pixels do, not as one image);
- box recall: the share of the watermark boxes (each watermark's recorded box) that some predicted box matches
  with IoU > 0.5. Predicted boxes are the mask's letters (8-connected components) joined into lines: two boxes
  on the same line (vertical overlap of half the lower one) and closer than `LINE_GAP` times the taller one's
  height are one box, as a watermark's words are.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from decrappify.data import degrade
from decrappify.errors import ConfigError, DecrappifyError, InputError
from decrappify.evaluation.methods import split_label
from decrappify.inference.text_mask import TextMasker, overlay
from decrappify.io.images import picture_to_pil, read_image
from decrappify.io.listing import images_in_folder
from decrappify.tasks import TEXT_MASK, TEXT_MASK_PRESET

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), input pixels
BOX_IOU = 0.5  # a watermark box is found when a predicted box overlaps it by more than this
LINE_GAP = 1.0  # letters and words closer than this many line heights join into one box
MIN_COMPONENT_PIXELS = 4  # smaller specks of a predicted mask are noise, not letters
CROP_MARGIN = 16  # the report's crop: the watermark boxes plus this margin


# ------------------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class MaskCounts:
    """Pixel counts of a predicted mask against the truth; they add up over images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: MaskCounts) -> MaskCounts:
        return MaskCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def iou(self) -> float:
        """TP / (TP + FP + FN); 1.0 when both masks are empty (nothing to find, nothing claimed)."""
        union = self.tp + self.fp + self.fn
        return self.tp / union if union else 1.0

    @property
    def f1(self) -> float:
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 1.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def count_mask(pred: np.ndarray, truth: np.ndarray) -> MaskCounts:
    """TP, FP and FN pixels of two H x W bool masks."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ConfigError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))
    return MaskCounts(tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(truth)) - tp)


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _join_lines(boxes: np.ndarray, gap: float) -> np.ndarray:
    """One pass: boxes (n x 4) on one line and closer than `gap` heights joined (the graph's components)."""
    left, top, right, bottom = (boxes[:, i][:, None] for i in range(4))
    height = bottom - top
    overlap = np.minimum(bottom, bottom.T) - np.maximum(top, top.T)
    distance = np.maximum(left, left.T) - np.minimum(right, right.T)  # negative when they overlap horizontally
    linked = (overlap >= 0.5 * np.minimum(height, height.T)) & (distance <= gap * np.maximum(height, height.T))
    count, group = connected_components(linked, directed=False)
    joined = np.empty((count, 4), dtype=boxes.dtype)
    for g in range(count):
        members = boxes[group == g]
        joined[g] = members[:, 0].min(), members[:, 1].min(), members[:, 2].max(), members[:, 3].max()
    return joined


def text_boxes(mask: np.ndarray, *, gap: float = LINE_GAP, min_pixels: int = MIN_COMPONENT_PIXELS) -> list[Box]:
    """The boxes of a text mask's lines: 8-connected components (specks under `min_pixels` dropped) joined while
    two are on one line (vertical overlap of half the lower one) and closer than `gap` times the taller one's
    height."""
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    found = [
        (s[1].start, s[0].start, s[1].stop, s[0].stop)
        for label, s in enumerate(ndimage.find_objects(labels), start=1)
        if s is not None and sizes[label] >= min_pixels
    ]
    boxes = np.array(found, dtype=np.int64).reshape(-1, 4)
    while len(boxes) > 1:
        joined = _join_lines(boxes, gap)
        if len(joined) == len(boxes):
            break
        boxes = joined
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda box: (box[1], box[0]))


def boxes_found(
    truth: Sequence[Sequence[int]], predicted: Sequence[Sequence[int]], *, threshold: float = BOX_IOU
) -> int:
    """How many of the `truth` boxes some `predicted` box overlaps with IoU above `threshold`."""
    return sum(any(box_iou(t, p) > threshold for p in predicted) for t in truth)


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class MaskScores:
    """One method on one image."""

    counts: MaskCounts
    boxes_found: int
    boxes: int
    seconds: float
    megapixels: float

    def to_dict(self) -> dict:
        return {"iou": round(self.counts.iou, 6), "f1": round(self.counts.f1, 6), "tp": self.counts.tp,
                "fp": self.counts.fp, "fn": self.counts.fn, "boxes_found": self.boxes_found, "boxes": self.boxes,
                "seconds": round(self.seconds, 4)}  # fmt: skip


@dataclass
class MaskRecord:
    """One image: its scores per method, and the crops the HTML report shows (uint8)."""

    relative: str
    boxes: int
    scores: dict[str, MaskScores] = field(default_factory=dict)
    crop_box: Box = (0, 0, 0, 0)
    crops: dict[str, np.ndarray] = field(default_factory=dict)  # "input", each method's overlay, "truth"


@dataclass(frozen=True)
class MaskSummary:
    """One row of the table: pooled pixel scores, box recall, time and throughput."""

    method: str
    counts: MaskCounts
    boxes_found: int
    boxes: int
    seconds: float
    megapixels: float

    @property
    def box_recall(self) -> float | None:
        return self.boxes_found / self.boxes if self.boxes else None

    def to_dict(self) -> dict:
        counts, recall = self.counts, self.box_recall
        return {
            "method": self.method,
            "iou": round(counts.iou, 6),
            "f1": round(counts.f1, 6),
            "precision": round(counts.precision, 6),
            "recall": round(counts.recall, 6),
            "box_recall": None if recall is None else round(recall, 6),
            "boxes": self.boxes,
            "seconds": round(self.seconds, 4),
            "megapixels_per_second": round(self.megapixels / self.seconds, 4) if self.seconds > 0 else None,
        }


@dataclass
class SegmentationResult:
    """Everything `evaluate_text_mask` produced; `summaries()` gives the table's rows in method order."""

    preset: str
    dataset: str
    threshold: float
    methods: list[str]
    images: list[MaskRecord]
    failed: list[tuple[Path, str]] = field(default_factory=list)
    task: str = TEXT_MASK
    scale: int = 1

    def summaries(self) -> list[MaskSummary]:
        rows = []
        for name in self.methods:
            scores = [record.scores[name] for record in self.images]
            counts = sum((s.counts for s in scores), MaskCounts())
            rows.append(MaskSummary(name, counts, sum(s.boxes_found for s in scores), sum(s.boxes for s in scores),
                                    sum(s.seconds for s in scores), sum(s.megapixels for s in scores)))  # fmt: skip
        return rows

    def to_dict(self) -> dict:
        """{"task", "preset", "dataset", "threshold", "results": [rows], "images": [per image, per method]}."""
        return {
            "task": self.task,
            "preset": self.preset,
            "dataset": self.dataset,
            "scale": self.scale,
            "threshold": self.threshold,
            "results": [summary.to_dict() for summary in self.summaries()],
            "images": [
                {"image": r.relative, "boxes": r.boxes, "scores": {m: r.scores[m].to_dict() for m in self.methods}}
                for r in self.images
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        header = ["method", "IoU", "F1", "precision", "recall", "box recall", "seconds", "input MP/s"]
        lines = [
            f"{self.task} on {self.dataset}: {len(self.images)} images degraded with {self.preset}, "
            f"mask threshold {self.threshold:g}; pixel scores pooled over all images",
            "",
            "| " + " | ".join(header) + " |",
            "| " + " | ".join("---" for _ in header) + " |",
        ]
        for s in self.summaries():
            recall = "-" if s.box_recall is None else f"{s.box_recall:.3f}"
            speed = f"{s.megapixels / s.seconds:.1f}" if s.seconds > 0 else "-"
            cells = [s.method, f"{s.counts.iou:.4f}", f"{s.counts.f1:.4f}", f"{s.counts.precision:.4f}",
                     f"{s.counts.recall:.4f}", recall, f"{s.seconds:.2f}", speed]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"box recall: share of watermark boxes matched by a predicted line box with IoU > {BOX_IOU}"]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ evaluation


def evaluate_text_mask(
    data_dir: str | Path,
    models: Sequence[str | TextMasker],
    *,
    preset: str = TEXT_MASK_PRESET,
    seed: int = 0,
    keep_crops: bool = True,
    progress: bool = False,
    precision: str = "fp32",
    threshold: float | None = None,
) -> SegmentationResult:
    """Degrade every image under `data_dir` with `preset` and score each text-mask model's mask against the truth.

    `models`: shipped names, model files or ready `TextMasker`s (at least one). `threshold` None: each masker's
    own (0.5 for loaded ones). Unreadable images are skipped and listed in `result.failed`; if none is left,
    `InputError`. `keep_crops` keeps the crops `write_mask_report` needs.
    """
    if not models:
        raise ConfigError(f"--task {TEXT_MASK}: name a text-mask model with --model (a file or a shipped name)")
    pipeline = degrade.create_preset(preset)
    maskers = [_load(model, precision, threshold) for model in models]
    names = [masker.name for masker in maskers]
    if len(set(names)) != len(names):
        raise ConfigError(f"two models are named alike ({', '.join(names)}); name each with --model LABEL=PATH")
    images = images_in_folder(data_dir)
    result = SegmentationResult(preset, Path(data_dir).resolve().name, maskers[0].threshold, names, [])
    for path, relative in tqdm(images, desc=f"evaluate {TEXT_MASK}", unit="img", disable=not progress):
        try:
            result.images.append(_evaluate_image(path, relative, pipeline, maskers, seed, keep_crops))
        except DecrappifyError as error:
            reason = error.reason if isinstance(error, InputError) and error.path == path else str(error)
            log.warning("skipped %s: %s", path, reason)
            result.failed.append((path, reason))
    if not result.images:
        raise InputError(Path(data_dir), f"none of the {len(images)} images could be evaluated")
    return result


def _load(model: str | TextMasker, precision: str, threshold: float | None) -> TextMasker:
    """A ready masker, or one loaded from "[LABEL=]NAME|PATH" (the label names its row)."""
    if isinstance(model, TextMasker):
        masker = model
    else:
        label, target = split_label(model)
        masker = TextMasker.from_pretrained(target, precision=precision)
        masker.name = label or masker.name
    if threshold is not None:
        masker.threshold = float(threshold)
    return masker


def _evaluate_image(
    path: Path, relative: str, pipeline: degrade.Pipeline, maskers: Sequence[TextMasker], seed: int, keep_crops: bool
) -> MaskRecord:
    """Degrade one clean image as `evaluate` does and score every masker on it."""
    scale = int(pipeline.scale)
    picture = read_image(path)
    if min(picture.width, picture.height) < scale:
        raise InputError(path, f"too small for x{scale}")
    degraded = pipeline(degrade.modcrop(picture_to_pil(picture), scale), degrade.rng_for(seed, relative))
    lq = np.asarray(degraded.image.convert("RGB"), dtype=np.float32) / 255.0
    truth = degraded.text_mask()
    record = MaskRecord(relative, len(degraded.boxes), crop_box=_crop_box(degraded.boxes, truth.shape))
    for masker in maskers:
        started = time.perf_counter()
        pred = masker.predict(lq)
        seconds = time.perf_counter() - started
        found = boxes_found(degraded.boxes, text_boxes(pred))
        record.scores[masker.name] = MaskScores(count_mask(pred, truth), found, len(degraded.boxes), seconds,
                                                lq.shape[0] * lq.shape[1] / 1e6)  # fmt: skip
        if keep_crops:
            record.crops[masker.name] = _crop(overlay(lq, pred), record.crop_box)
    if keep_crops:
        record.crops["input"] = _crop(lq, record.crop_box)
        record.crops["truth"] = _crop(overlay(lq, truth), record.crop_box)
    return record


def _crop_box(boxes: Sequence[Box], shape: tuple[int, int]) -> Box:
    """Around the watermark boxes (plus a margin), or the whole picture when there are none."""
    height, width = shape
    if not boxes:
        return 0, 0, width, height
    left, top = max(min(b[0] for b in boxes) - CROP_MARGIN, 0), max(min(b[1] for b in boxes) - CROP_MARGIN, 0)
    right = min(max(b[2] for b in boxes) + CROP_MARGIN, width)
    bottom = min(max(b[3] for b in boxes) + CROP_MARGIN, height)
    return left, top, right, bottom


def _crop(rgb: np.ndarray, box: Box) -> np.ndarray:
    left, top, right, bottom = box
    return np.rint(np.clip(rgb[top:bottom, left:right], 0, 1) * 255).astype(np.uint8)
