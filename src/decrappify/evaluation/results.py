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
