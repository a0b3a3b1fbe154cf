"""What an evaluation produces: scores per image and method, the table's rows, and the JSON/markdown forms.

These types are the contract between `evaluate` (which fills them), `report` (which draws them) and every
reader of the evaluate JSON: `EvaluationResult.to_dict` is that file's layout.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), clean-image pixels


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
    hue_agreement: float | None = None  # colour tasks only; None when the truth has no colourful pixel
    niqe: float | None = None  # no-reference (quality.py); None when skipped or the picture is under 96 px
    brisque: float | None = None  # no-reference (quality.py); None when skipped or its model is not installed
    hf_ratio: float | None = None  # high-frequency power over the truth's (quality.py)
    periodic_artifact: float | None = None  # power at 2 and 4 px periods over the truth's (quality.py)
    text_boxes_detected: float | None = None  # share of watermark boxes with text found (text_detection.py)

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
            "hue_agreement": _rounded(self.hue_agreement, 4),
            **_quality_dict(self),
        }


# The no-reference and spectral scores: (attribute, decimals), in table order. They appear in `Scores`,
# `MethodSummary` and `Reference` alike.
QUALITY_KEYS = (("niqe", 4), ("brisque", 3), ("hf_ratio", 4), ("periodic_artifact", 4), ("text_boxes_detected", 4))


def _quality_dict(scores) -> dict:
    return {key: _rounded(getattr(scores, key), digits) for key, digits in QUALITY_KEYS}


@dataclass(frozen=True)
class Reference:
    """The scores a picture that is no method's output gets: the degraded input or the truth.

    hf_ratio and periodic_artifact are 1.0 for the truth by definition and not scored for the input (it has the
    wrong size at scale > 1), so they stay None here.
    """

    niqe: float | None = None
    brisque: float | None = None
    text_boxes_detected: float | None = None
    hf_ratio: float | None = None
    periodic_artifact: float | None = None


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
    truth: Reference = Reference()  # the clean image's no-reference scores and text detection
    input: Reference = Reference()  # the degraded input's text detection (at scale 1 also the baseline row)


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
    hue_agreement: float | None = None
    niqe: float | None = None
    brisque: float | None = None
    hf_ratio: float | None = None
    periodic_artifact: float | None = None
    text_boxes_detected: float | None = None

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
            "hue_agreement": _rounded(self.hue_agreement, 4),
            **_quality_dict(self),
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
            hue_agreement=_mean_or_none(row.hue_agreement for row in rows),
            **{key: _mean_or_none(getattr(row, key) for row in rows) for key, _ in QUALITY_KEYS},
        )

    def reference(self, which: str) -> dict[str, float | None]:
        """Mean scores of the "truth" or the "input" pictures (`Reference` fields; None where not scored)."""
        pictures = [getattr(record, which) for record in self.images]
        return {key: _mean_or_none(getattr(p, key) for p in pictures) for key, _ in QUALITY_KEYS}

    def truth_colourfulness(self) -> float | None:
        """Mean colourfulness of the clean images (colour tasks), the level a colouriser should reach."""
        return _mean_or_none(record.truth_colourfulness for record in self.images)

    def to_dict(self) -> dict:
        """{"task", "dataset", "scale", "results", "images"}, plus "truth" and "input" when they were scored.

        "results" are the table's rows (means); "images" has every image's scores per method, so two methods
        can be compared image by image (a paired test) without running them again. "truth" holds the clean
        images' mean colourfulness (colour tasks) and no-reference scores; "input" the degraded inputs' share of
        watermark boxes with text (watermark tasks). Each image carries its own "truth" / "input" likewise.
        """
        results = [summary.to_dict() for summary in self.summaries()]
        images = []
        for record in self.images:
            entry = {"image": record.relative, "scores": {name: record.scores[name].to_dict() for name in self.methods}}
            for which in ("truth", "input"):
                scored = _scored(_quality_dict(getattr(record, which)))
                if scored:
                    entry[which] = scored
            images.append(entry)
        data = {"task": self.task, "dataset": self.dataset, "scale": self.scale, "results": results}
        data["images"] = images
        truth = self.truth_colourfulness()
        if truth is not None:
            data["truth"] = {"colourfulness": round(truth, 3)}
        for which in ("truth", "input"):
            scored = _scored({key: _rounded(self.reference(which)[key], digits) for key, digits in QUALITY_KEYS})
            if scored:
                data.setdefault(which, {}).update(scored)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        """A GitHub-markdown table with a title line naming task, dataset, image count and scale.

        Optional columns (watermark PSNR, VGG distance, colourfulness, a*b* error, hue agreement, the no-reference and
        spectral scores) appear when any row has them; "input" and "truth" rows follow when those were scored.
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
            cells += [_cell(getattr(s, key), digits) for key, _, digits in extras]
            cells += [f"{s.seconds:.2f}", f"{s.megapixels_per_second:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        for which in ("input", "truth"):
            means = self.reference(which)
            if any(v is not None for v in means.values()):
                cells = [which, "-", "-", "-"] + (["-"] if with_watermark else [])
                cells += [_cell(means.get(key), digits) for key, _, digits in extras] + ["-", "-"]
                lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines + self._notes(summaries)) + "\n"

    def _notes(self, summaries: list[MethodSummary]) -> list[str]:
        notes = []
        if any(s.perceptual is not None for s in summaries):
            notes.append("VGG dist: unweighted LPIPS-style distance on VGG16 features (not LPIPS), lower is better")
        truth = self.truth_colourfulness()
        if truth is not None:
            notes.append(f"colourfulness of the truth: {truth:.1f}; a*b* error: mean CIELAB chroma distance; hue "
                         "within 30°: share of the truth's colourful pixels (C*ab > 10) given a hue within 30 degrees")
        notes += quality_notes(summaries)
        return [""] + notes if notes else []


def quality_notes(summaries: list[MethodSummary]) -> list[str]:
    """One line per measured no-reference, spectral or text score: what it means and which way is better."""
    notes: list[str] = []
    if any(s.niqe is not None or s.brisque is not None for s in summaries):
        notes.append("NIQE, BRISQUE: no-reference naturalness, lower is better (the truth's row is the target)")
    if any(s.hf_ratio is not None for s in summaries):
        notes.append(
            "HF ratio: power above 1/4 Nyquist over the truth's (<1 blurred, >1 noise or invented detail); "
            "periodic 2/4 px: power at those periods over the truth's (1.0 is the truth; a checkerboard is >1)"
        )
    if any(s.text_boxes_detected is not None for s in summaries):
        notes.append("text boxes: share of watermark boxes where the PP-OCRv4 detector still finds text")
    return notes


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _scored(values: dict) -> dict:
    return {key: value for key, value in values.items() if value is not None}


# (attribute, markdown title, decimals) of the optional columns, in table order
_EXTRA_COLUMNS = (
    ("perceptual", "VGG dist", 4),
    ("colourfulness", "colourfulness", 1),
    ("ab_error", "a*b* error", 2),
    ("hue_agreement", "hue within 30°", 3),
    ("niqe", "NIQE", 3),
    ("brisque", "BRISQUE", 2),
    ("hf_ratio", "HF ratio", 3),
    ("periodic_artifact", "periodic 2/4 px", 3),
    ("text_boxes_detected", "text boxes", 2),
)


def _mean_or_none(values) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
