"""Per-epoch validation: PSNR_Y / SSIM_Y on a fixed set of pairs, and a picture of input / output / target.

The numbers follow the papers' convention (`metrics.py`: BT.601 Y, `scale` pixels of border cropped) on outputs
rounded to 8 bits, as `evaluate` scores them, so a training log and an evaluation report can be compared directly.
Looking at pictures catches what a mean hides (checkerboards, colour shifts): hence the grid every epoch.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from decrappify.data.masks import MaskValidationSet
from decrappify.data.pairs import ValidationSet
from decrappify.evaluation import metrics
from decrappify.evaluation.perceptual import PerceptualDistance
from decrappify.evaluation.segmentation import MaskCounts, boxes_found, count_mask, text_boxes
from decrappify.inference.precision import autocast
from decrappify.inference.text_mask import overlay
from decrappify.io.atomic import atomic_write_bytes
from decrappify.tasks import is_colour_task, is_segmentation_task

GRID_TILE = 160  # side of each picture in the sample grid (a centre crop of the target)


@dataclass(frozen=True)
class Selection:
    """Which validation metric picks `best.safetensors`, and which way is better."""

    metric: str
    higher_is_better: bool
    label: str

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best

    def describe(self, value: float) -> str:
        return f"{self.label} {value:.2f}"


#: PSNR_Y for every task but colourisation, whose output keeps the input's luma by construction: there PSNR_Y
#: barely moves while the colours do, so the CIELAB a*b* error (`metrics.ab_error`) picks the best checkpoint.
PSNR_SELECTION = Selection("psnr_y", True, "PSNR_Y (dB)")
COLOUR_SELECTION = Selection("ab_error", False, "a*b* error")
#: Text-mask runs: the pixel IoU of the predicted mask, as `evaluate --task text-mask` scores it.
MASK_SELECTION = Selection("iou", True, "IoU")


def selection_for(task: str) -> Selection:
    """How a run of `task` (a preset's name for restoration runs) picks its best checkpoint."""
    if is_segmentation_task(task):
        return MASK_SELECTION
    return COLOUR_SELECTION if is_colour_task(task) else PSNR_SELECTION


@dataclass
class ValidationResult:
    metrics: dict[str, float]  # psnr_y, ssim_y, l1 (+ psnr_watermark with boxes, ab_error, vgg_dist when asked)
    outputs: list[np.ndarray]  # the first few predictions, H x W x 3 float32 (for the sample grid)


def _rounded(pred: torch.Tensor) -> np.ndarray:
    """1 x 3 x H x W -> H x W x 3 float32, rounded to 8 bits like a saved picture."""
    array = pred[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (np.rint(array * 255.0) / 255.0).astype(np.float32)


@torch.inference_mode()
def validate(
    model: torch.nn.Module,
    valset: ValidationSet,
    device: torch.device,
    *,
    precision: str = "fp32",
    keep: int = 0,
    perceptual: PerceptualDistance | None = None,
    colour: bool = False,
) -> ValidationResult:
    """Score `model` on every pair of `valset` (one image at a time: sizes differ); keep `keep` outputs.

    With `perceptual`, also its VGG distance (`vgg_dist`, lower is better): what the GAN phase's snapshots are
    picked by, since PSNR falls as an adversarial loss adds texture. With `colour`, the CIELAB a*b* error
    (`ab_error`, lower is better) that colourisation runs are picked by. `precision`: the model's number format
    ("fp32" or "bf16" autocast, as it trains); the scores are computed in fp32 on 8-bit-rounded outputs.
    """
    was_training = model.training
    model.eval()
    border = valset.scale
    psnrs, ssims, l1s, distances, ab_errors, outputs, in_boxes = [], [], [], [], [], [], []
    try:
        for i, (lq, hq) in enumerate(zip(valset.lq, valset.hq, strict=True)):
            with autocast(precision, device):
                pred = _rounded(model(lq.to(device)).float())
            psnr = metrics.psnr_y(pred, hq, border)
            psnrs.append(min(psnr, 100.0) if math.isfinite(psnr) else 100.0)
            ssims.append(metrics.ssim_y(pred, hq, border))
            l1s.append(float(np.abs(pred - hq).mean()))
            for box in valset.boxes[i] if i < len(valset.boxes) else ():
                in_boxes.append(min(metrics.psnr_in_box(pred, hq, box), 100.0))
            if perceptual is not None:
                distances.append(perceptual(pred, hq, border))
            if colour:
                ab_errors.append(metrics.ab_error(pred, hq, border))
            if i < keep:
                outputs.append(pred)
    finally:
        model.train(was_training)
    n = max(1, len(psnrs))
    result = {"psnr_y": sum(psnrs) / n, "ssim_y": sum(ssims) / n, "l1": sum(l1s) / n}
    if in_boxes:
        result["psnr_watermark"] = sum(in_boxes) / len(in_boxes)
    if perceptual is not None:
        result["vgg_dist"] = sum(distances) / n
    if colour:
        result["ab_error"] = sum(ab_errors) / n
    return ValidationResult(result, outputs)


@torch.inference_mode()
def validate_masks(
    model: torch.nn.Module, valset: MaskValidationSet, device: torch.device, *, precision: str = "fp32", keep: int = 0
) -> tuple[dict[str, float], list[np.ndarray]]:
    """A text-mask model's IoU, F1 (pixels pooled over the set) and box recall, as `evaluate` scores them, and
    the first `keep` predicted masks (logit >= 0, i.e. probability >= 0.5)."""
    was_training = model.training
    model.eval()
    counts, found, boxes, outputs = MaskCounts(), 0, 0, []
    try:
        for i, (lq, truth) in enumerate(zip(valset.lq, valset.masks, strict=True)):
            with autocast(precision, device):
                pred = (model(lq.to(device)).float()[0, 0] >= 0).cpu().numpy()
            counts += count_mask(pred, truth)
            truth_boxes = valset.boxes[i] if i < len(valset.boxes) else []
            found, boxes = found + boxes_found(truth_boxes, text_boxes(pred)), boxes + len(truth_boxes)
            if i < keep:
                outputs.append(pred)
    finally:
        model.train(was_training)
    result = {"iou": counts.iou, "f1": counts.f1, "precision": counts.precision, "recall": counts.recall}
    if boxes:
        result["box_recall"] = found / boxes
    return result, outputs


def mask_grid(valset: MaskValidationSet, outputs: list[np.ndarray]) -> Image.Image:
    """Rows of (input, predicted mask over it, true mask over it), `GRID_TILE` crops centred on the text."""
    rows = []
    for i, pred in enumerate(outputs):
        lq = valset.lq[i][0].permute(1, 2, 0).numpy()
        h, w = lq.shape[:2]
        size_w, size_h = min(GRID_TILE, w), min(GRID_TILE, h)
        boxes = valset.boxes[i] if i < len(valset.boxes) else []
        cx, cy = ((boxes[0][0] + boxes[0][2]) // 2, (boxes[0][1] + boxes[0][3]) // 2) if boxes else (w // 2, h // 2)
        left, top = min(max(cx - size_w // 2, 0), w - size_w), min(max(cy - size_h // 2, 0), h - size_h)
        box = (left, top, left + size_w, top + size_h)
        rows.append([_tile(lq, box), _tile(overlay(lq, pred), box), _tile(overlay(lq, valset.masks[i]), box)])
    return _grid(rows)


def _tile(array: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    image = Image.fromarray(np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8))
    return image.crop(box)


def sample_grid(valset: ValidationSet, outputs: list[np.ndarray]) -> Image.Image:
    """Rows of (input enlarged with nearest neighbour, output, target), centre crops of `GRID_TILE` pixels."""
    rows = []
    for i, pred in enumerate(outputs):
        hq = valset.hq[i]
        h, w = hq.shape[:2]
        size_w, size_h = min(GRID_TILE, w), min(GRID_TILE, h)
        box = ((w - size_w) // 2, (h - size_h) // 2, (w - size_w) // 2 + size_w, (h - size_h) // 2 + size_h)
        lq = valset.lq[i][0].permute(1, 2, 0).numpy()
        lq_big = Image.fromarray(np.rint(lq * 255).astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST)
        rows.append([lq_big.crop(box), _tile(pred, box), _tile(hq, box)])
    return _grid(rows)


def _grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Rows of tiles pasted side by side, row under row, on white."""
    width = max(sum(t.width for t in row) for row in rows)
    grid = Image.new("RGB", (width, sum(row[0].height for row in rows)), "white")
    y = 0
    for row in rows:
        x = 0
        for tile in row:
            grid.paste(tile, (x, y))
            x += tile.width
        y += row[0].height
    return grid


def save_png(image: Image.Image, path: Path) -> Path:
    """Write a PNG atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return atomic_write_bytes(path, buffer.getvalue())


def validate_with_samples(
    model: torch.nn.Module,
    valset: ValidationSet | MaskValidationSet,
    device: torch.device,
    *,
    precision: str,
    samples: int,
    grid_path: Path,
    perceptual: PerceptualDistance | None = None,
    colour: bool = False,
) -> tuple[dict[str, float], Path | None]:
    """`validate`, then the grid of the first `samples` pairs written to `grid_path` (None if no samples)."""
    keep = min(samples, len(valset))
    if isinstance(valset, MaskValidationSet):
        scores, masks = validate_masks(model, valset, device, precision=precision, keep=keep)
        return scores, (save_png(mask_grid(valset, masks), grid_path) if masks else None)
    result = validate(model, valset, device, precision=precision, keep=keep, perceptual=perceptual, colour=colour)
    if not result.outputs:
        return result.metrics, None
    return result.metrics, save_png(sample_grid(valset, result.outputs), grid_path)
