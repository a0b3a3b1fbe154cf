"""`decrappify crappify SRC DST --preset P --seed S`: degraded training inputs from a folder of clean images.

Each clean image is read, converted to 8-bit RGB, optionally resized (`--size`), and degraded by the preset with
a random stream derived from (seed, its path relative to SRC), so the outputs are byte-for-byte the same whatever
the number of workers or their order, and the same as what `decrappify evaluate --task P --seed S` feeds the
models. Outputs are PNG (lossless: the artefacts are exactly the pipeline's), the SRC tree mirrored; one
`manifest.json` records the preset, seed, scale and, per image, its size and watermark boxes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from decrappify import __version__
from decrappify.cli.options import add_max_pixels
from decrappify.data.degrade import (
    DEFAULT_PRESET,
    PRESETS,
    Pipeline,
    create_preset,
    resize_shorter_side,
    rng_for,
)
from decrappify.errors import ConfigError, InputError, OutputError
from decrappify.io.atomic import atomic_write_text
from decrappify.io.images import DEFAULT_MAX_PIXELS, picture_from_pil, picture_to_pil, read_image, write_image
from decrappify.io.jobs import BatchItem, collect_inputs, output_path, run_batch

log = logging.getLogger("decrappify")

MANIFEST_NAME = "manifest.json"


def _presets_text() -> str:
    width = max(len(name) for name in PRESETS)
    return "\n".join(f"  {name:<{width}}  {preset.description}" for name, preset in PRESETS.items())


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "crappify",
        help="make degraded (low-quality) training inputs from a folder of clean images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Degrade every image under SRC with a preset and write it as PNG under DST, mirroring SRC's folders.\n"
            "Inputs are converted to 8-bit RGB (alpha is dropped: training pairs are RGB); inputs are never\n"
            "modified. Each image gets its own random stream from --seed and its path relative to SRC, so the\n"
            "result is byte-for-byte the same for any --workers. DST/manifest.json records the preset, seed, scale\n"
            "and per image its size [width, height] and watermark boxes [left, top, right, bottom) in the degraded\n"
            "image's pixels (multiply by the scale for the clean image). A downscaled output is floor(side / scale)\n"
            "pixels a side: its clean counterpart is the clean image cropped at the right and bottom to a multiple\n"
            "of the scale. An input that cannot be read is reported by name; the others are still written (exit 1)."
        ),
        epilog=f"presets:\n{_presets_text()}",
    )
    parser.add_argument("src", metavar="SRC", nargs="?", help="folder of clean images (searched recursively)")
    parser.add_argument("dst", metavar="DST", nargs="?", help="output folder (must not be inside SRC)")
    parser.add_argument(
        "--preset", default=DEFAULT_PRESET, help=f"degradation preset (default {DEFAULT_PRESET}; see below)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel processes (default: number of CPUs)",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="N",
        help="first resize each clean image (bicubic) so its shorter side is N * scale, e.g. 96 for fastai's "
        "96-pixel inputs (default: keep the size); --hq-dir then holds the matching clean images",
    )
    parser.add_argument(
        "--hq-dir",
        metavar="DIR",
        help="also write the clean counterparts (resized, cropped to a multiple of the scale) as PNG under DIR",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_max_pixels(parser)
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.set_defaults(handler=run)
    return parser


@dataclass(frozen=True)
class CrappifyJob:
    """Degrade one image and write it; picklable, so worker processes can run it."""

    pipeline: Pipeline
    seed: int
    dst: Path
    records: Path  # where each image's manifest entry is left for the parent process
    hq_dir: Path | None = None
    size: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    overwrite: bool = False

    def __call__(self, item: BatchItem) -> Path:
        picture = read_image(item.source, max_pixels=self.max_pixels)
        clean = picture_to_pil(picture)
        scale = self.pipeline.scale
        if self.size is not None:
            clean = resize_shorter_side(clean, self.size * scale)
        if min(clean.size) < scale:
            raise InputError(item.source, f"{clean.width} x {clean.height} is smaller than the scale {scale}")
        key = item.relative.as_posix()
        degraded = self.pipeline(clean, rng_for(self.seed, key))
        out = output_path(item, self.dst, ".png")
        self._write(degraded.image, out, picture.icc_profile, item.source)
        if self.hq_dir is not None:
            hq_size = (degraded.image.width * degraded.scale, degraded.image.height * degraded.scale)
            hq = clean if hq_size == clean.size else clean.crop((0, 0, *hq_size))
            self._write(hq, output_path(item, self.hq_dir, ".png"), picture.icc_profile, item.source)
        record = {
            "source": key,
            "size": list(degraded.image.size),
            "clean_size": list(clean.size),
            "boxes": [list(box) for box in degraded.boxes],
        }
        _record_path(self.records, key).write_text(json.dumps(record), encoding="utf-8")
        return out

    def _write(self, image, path: Path, icc: bytes | None, source: Path) -> None:
        picture = dataclasses.replace(picture_from_pil(image), icc_profile=icc)
        write_image(picture, path, overwrite=self.overwrite, protect=(source,))


def _record_path(records: Path, key: str) -> Path:
    return records / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        print(_presets_text())
        return 0
    if args.src is None or args.dst is None:
        raise ConfigError("SRC and DST are both needed (or --list-presets)")
    pipeline = create_preset(args.preset)
    _check_numbers(args)
    src, dst = Path(args.src), Path(args.dst)
    hq_dir = Path(args.hq_dir) if args.hq_dir else None
    _check_folders(src, dst, hq_dir)
    items = _plan(collect_inputs([src]), dst, hq_dir, args.overwrite)
    with tempfile.TemporaryDirectory(prefix="decrappify-crappify-") as records:
        job = CrappifyJob(
            pipeline, args.seed, dst, Path(records), hq_dir, args.size, args.max_pixels, args.overwrite
        )
        report = run_batch(items, job, workers=args.workers, desc="crappify", quiet=args.quiet)
        images = _collect_records(items, report.failed, Path(records))
    manifest = {
        "decrappify": __version__,
        "preset": args.preset,
        "pipeline": pipeline.describe(),
        "seed": args.seed,
        "scale": pipeline.scale,
        "size": args.size,
        "images": images,
    }
    _write_json_atomic(dst / MANIFEST_NAME, manifest)
    log.info("crappify: %s; wrote %s", report.summary(), dst / MANIFEST_NAME)
    return report.exit_code


def _check_numbers(args: argparse.Namespace) -> None:
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, not {args.seed}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, not {args.workers}")
    if args.size is not None and args.size < 1:
        raise ConfigError(f"--size must be >= 1, not {args.size}")
    if args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be >= 1, not {args.max_pixels}")


def _check_folders(src: Path, dst: Path, hq_dir: Path | None) -> None:
    """Outputs go to folders of their own, never inside SRC (a second run would read them as inputs)."""
    if not src.exists():
        raise ConfigError(f"{src}: no such file or folder")
    src_root = src.resolve() if src.is_dir() else src.resolve().parent
    outputs = [("DST", dst)] + ([("--hq-dir", hq_dir)] if hq_dir is not None else [])
    for name, folder in outputs:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{name} {folder} exists and is not a folder")
        resolved = folder.resolve()
        if src.is_dir() and (resolved == src_root or src_root in resolved.parents):
            raise ConfigError(f"{name} {folder} is inside SRC {src}; choose a folder outside it")
    if hq_dir is not None and hq_dir.resolve() == dst.resolve():
        raise ConfigError(f"--hq-dir {hq_dir} is DST; the clean and degraded images need separate folders")


def _plan(items: list[BatchItem], dst: Path, hq_dir: Path | None, overwrite: bool) -> list[BatchItem]:
    """Mark inputs whose PNG names collide (a.jpg, a.png); refuse to start if outputs exist, unless overwrite."""
    planned, seen, existing = [], {}, []
    for item in items:
        if item.problem is None:
            key = item.relative.with_suffix(".png").as_posix().casefold()
            first = seen.setdefault(key, item.source)
            if first != item.source:
                item = BatchItem(item.source, item.relative, f"same output name as {first}")
            else:
                targets = [
                    output_path(item, folder, ".png") for folder in (dst, hq_dir) if folder is not None
                ]
                existing += [target for target in targets if target.exists()]
        planned.append(item)
    if (dst / MANIFEST_NAME).exists():
        existing.append(dst / MANIFEST_NAME)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise OutputError(existing[0], f"already exists{more}; use --overwrite to replace")
    return planned


def _collect_records(
    items: list[BatchItem], failed: list[tuple[Path, str]], records: Path
) -> dict[str, dict]:
    """Manifest entries of the images that were written, keyed by their path relative to DST."""
    failed_sources = {source for source, _ in failed}
    images = {}
    for item in items:
        record = _record_path(records, item.relative.as_posix())
        if item.source in failed_sources or not record.exists():
            continue
        images[item.relative.with_suffix(".png").as_posix()] = json.loads(record.read_text(encoding="utf-8"))
    return images


def _write_json_atomic(path: Path, data: dict) -> None:
    """Sorted keys and a fixed layout (so the same run gives the same bytes), moved into place at once."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write_text(path, text)
