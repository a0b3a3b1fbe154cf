"""Score restoration methods on a folder of clean images, the way the super-resolution papers do.

Each clean image is cropped to a multiple of the task's scale and degraded once with the task's preset and a
per-image random stream (`rng_for(seed, relative path)`), so every method sees exactly the same input and a rerun
gives the same numbers. Every method's output is rounded to 8 bits (what a user saves, and what the published
tables score) and compared with the clean image: PSNR and SSIM on the BT.601 Y channel with `scale` pixels cropped
from each border, PSNR on RGB, and for watermark presets the PSNR inside the recorded watermark boxes.
When VGG16 weights are available (`weights.default_vgg16_weights()`), every method also gets a perceptual
distance (`perceptual.py`: an unweighted LPIPS-style distance on VGG16 features, NOT LPIPS; lower is better);
without them that column is null. For `colorize`, colourfulness (Hasler & Suesstrunk) and the mean CIELAB a*b*
error are added, and the truth's own colourfulness is reported for reference.

Methods, in the order the table lists them:
- the baseline, always present: `bicubic` (Pillow BICUBIC upscaling of the degraded input) for scale > 1, and
  `input` (the degraded input itself, unchanged) for scale 1, where "bicubic" would be the identity anyway;
- OpenCV `dnn_superres` peers found in `peers_dir` at the task's scale (`peers.py`);
- our models (`infer.Restorer`), by shipped name or file path.

A method is any object with `name`, `scale` and `__call__(rgb_lq) -> rgb_out` (H x W x 3 float32 in [0, 1]),
so tests and notebooks can pass their own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from decrappify.data import degrade
from decrappify.errors import ConfigError, DecrappifyError, InputError
from decrappify.evaluation import metrics
from decrappify.evaluation.report import write_json, write_report
from decrappify.io.images import is_image_path, picture_to_pil, read_image

__all__ = [
    "TASKS",
    "EvaluationResult",
    "ImageRecord",
    "Method",
    "MethodSummary",
    "Scores",
    "evaluate",
    "write_json",
    "write_report",
]

if TYPE_CHECKING:
    from decrappify.evaluation.perceptual import PerceptualDistance

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), clean-image pixels

TASKS: tuple[str, ...] = ("sr-x4", "restore-x4", "restore-x1", "colorize")
COLOUR_TASKS = frozenset({"colorize"})  # tasks scored for colour as well (colourfulness, a*b* error)
BASELINE = "bicubic"
# PSNR of a perfect reconstruction is infinite; capping it keeps means and JSON finite (100 dB = MSE 6e-6 on 255).
PSNR_CAP = 100.0
CROP_SIZE = 96  # side of the report's crop, clean-image pixels


class Method(Protocol):
    """Something that restores a degraded picture: the unit `evaluate` scores and times."""

    name: str
    scale: int

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray: ...


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with rounding (clipped first, so over/undershoot cannot wrap around)."""
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


class Bicubic:
    """The baseline: Pillow BICUBIC upscaling in 8 bits (as measured in ../shared/README.md); identity at scale 1."""

    def __init__(self, scale: int):
        self.scale = scale
        self.name = BASELINE if scale > 1 else "input"

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray:
        if self.scale == 1:
            return np.asarray(rgb_lq, dtype=np.float32)
        image = Image.fromarray(to_uint8(rgb_lq))
        size = (image.width * self.scale, image.height * self.scale)
        return np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


class ModelMethod:
    """One of our models, through `infer.Restorer` (loaded once; each call is stateless)."""

    def __init__(
        self, name_or_path: str | Path, scale: int, label: str | None = None, ensemble: str | None = None
    ):
        # Imported here: torch and the model code are only needed when a model is actually evaluated.
        from decrappify.inference.restorer import Restorer

        self.restorer = Restorer.from_pretrained(name_or_path, ensemble=ensemble)
        if self.restorer.scale != scale:
            raise ConfigError(
                f"model {name_or_path} upscales x{self.restorer.scale} but this task needs x{scale}"
            )
        self.name = label or self.restorer.name + ensemble_suffix(self.restorer)
        self.scale = scale

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray:
        return self.restorer.restore_array(rgb_lq)


def ensemble_suffix(restorer) -> str:
    """How a row's ensemble differs from the model's own: " +dihedral" (EDSR's "+" names such rows),
    " (no ensemble)", or "" when it runs as its file says."""
    from decrappify.inference.ensemble import model_ensemble

    if restorer.ensemble == model_ensemble(restorer.info):
        return ""
    return " (no ensemble)" if restorer.ensemble == "none" else f" +{restorer.ensemble}"


@dataclass(frozen=True)
class Scores:
    """One method on one image."""

    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    psnr_watermark: float | None
    seconds: float
    megapixels: float  # output size
    perceptual: float | None = None  # VGG feature distance (perceptual.py; not LPIPS), when weights exist
    colourfulness: float | None = None  # colour tasks only
    ab_error: float | None = None  # colour tasks only

    def to_dict(self) -> dict:
        """The scores as JSON values (None where a metric does not apply), rounded like the summary's."""
        return {
            "psnr_y": _rounded(self.psnr_y, 4),
            "ssim_y": _rounded(self.ssim_y, 6),
            "psnr_rgb": _rounded(self.psnr_rgb, 4),
            "psnr_watermark": _rounded(self.psnr_watermark, 4),
            "seconds": _rounded(self.seconds, 4),
            "perceptual": _rounded(self.perceptual, 5),
            "colourfulness": _rounded(self.colourfulness, 3),
            "ab_error": _rounded(self.ab_error, 4),
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class ImageRecord:
    """One image: its scores per method, and the crops the HTML report shows (uint8, not zoomed)."""

    relative: str
    scores: dict[str, Scores]
    crop_box: Box
    crops: dict[str, np.ndarray] = field(default_factory=dict)  # "input" (lq pixels), methods, "truth"
    truth_colourfulness: float | None = None  # colour tasks only: the clean image's own colourfulness


@dataclass(frozen=True)
class MethodSummary:
    """One row of the table: means over images, total time, output throughput."""

    method: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    psnr_watermark: float | None
    seconds: float
    megapixels_per_second: float
    perceptual: float | None = None
    colourfulness: float | None = None
    ab_error: float | None = None

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "psnr_y": _rounded(self.psnr_y, 4),
            "ssim_y": _rounded(self.ssim_y, 6),
            "psnr_rgb": _rounded(self.psnr_rgb, 4),
            "psnr_watermark": _rounded(self.psnr_watermark, 4),
            "seconds": _rounded(self.seconds, 4),
            "megapixels_per_second": _rounded(self.megapixels_per_second, 4),
            "perceptual": _rounded(self.perceptual, 5),
            "colourfulness": _rounded(self.colourfulness, 3),
            "ab_error": _rounded(self.ab_error, 4),
        }


@dataclass
class EvaluationResult:
    """Everything one evaluation produced; `summaries()` gives the table rows, in method order."""

    task: str
    dataset: str
    scale: int
    methods: list[str]
    images: list[ImageRecord]
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def summaries(self) -> list[MethodSummary]:
        return [self._summary(name) for name in self.methods]

    def _summary(self, name: str) -> MethodSummary:
        rows = [record.scores[name] for record in self.images]
        watermark = [row.psnr_watermark for row in rows if row.psnr_watermark is not None]
        seconds = sum(row.seconds for row in rows)
        megapixels = sum(row.megapixels for row in rows)
        return MethodSummary(
            method=name,
            psnr_y=float(np.mean([row.psnr_y for row in rows])),
            ssim_y=float(np.mean([row.ssim_y for row in rows])),
            psnr_rgb=float(np.mean([row.psnr_rgb for row in rows])),
            psnr_watermark=float(np.mean(watermark)) if watermark else None,
            seconds=seconds,
            megapixels_per_second=megapixels / seconds if seconds > 0 else math.inf,
            perceptual=_mean_or_none(row.perceptual for row in rows),
            colourfulness=_mean_or_none(row.colourfulness for row in rows),
            ab_error=_mean_or_none(row.ab_error for row in rows),
        )

    def truth_colourfulness(self) -> float | None:
        """Mean colourfulness of the clean images (colour tasks), the level a colouriser should reach."""
        return _mean_or_none(record.truth_colourfulness for record in self.images)

    def to_dict(self) -> dict:
        """{"task", "dataset", "scale", "results", "images"}, plus {"truth": {"colourfulness"}} for colour tasks.

        "results" are the table's rows (means); "images" has every image's scores per method, so two methods
        can be compared image by image (a paired test) without running them again.
        """
        results = [summary.to_dict() for summary in self.summaries()]
        images = [
            {"image": record.relative, "scores": {name: record.scores[name].to_dict() for name in self.methods}}
            for record in self.images
        ]
        data = {"task": self.task, "dataset": self.dataset, "scale": self.scale, "results": results}
        data["images"] = images
        truth = self.truth_colourfulness()
        if truth is not None:
            data["truth"] = {"colourfulness": round(truth, 3)}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        """A GitHub-markdown table with a title line naming task, dataset, image count and scale.

        Optional columns (watermark PSNR, VGG distance, colourfulness, a*b* error) appear when any row has them.
        """
        summaries = self.summaries()
        with_watermark = any(s.psnr_watermark is not None for s in summaries)
        extras = [(key, title, digits) for key, title, digits in _EXTRA_COLUMNS
                  if any(getattr(s, key) is not None for s in summaries)]  # fmt: skip
        header = ["method", "PSNR_Y (dB)", "SSIM_Y", "PSNR_RGB (dB)"]
        header += ["PSNR watermark (dB)"] if with_watermark else []
        header += [title for _, title, _ in extras]
        header += ["seconds", "output MP/s"]
        lines = [
            (
                f"{self.task} on {self.dataset}: {len(self.images)} images, x{self.scale}, "
                f"Y-channel scores with a {self.scale}-pixel border cropped"
            ),
            "",
            "| " + " | ".join(header) + " |",
            "| " + " | ".join("---" for _ in header) + " |",
        ]
        for s in summaries:
            cells = [s.method, f"{s.psnr_y:.2f}", f"{s.ssim_y:.4f}", f"{s.psnr_rgb:.2f}"]
            if with_watermark:
                cells.append("-" if s.psnr_watermark is None else f"{s.psnr_watermark:.2f}")
            for key, _, digits in extras:
                value = getattr(s, key)
                cells.append("-" if value is None else f"{value:.{digits}f}")
            cells += [f"{s.seconds:.2f}", f"{s.megapixels_per_second:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        notes = []
        if any(s.perceptual is not None for s in summaries):
            notes.append(
                "VGG dist: unweighted LPIPS-style distance on VGG16 features (not LPIPS), lower is better"
            )
        truth = self.truth_colourfulness()
        if truth is not None:
            notes.append(f"colourfulness of the truth: {truth:.1f}; a*b* error: mean CIELAB chroma distance")
        return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


# (attribute, markdown title, decimals) of the optional columns, in table order
_EXTRA_COLUMNS = (
    ("perceptual", "VGG dist", 4),
    ("colourfulness", "colourfulness", 1),
    ("ab_error", "a*b* error", 2),
)


def _mean_or_none(values) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def check_task(task: str) -> str:
    """Reject unknown task names early, listing the valid ones."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return task


def find_images(data_dir: str | Path) -> list[tuple[Path, str]]:
    """All images under `data_dir` (recursive), as (path, relative posix path), sorted by relative path."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(root, "not a folder of images")
    found = [(p, p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file() and is_image_path(p)]
    if not found:
        raise InputError(root, "no images found (looked for image files in this folder and below)")
    return sorted(found, key=lambda item: item[1])


def create_methods(
    specs: Sequence[str | Method],
    scale: int,
    peers_dir: str | Path | None = None,
    ensemble: str | None = None,
) -> list[Method]:
    """The baseline, then peers from `peers_dir`, then each spec (a name, a path, or a ready `Method`).

    `ensemble` applies to the models named by specs (see `decrappify.inference.ensemble`; None: each model's own).
    """
    methods: list[Method] = [Bicubic(scale)]
    if peers_dir is not None:
        from decrappify.evaluation.peers import (
            load_peers,  # OpenCV is optional: only imported when peers are asked for
        )

        methods += load_peers(peers_dir, scale)
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str):
            methods.append(spec)
        elif spec.lower() not in (BASELINE, "input") and spec not in seen:  # the baseline is there once
            seen.add(spec)
            label, target = split_label(spec)
            methods.append(ModelMethod(target, scale, label, ensemble))
    return _unique_names(methods)


def split_label(spec: str) -> tuple[str | None, str]:
    """``"LABEL=PATH"`` -> ``(LABEL, PATH)``; a plain name or path (even one holding ``=``) -> ``(None, spec)``.

    Two runs of one recipe store the same model name; a label tells their rows apart in a table.
    """
    label, sep, target = spec.partition("=")
    if not sep or not label or not target or "/" in label or Path(spec).exists():
        return None, spec
    return label, target


def _unique_names(methods: list[Method]) -> list[Method]:
    """Two models with the same stored name would share a table row: suffix the later ones."""
    names: set[str] = set()
    for method in methods:
        base, n = method.name, 2
        while method.name in names:
            method.name, n = f"{base} ({n})", n + 1
        names.add(method.name)
    return methods


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
) -> EvaluationResult:
    """Degrade every image under `data_dir` with `task`'s preset and score the baseline, peers and `methods`.

    Unreadable or too-small images are logged, skipped and listed in `result.failed`; if none is left,
    `InputError`. `keep_crops` keeps the small crops `write_report` needs. `perceptual`: None scores the VGG
    distance when the default weights exist, False never, True requires them (`WeightsError`), or a ready
    `PerceptualDistance`. `ensemble`: run every named model as that self-ensemble (None: as its file says;
    `decrappify.inference.ensemble`).
    """
    pipeline = degrade.create_preset(check_task(task))
    scale = int(pipeline.scale)
    images = find_images(data_dir)
    chosen = create_methods(methods, scale, peers_dir, ensemble)
    _warm_up(chosen)
    distance = resolve_perceptual(perceptual)
    colour = task in COLOUR_TASKS
    result = EvaluationResult(task, Path(data_dir).resolve().name, scale, [m.name for m in chosen], [])
    for path, relative in tqdm(images, desc=f"evaluate {task}", unit="img", disable=not progress):
        try:
            record = evaluate_image(path, relative, pipeline, chosen, seed, keep_crops=keep_crops,
                                    perceptual=distance, colour=colour)  # fmt: skip
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
) -> ImageRecord:
    """Degrade one clean image once, run and score every method on it; `InputError` if it cannot be scored.

    `perceptual` adds the VGG distance, `colour` colourfulness and a*b* error (and the truth's colourfulness).
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
                                         ab_error=metrics.ab_error(pred_float, hq, scale))  # fmt: skip
        record.scores[method.name] = scores
        if keep_crops:
            record.crops[method.name] = _crop(pred, record.crop_box)
    if keep_crops:
        record.crops["input"] = _crop(to_uint8(lq), tuple(v // scale for v in record.crop_box))
        record.crops["truth"] = _crop(to_uint8(hq), record.crop_box)
    return record


def resolve_perceptual(perceptual: PerceptualDistance | bool | None) -> PerceptualDistance | None:
    """The distance `evaluate` uses: see its `perceptual` argument (torch is imported only when needed)."""
    if perceptual is False:
        return None
    if perceptual is None or perceptual is True:
        from decrappify.evaluation.perceptual import PerceptualDistance, default_perceptual

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
