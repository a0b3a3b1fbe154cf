"""Write an evaluation to disk: the JSON summary and a self-contained HTML page of side-by-side crops.

The page shows, per image, the same region from the degraded input, every method, and the clean truth, zoomed
with nearest neighbour so that no browser smoothing hides or invents detail. Pictures are PNG files next to
`index.html`, linked relatively, with no external resources: the folder can be zipped, mailed or served as is.
Every file is written atomically (`decrappify.io.atomic`), so an interrupted run never leaves a half-written
page or picture behind.
`write_overview` puts several such reports on one page (the demo's), linking the crops in their folders.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from decrappify.errors import OutputError
from decrappify.evaluation.results import QUALITY_KEYS, EvaluationResult, ImageRecord, quality_notes
from decrappify.evaluation.segmentation import SegmentationResult
from decrappify.io.atomic import atomic_write_bytes

_CROP_NAME = re.compile(r"[0-9]{3,}-[0-9]{2,}-[a-z0-9-]+\.png")
DISPLAY_SIZE = 192  # target on-screen side of a crop, pixels (zoom is an integer factor)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.row { display: flex; flex-wrap: wrap; gap: 0.6em; margin-bottom: 1.5em; }
figure { margin: 0; }
figcaption { font-size: 0.85em; text-align: center; max-width: 16em; }
img { image-rendering: pixelated; display: block; }
"""


def write_json(result: EvaluationResult | SegmentationResult, path: str | Path) -> Path:
    """The scores as JSON: {"task", "dataset", "scale", "results": [...], "images": [...]}
    (`EvaluationResult.to_dict`; a text-mask evaluation's rows hold its own scores, `SegmentationResult.to_dict`)."""
    return atomic_write_bytes(path, result.to_json().encode("utf-8"))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "method"


def _zoom(arr: np.ndarray, factor: int) -> np.ndarray:
    return arr.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else arr


def _png(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def _columns(result: EvaluationResult, record: ImageRecord) -> list[tuple[str, list[str], np.ndarray, int]]:
    """(key, caption lines, crop, zoom) per column: input, each method in table order, truth."""
    left, top, right, bottom = record.crop_box
    zoom = max(1, DISPLAY_SIZE // max(right - left, bottom - top, 1))
    # The input is 1/scale the size of the others; it is enlarged to match them, but its caption says what it
    # is (an "x8" here read as the task's scale), and the zoom every crop shares is said once, under the heading.
    label = f"input (1/{result.scale} size)" if result.scale > 1 else "input"
    columns = [("input", [label], record.crops["input"], zoom * result.scale)]
    for name in result.methods:
        scores = record.scores[name]
        caption = [name, f"{scores.psnr_y:.2f} dB / {scores.ssim_y:.4f}"]
        if scores.psnr_watermark is not None:
            caption.append(f"watermark {scores.psnr_watermark:.2f} dB")
        if scores.perceptual is not None:
            caption.append(f"VGG dist {scores.perceptual:.4f}")
        if scores.colourfulness is not None and scores.ab_error is not None:
            caption.append(f"colourfulness {scores.colourfulness:.1f} / a*b* error {scores.ab_error:.2f}")
        if scores.hue_agreement is not None:
            caption.append(f"hue within 30°: {scores.hue_agreement:.0%}")
        columns.append((name, caption + _quality_caption(scores), record.crops[name], zoom))
    columns[0][1].extend(_quality_caption(record.input))
    truth = ["truth"]
    if record.truth_colourfulness is not None:
        truth.append(f"colourfulness {record.truth_colourfulness:.1f}")
    columns.append(("truth", truth + _quality_caption(record.truth), record.crops["truth"], zoom))
    return columns


def _quality_caption(scores) -> list[str]:
    """Caption lines for the no-reference, spectral and text scores that were measured (`Scores`, `Reference`)."""
    lines = []
    if scores.niqe is not None or scores.brisque is not None:
        parts = [f"NIQE {scores.niqe:.2f}" if scores.niqe is not None else "",
                 f"BRISQUE {scores.brisque:.1f}" if scores.brisque is not None else ""]  # fmt: skip
        lines.append(" / ".join(p for p in parts if p))
    if scores.hf_ratio is not None and scores.periodic_artifact is not None:
        lines.append(f"HF {scores.hf_ratio:.2f} / periodic {scores.periodic_artifact:.2f}")
    if scores.text_boxes_detected is not None:
        lines.append(f"text in {scores.text_boxes_detected:.0%} of boxes")
    return lines


def _crop_name(index: int, column: int, key: str) -> str:
    return f"{index:03d}-{column:02d}-{_slug(key)}.png"  # matches _CROP_NAME


def _write_crops(result: EvaluationResult, out_dir: Path) -> set[str]:
    """Write every image's zoomed crops as PNG files in `out_dir`; returns their names."""
    names = set()
    for index, record in enumerate(result.images):
        for column, (key, _, crop, zoom) in enumerate(_columns(result, record)):
            name = _crop_name(index, column, key)
            atomic_write_bytes(out_dir / name, _png(_zoom(crop, zoom)))
            names.add(name)
    return names


def _image_section(
    result: EvaluationResult, record: ImageRecord, index: int, src_prefix: str = "", level: int = 2
) -> str:
    """One image's heading and row of figures; `src_prefix` leads from the page to the crops' folder."""
    figures = []
    for column, (key, caption, crop, zoom) in enumerate(_columns(result, record)):
        src = html.escape(src_prefix + _crop_name(index, column, key))
        size = f'width="{crop.shape[1] * zoom}" height="{crop.shape[0] * zoom}"'
        text = "<br>".join(map(html.escape, caption))
        figures.append(
            f'<figure><img src="{src}" {size} alt="{html.escape(caption[0])}">'
            f"<figcaption>{text}</figcaption></figure>"
        )
    box = ", ".join(str(v) for v in record.crop_box)
    left, top, right, bottom = record.crop_box
    zoom = max(1, DISPLAY_SIZE // max(right - left, bottom - top, 1))
    shown = f", shown {zoom}x (nearest neighbour)" if zoom > 1 else ""
    heading = (
        f"<h{level}>{html.escape(record.relative)}</h{level}>\n<p>crop (left, top, right, bottom): {box}{shown}</p>"
    )
    return f'{heading}\n<div class="row">\n' + "\n".join(figures) + "\n</div>"


#: the optional columns, shown when measured
OPTIONAL_KEYS = ("perceptual", "colourfulness", "ab_error", "hue_agreement", *(key for key, _ in QUALITY_KEYS))
#: Column headers and number formats of the summary table; a key not listed shows its own name and value.
HEADERS = {
    "method": "method",
    "psnr_y": "PSNR Y (dB)",
    "ssim_y": "SSIM Y",
    "psnr_rgb": "PSNR RGB (dB)",
    "psnr_watermark": "PSNR in watermark boxes (dB)",
    "seconds": "time (s)",
    "megapixels_per_second": "output MP/s",
    "perceptual": "VGG distance",
    "colourfulness": "colourfulness",
    "ab_error": "a*b* error",
    "hue_agreement": "hue within 30°",
    "niqe": "NIQE",
    "brisque": "BRISQUE",
    "hf_ratio": "HF ratio",
    "periodic_artifact": "periodic 2/4 px",
    "text_boxes_detected": "text boxes",
}
FORMATS = {"psnr_y": ".2f", "ssim_y": ".4f", "psnr_rgb": ".2f", "psnr_watermark": ".2f", "seconds": ".1f",
           "megapixels_per_second": ".2f", "perceptual": ".4f", "colourfulness": ".1f", "ab_error": ".2f",
           "hue_agreement": ".3f",
           "niqe": ".3f", "brisque": ".2f", "hf_ratio": ".3f", "periodic_artifact": ".3f",
           "text_boxes_detected": ".2f"}  # fmt: skip


def _cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, FORMATS.get(key, ".4g"))
    return str(value)


def _summary_table(result: EvaluationResult) -> str:
    rows = result.to_dict()["results"]
    keys = ["method", "psnr_y", "ssim_y", "psnr_rgb", "psnr_watermark", "seconds", "megapixels_per_second"]
    keys[5:5] = [k for k in OPTIONAL_KEYS if any(r[k] is not None for r in rows)]
    head = "".join(f"<th>{html.escape(HEADERS.get(k, k))}</th>" for k in keys)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_cell(k, r[k]))}</td>" for k in keys)
        + "</tr>"
        for r in rows + _reference_rows(result, keys)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _reference_rows(result: EvaluationResult, keys: Sequence[str]) -> list[dict]:
    """Rows for the degraded input and the truth, when their no-reference or text scores were measured."""
    rows = []
    for which in ("input", "truth"):
        means = result.reference(which)
        if any(v is not None for v in means.values()):
            rows.append({key: which if key == "method" else _round(means.get(key)) for key in keys})
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _notes(result: EvaluationResult) -> str:
    """What the optional columns mean (the VGG distance is easily mistaken for LPIPS)."""
    notes = []
    if any(s.perceptual is not None for s in result.summaries()):
        notes.append(
            "perceptual: unweighted LPIPS-style distance on VGG16 features (not LPIPS); lower is better."
        )
    truth = result.truth_colourfulness()
    if truth is not None:
        notes.append(f"colourfulness (Hasler &amp; S&uuml;sstrunk 2003) of the truth: {truth:.1f}; "
                     "ab_error: mean CIELAB a*b* distance to the truth; hue within 30&deg;: the share of the "
                     "truth's colourful pixels (C*ab &gt; 10) given a hue within 30 degrees of theirs.")  # fmt: skip
    notes += [html.escape(note) + "." for note in quality_notes(result.summaries())]
    return "".join(f"<p>{note}</p>" for note in notes)


def _remove_stale_crops(out_dir: Path, keep: set[str]) -> None:
    """Delete crops an earlier report left in `out_dir` (only files named like ours), so the page and folder agree."""
    for path in out_dir.glob("*.png"):
        if _CROP_NAME.fullmatch(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)


def _report_body(result: EvaluationResult, src_prefix: str = "", level: int = 2) -> list[str]:
    """What a report shows below its title: scoring note, table, skipped files, one section per image."""
    failed = "".join(f"<li>{html.escape(f'{path}: {reason}')}</li>" for path, reason in result.failed)
    return [
        (
            f"<p>{len(result.images)} images; PSNR_Y / SSIM_Y per image under each crop; "
            f"scores on the Y channel with a {result.scale}-pixel border cropped.</p>"
        ),
        _notes(result),
        _summary_table(result),
        f"<h{level}>Skipped</h{level}><ul>{failed}</ul>" if failed else "",
        *(
            _image_section(result, record, index, src_prefix, level)
            for index, record in enumerate(result.images)
        ),
    ]


def _page(title: str, parts: Sequence[str]) -> bytes:
    head = f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
    lines = [
        "<!DOCTYPE html>",
        head,
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    return "\n".join([*lines, *parts, "</body></html>"]).encode("utf-8")


def _check_crops(result: EvaluationResult, out_dir: Path) -> None:
    if any(not record.crops for record in result.images):
        raise OutputError(out_dir, "the evaluation kept no crops (evaluate(..., keep_crops=True) is needed)")


def write_report(result: EvaluationResult, out_dir: str | Path, *, overwrite: bool = True) -> Path:
    """Write `out_dir/index.html` and its PNG crops; returns the page's path. Needs `evaluate(keep_crops=True)`.

    `overwrite=False`: an `OutputError` before anything is written when `out_dir` already holds a report.
    """
    out_dir = Path(out_dir)
    _check_crops(result, out_dir)
    if not overwrite and (out_dir / "index.html").exists():
        raise OutputError(out_dir / "index.html", "already exists; use --overwrite to replace the report")
    title = f"decrappify evaluate: {result.task} on {result.dataset} (x{result.scale})"
    written = _write_crops(result, out_dir)
    index = atomic_write_bytes(out_dir / "index.html", _page(title, _report_body(result)))
    _remove_stale_crops(out_dir, written)
    return index


@dataclass(frozen=True)
class ReportSection:
    """One evaluation on an overview page; its own report (`write_report`) is in `folder`, relative to the page."""

    result: EvaluationResult
    folder: str
    heading: str
    description: str = ""


def write_overview(
    sections: Sequence[ReportSection], out_dir: str | Path, title: str, intro: str = ""
) -> Path:
    """Write `out_dir/index.html`: every section's report on one page, in order, reusing the crops its own
    report already wrote (so call `write_report(section.result, out_dir / section.folder)` first).

    One page is what a newcomer opens; each section also links to its standalone report.
    """
    out_dir = Path(out_dir)
    contents, parts = [], []
    for section in sections:
        _check_crops(section.result, out_dir / section.folder)
        anchor, own_page = f"section-{_slug(section.folder)}", html.escape(f"{section.folder}/index.html")
        contents.append(f'<li><a href="#{anchor}">{html.escape(section.heading)}</a></li>')
        parts += [
            f'<h2 id="{anchor}">{html.escape(section.heading)}</h2>',
            f"<p>{html.escape(section.description)}</p>" if section.description else "",
            f'<p>This section on its own page: <a href="{own_page}">{own_page}</a></p>',
            *_report_body(section.result, src_prefix=f"{section.folder}/", level=3),
        ]
    header = [f"<p>{html.escape(intro)}</p>" if intro else "", f"<ul>{''.join(contents)}</ul>"]
    index = atomic_write_bytes(out_dir / "index.html", _page(title, header + parts))
    _remove_stale_crops(out_dir, set())  # an earlier single report in this folder left its crops here
    return index


# ------------------------------------------------------------------------------------------------ text masks


def write_mask_report(result: SegmentationResult, out_dir: str | Path, *, overwrite: bool = True) -> Path:
    """`out_dir/index.html` for `evaluate --task text-mask`: the table, then per image the degraded input, each
    model's mask tinted over it and the true mask, cropped around the watermark. Needs `keep_crops=True`."""
    out_dir = Path(out_dir)
    if any(not record.crops for record in result.images):
        raise OutputError(out_dir, "the evaluation kept no crops (evaluate_text_mask(..., keep_crops=True) is needed)")
    if not overwrite and (out_dir / "index.html").exists():
        raise OutputError(out_dir / "index.html", "already exists; use --overwrite to replace the report")
    rows = result.to_dict()["results"]
    keys = ["method", "iou", "f1", "precision", "recall", "box_recall", "seconds", "megapixels_per_second"]
    head = "".join(f"<th>{html.escape(key)}</th>" for key in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(k, r[k]))}</td>" for k in keys) + "</tr>" for r in rows)
    parts = [f"<p>{len(result.images)} images degraded with {html.escape(result.preset)}; red: the mask "
             f"(threshold {result.threshold:g}); pixel scores pooled over all images.</p>",
             f"<table><tr>{head}</tr>{body}</table>"]  # fmt: skip
    written = set()
    for index, record in enumerate(result.images):
        figures = []
        for column, key in enumerate(["input", *result.methods, "truth"]):
            crop = record.crops[key]
            zoom = max(1, DISPLAY_SIZE // max(crop.shape[:2]))
            name = _crop_name(index, column, key)
            atomic_write_bytes(out_dir / name, _png(_zoom(crop, zoom)))
            written.add(name)
            scores = record.scores.get(key)
            caption = key if scores is None else f"{key}: IoU {scores.counts.iou:.3f} / F1 {scores.counts.f1:.3f}"
            size = f'width="{crop.shape[1] * zoom}" height="{crop.shape[0] * zoom}"'
            figures.append(f'<figure><img src="{html.escape(name)}" {size} alt="{html.escape(key)}">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
        heading = f"<h2>{html.escape(record.relative)}</h2>"
        parts.append(f'{heading}\n<div class="row">\n' + "\n".join(figures) + "\n</div>")
    title = f"decrappify evaluate: {result.task} on {result.dataset} ({result.preset})"
    index_path = atomic_write_bytes(out_dir / "index.html", _page(title, parts))
    _remove_stale_crops(out_dir, written)
    return index_path
