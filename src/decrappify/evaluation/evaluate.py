"""Score restoration methods on a folder of clean images, the way the super-resolution papers do.

Each clean image is cropped to a multiple of the task's scale and degraded once with the task's preset and a
per-image random stream (`rng_for(seed, relative path)`), so every method sees exactly the same input and a rerun
gives the same numbers. Every method's output is rounded to 8 bits (what a user saves, and what the published
tables score) and compared with the clean image: PSNR and SSIM on the BT.601 Y channel with `scale` pixels cropped
from each border, PSNR on RGB, and for watermark presets the PSNR inside the recorded watermark boxes.
When VGG16 weights are available (`weights.default_vgg16_weights()`), every method also gets a perceptual
distance (`perceptual.py`: an unweighted LPIPS-style distance on VGG16 features, NOT LPIPS; lower is better);
without them that column is null. For `colorize`, colourfulness (Hasler & Suesstrunk), the mean CIELAB a*b*
error and hue agreement (the share of the truth's colourful pixels given a hue within 30 degrees of theirs) are
added, and the truth's own colourfulness is reported for reference.

None of those judges a picture that looks real, so every output also gets (`quality.py`, `text_detection.py`):
NIQE and BRISQUE (no-reference; also scored on the truth, the level to reach), the high-frequency power and the
power at 2 and 4 px periods, each over the truth's, and for watermark presets the share of watermark boxes
where an offline text detector still finds text (also on the degraded input and the truth). BRISQUE and the
text detector need optional packages: by default they are scored when installed (see `evaluate`).

Methods, in the order the table lists them:
- the baseline, always present: `bicubic` (Pillow BICUBIC upscaling of the degraded input) for scale > 1, and
  `input` (the degraded input itself, unchanged) for scale 1, where "bicubic" would be the identity anyway;
- OpenCV `dnn_superres` peers found in `peers_dir` at the task's scale (`peers.py`);
- our models (`inference.restorer.Restorer`), by shipped name or file path, and `realesrgan-x4plus`, the peer
  Real-ESRGAN x4plus, which the same `Restorer` runs (`inference/realesrgan.py`).

A method is any object with `name`, `scale` and `__call__(rgb_lq) -> rgb_out` (H x W x 3 float32 in [0, 1]),
so tests and notebooks can pass their own.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from decrappify.data import degrade
from decrappify.errors import ConfigError, DecrappifyError, InputError
from decrappify.evaluation import metrics, quality, text_detection
from decrappify.evaluation.methods import Method, create_methods, to_uint8
from decrappify.evaluation.perceptual import PerceptualDistance, default_perceptual
from decrappify.evaluation.results import Box, EvaluationResult, ImageRecord, Reference, Scores
from decrappify.io.images import picture_to_pil, read_image
from decrappify.io.listing import images_in_folder
from decrappify.tasks import check_task, is_colour_task, is_segmentation_task

log = logging.getLogger(__name__)

# PSNR of a perfect reconstruction is infinite; capping it keeps means and JSON finite (100 dB = MSE 6e-6 on 255).
PSNR_CAP = 100.0
CROP_SIZE = 96  # side of the report's crop, clean-image pixels


def _warm_up(methods: Sequence[Method]) -> None:
    """One tiny call each, so one-off setup (graph building, thread pools) is not billed to the first image."""
    tiny = np.full((16, 16, 3), 0.5, dtype=np.float32)
    for method in methods:
        method(tiny)


def evaluate(
    data_dir: str | Path,
    task: str,
    methods: Sequence[str | Method] = (),
    peers_dir: str | Path | None = None,
    seed: int = 0,
    *,
    keep_crops: bool = True,
    progress: bool = False,
    perceptual: PerceptualDistance | bool | None = None,
    ensemble: str | None = None,
    precision: str = "fp32",
    no_reference: bool | None = None,
    text_detection: bool | None = None,
) -> EvaluationResult:
    """Degrade every image under `data_dir` with `task`'s preset and score the baseline, peers and `methods`.

    Unreadable or too-small images are logged, skipped and listed in `result.failed`; if none is left,
    `InputError`. `keep_crops` keeps the small crops `write_report` needs. `perceptual`: None scores the VGG
    distance when the default weights exist, False never, True requires them (`WeightsError`), or a ready
    `PerceptualDistance`. `ensemble`: run every named model as that self-ensemble (None: as its file says;
    `decrappify.inference.ensemble`). `precision`: the number format our models run in ("fp32", "bf16" or
    "auto"; `decrappify.inference.precision`). `no_reference`: NIQE, BRISQUE, HF ratio and periodic
    artefacts; None scores them all (BRISQUE only when its model package is installed), False none, True all
    (`ConfigError` naming the package when BRISQUE's is missing). `text_detection`: for watermark presets,
    None detects text when the detector is installed, False never, True requires it.
    """
    if is_segmentation_task(check_task(task)):
        raise ConfigError(f"{task} models make masks, not pictures: score them with segmentation.evaluate_text_mask")
    pipeline = degrade.create_preset(task)
    scale = int(pipeline.scale)
    images = images_in_folder(data_dir)
    chosen = create_methods(methods, scale, peers_dir, ensemble, precision)
    _warm_up(chosen)
    distance = resolve_perceptual(perceptual)
    colour = is_colour_task(task)
    scoring = resolve_quality(no_reference, text_detection)
    result = EvaluationResult(task, Path(data_dir).resolve().name, scale, [m.name for m in chosen], [])
    for path, relative in tqdm(images, desc=f"evaluate {task}", unit="img", disable=not progress):
        try:
            record = evaluate_image(path, relative, pipeline, chosen, seed, keep_crops=keep_crops,
                                    perceptual=distance, colour=colour, quality=scoring)  # fmt: skip
        except DecrappifyError as error:
            reason = error.reason if isinstance(error, InputError) and error.path == path else str(error)
            log.warning("skipped %s: %s", path, reason)
            result.failed.append((path, reason))
            continue
        result.images.append(record)
    if not result.images:
        raise InputError(Path(data_dir), f"none of the {len(images)} images could be evaluated")
    return result


def evaluate_image(
    path: Path,
    relative: str,
    pipeline: degrade.Pipeline,
    methods: Sequence[Method],
    seed: int,
    *,
    keep_crops: bool = True,
    perceptual: PerceptualDistance | None = None,
    colour: bool = False,
    quality: QualityScoring | None = None,
) -> ImageRecord:
    """Degrade one clean image once, run and score every method on it; `InputError` if it cannot be scored.

    `perceptual` adds the VGG distance, `colour` colourfulness, a*b* error and hue agreement (and the truth's
    colourfulness),
    `quality` the no-reference, spectral and text scores it names (and the truth's and input's).
    """
    scale = int(pipeline.scale)
    picture = read_image(path)
    minimum = 2 * scale + metrics.SSIM_WINDOW  # the border crop, then one SSIM window
    height, width = picture.rgb.shape[:2]
    if min(width - width % scale, height - height % scale) < minimum:
        raise InputError(path, f"too small to score at x{scale}: needs at least {minimum}x{minimum} pixels")
    clean = degrade.modcrop(picture_to_pil(picture), scale)
    degraded = pipeline(clean, degrade.rng_for(seed, relative))
    lq_image = degraded.image.convert("RGB")
    if (lq_image.width * scale, lq_image.height * scale) != clean.size:
        raise InputError(path, f"degraded to {lq_image.size}, expected {clean.size} / {scale}")
    hq = metrics.modcrop_array(picture.rgb, scale)
    lq = np.asarray(lq_image, dtype=np.float32) / 255.0
    boxes = degraded.clean_boxes()
    record = ImageRecord(relative, {}, choose_crop(hq, boxes, scale))
    reference = perceptual.reference(hq, scale) if perceptual is not None else None
    if colour:
        record.truth_colourfulness = metrics.colourfulness(hq)
    if quality is not None:
        record.truth = quality.reference(hq, boxes)
        record.input = quality.reference(lq, degraded.boxes, naturalness=False)
    for method in methods:
        started = time.perf_counter()
        out = method(lq)
        seconds = time.perf_counter() - started
        pred = to_uint8(out)
        if pred.shape != hq.shape:
            raise InputError(path, f"{method.name} returned {pred.shape}, expected {hq.shape}")
        pred_float = pred.astype(np.float32) / 255.0
        scores = score(pred_float, hq, scale, boxes, seconds)
        if reference is not None:
            scores = dataclasses.replace(scores, perceptual=perceptual.distance(pred_float, reference, scale))
        if colour:
            scores = dataclasses.replace(scores, colourfulness=metrics.colourfulness(pred_float),
                                         ab_error=metrics.ab_error(pred_float, hq, scale),
                                         hue_agreement=metrics.hue_agreement(pred_float, hq, scale))  # fmt: skip
        if quality is not None:
            scores = dataclasses.replace(scores, **quality.scores(pred_float, hq, boxes))
        record.scores[method.name] = scores
        if keep_crops:
            record.crops[method.name] = _crop(pred, record.crop_box)
    if keep_crops:
        record.crops["input"] = _crop(to_uint8(lq), tuple(v // scale for v in record.crop_box))
        record.crops["truth"] = _crop(to_uint8(hq), record.crop_box)
    return record


@dataclasses.dataclass(frozen=True)
class QualityScoring:
    """Which of the no-reference, spectral and text scores `evaluate_image` adds (see `resolve_quality`)."""

    niqe: bool = True
    brisque: bool = True
    spectral: bool = True
    text: bool = True

    def scores(self, pred: np.ndarray, hq: np.ndarray, boxes: Sequence[Box]) -> dict[str, float | None]:
        """The `Scores` fields of one output (None where not scored or, for text, without watermark boxes)."""
        return {
            "niqe": _niqe(pred) if self.niqe else None,
            "brisque": quality.brisque(pred) if self.brisque else None,
            "hf_ratio": quality.hf_ratio(pred, hq) if self.spectral else None,
            "periodic_artifact": quality.periodic_artifact(pred, hq) if self.spectral else None,
            "text_boxes_detected": text_detection.share_of_boxes_with_text(pred, boxes) if self.text else None,
        }

    def reference(self, rgb: np.ndarray, boxes: Sequence[Box], naturalness: bool = True) -> Reference:
        """The truth's scores (or, with `naturalness` False, only the degraded input's text detection)."""
        return Reference(
            niqe=_niqe(rgb) if self.niqe and naturalness else None,
            brisque=quality.brisque(rgb) if self.brisque and naturalness else None,
            text_boxes_detected=text_detection.share_of_boxes_with_text(rgb, boxes) if self.text else None,
        )


def _niqe(rgb: np.ndarray) -> float | None:
    """NIQE, or None for a picture smaller than one of its patches."""
    return quality.niqe(rgb) if min(rgb.shape[:2]) >= quality.NIQE_PATCH else None


def resolve_quality(no_reference: bool | None, text: bool | None) -> QualityScoring | None:
    """What `evaluate`'s `no_reference` and `text_detection` arguments ask for, checked against what is installed.

    Asked for explicitly (True), a missing BRISQUE model or text detector is a `ConfigError` naming the package.
    """
    if no_reference is True:
        quality.load_brisque_model()
    if text is True:
        text_detection.detector_path()
    brisque = no_reference is True or (no_reference is None and quality.brisque_available())
    detect = text is True or (text is None and text_detection.available())
    scoring = QualityScoring(niqe=no_reference is not False, brisque=brisque, spectral=no_reference is not False,
                             text=detect)  # fmt: skip
    return scoring if any(dataclasses.astuple(scoring)) else None


def resolve_perceptual(perceptual: PerceptualDistance | bool | None) -> PerceptualDistance | None:
    """The distance `evaluate` uses: see its `perceptual` argument (the VGG weights are loaded only when needed)."""
    if perceptual is False:
        return None
    if perceptual is None or perceptual is True:
        return PerceptualDistance.from_weights() if perceptual else default_perceptual()
    return perceptual


def score(pred: np.ndarray, hq: np.ndarray, border: int, boxes: Sequence[Box], seconds: float) -> Scores:
    """All scores of one output against its clean image (PSNRs capped at `PSNR_CAP`)."""
    in_boxes = [min(metrics.psnr_in_box(pred, hq, box), PSNR_CAP) for box in boxes]
    return Scores(
        psnr_y=min(metrics.psnr_y(pred, hq, border), PSNR_CAP),
        ssim_y=metrics.ssim_y(pred, hq, border),
        psnr_rgb=min(metrics.psnr_rgb(pred, hq, border), PSNR_CAP),
        psnr_watermark=float(np.mean(in_boxes)) if in_boxes else None,
        seconds=seconds,
        megapixels=pred.shape[0] * pred.shape[1] / 1e6,
    )


def _crop(arr: np.ndarray, box: Sequence[int]) -> np.ndarray:
    left, top, right, bottom = box
    return np.ascontiguousarray(arr[top:bottom, left:right])


def choose_crop(hq: np.ndarray, boxes: Sequence[Box], scale: int, size: int = CROP_SIZE) -> Box:
    """The report's crop: around the watermark boxes if any, else the most detailed `size` px square.

    Edges are aligned to multiples of `scale`, so the same region of the degraded input is exactly the crop / scale.
    """
    height, width = hq.shape[:2]
    if boxes:
        margin = 8
        left = max(min(b[0] for b in boxes) - margin, 0) // scale * scale
        top = max(min(b[1] for b in boxes) - margin, 0) // scale * scale
        right = min(max(b[2] for b in boxes) + margin, width) // scale * scale
        bottom = min(max(b[3] for b in boxes) + margin, height) // scale * scale
        if right > left and bottom > top:
            return left, top, right, bottom
    side = max(min(size, height, width) // scale * scale, scale)
    luma = metrics.rgb_to_y(hq)
    # Window sums of Y and Y^2 from summed-area tables: the variance of every candidate square in one pass.
    table = np.zeros((2, height + 1, width + 1))
    table[0, 1:, 1:] = luma.cumsum(0).cumsum(1)
    table[1, 1:, 1:] = (luma**2).cumsum(0).cumsum(1)
    step = max(8 // scale, 1) * scale
    tops = np.arange(0, height - side + 1, step)[:, None]
    lefts = np.arange(0, width - side + 1, step)[None, :]
    sums = table[:, tops + side, lefts + side] - table[:, tops, lefts + side]
    sums = sums - table[:, tops + side, lefts] + table[:, tops, lefts]
    variance = sums[1] / side**2 - (sums[0] / side**2) ** 2
    row, col = np.unravel_index(int(np.argmax(variance)), variance.shape)
    top, left = int(tops[row, 0]), int(lefts[0, col])
    return left, top, left + side, top + side
