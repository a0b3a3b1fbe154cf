"""Crappify a folder: degraded training inputs from clean images, and the manifest that describes them.

Each clean image is read, converted to 8-bit RGB, optionally resized (`size`), and degraded by the preset
with a random stream derived from (seed, its path relative to SRC), so the outputs are byte-for-byte the same
whatever the number of workers or their order, and the same as what `decrappify evaluate --task P --seed S`
feeds the models. Outputs are PNG (lossless: the artefacts are exactly the pipeline's), the SRC tree mirrored; one
`manifest.json` records the preset, seed, scale and, per image, its size and watermark boxes. Presets that draw a
watermark also write each image's text mask beside it, NAME_mask.png (white on the pixels the text changed, at the
degraded image's size; the name `decrappify detect` gives its masks, so `restore --only-masked --mask DST` takes
them), and the manifest names it.

Workers are separate processes, so each leaves its image's manifest entry as a small JSON record in a
temporary folder; the parent gathers the records of the images that were written and writes the manifest once,
at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from decrappify import __version__
from decrappify.data.degrade import DEFAULT_PRESET, Pipeline, create_preset, resize_shorter_side, rng_for
from decrappify.errors import ConfigError, InputError, OutputError
from decrappify.io.atomic import atomic_write_text
from decrappify.io.images import DEFAULT_MAX_PIXELS, picture_from_pil, picture_to_pil, read_image, write_image
from decrappify.io.jobs import BatchItem, BatchReport, collect_inputs, output_path, run_batch

MASK_SUFFIX = "_mask.png"  # the text mask beside each degraded PNG (as `decrappify detect` names its masks)

MANIFEST_NAME = "manifest.json"


def crappify_folder(
    src: Path,
    dst: Path,
    *,
    preset: str = DEFAULT_PRESET,
    seed: int = 0,
    workers: int = 1,
    size: int | None = None,
    hq_dir: Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    skip_existing: bool = False,
    quiet: bool = False,
) -> BatchReport:
    """Degrade every image under `src` into PNGs under `dst` (clean pairs under `hq_dir`), then the manifest.

    `ConfigError` (naming the command's options, where these values come from) for an unknown preset, a bad
    number or an output folder inside `src`; `OutputError` before any work if outputs exist and not
    `overwrite`. An image that fails is reported in the returned `BatchReport` and left out of the manifest;
    the rest are written. `skip_existing`: an image whose outputs exist and which the earlier run's manifest
    records (same preset, seed and size, else `ConfigError`) is left alone and keeps its manifest entry; the
    others are made (degradation is seeded per image, so a redone image is the same bytes).
    """
    pipeline = create_preset(preset)
    _check_numbers(seed, workers, size, max_pixels)
    check_folders(src, dst, hq_dir)
    items = collect_inputs([src])
    kept: dict[str, dict[str, Any]] = {}
    if skip_existing and not overwrite:
        items, kept = _skip_done(items, dst, hq_dir, {"preset": preset, "seed": seed, "size": size})
        overwrite = True  # what is left was not finished: a partial output of a stopped run is replaced
    items = plan_outputs(items, dst, hq_dir, overwrite, masks=pipeline.draws_text)
    with tempfile.TemporaryDirectory(prefix="decrappify-crappify-") as records:
        job = CrappifyJob(pipeline, seed, dst, Path(records), hq_dir, size, max_pixels, overwrite)
        report = run_batch(items, job, workers=workers, desc="crappify", quiet=quiet)
        images = {**kept, **_collect_records(items, report.failed, Path(records))}
    report.skipped = [src / key for key in kept]
    manifest = {
        "decrappify": __version__,
        "preset": preset,
        "pipeline": pipeline.describe(),
        "seed": seed,
        "scale": pipeline.scale,
        "size": size,
        "images": images,
    }
    write_manifest(dst, manifest)
    return report


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
        mask = mask_path(item, self.dst) if self.pipeline.draws_text else None
        if mask is not None:
            text = Image.fromarray(degraded.text_mask().astype("uint8") * 255, "L")
            write_image(picture_from_pil(text), mask, overwrite=self.overwrite, protect=(item.source,))
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
        if mask is not None:
            record["mask"] = mask.relative_to(self.dst).as_posix()
        _record_path(self.records, key).write_text(json.dumps(record), encoding="utf-8")
        return out

    def _write(self, image: Image.Image, path: Path, icc: bytes | None, source: Path) -> None:
        picture = dataclasses.replace(picture_from_pil(image), icc_profile=icc)
        write_image(picture, path, overwrite=self.overwrite, protect=(source,))


def _skip_done(
    items: list[BatchItem], dst: Path, hq_dir: Path | None, settings: dict[str, Any]
) -> tuple[list[BatchItem], dict[str, dict[str, Any]]]:
    """The items still to make, and the manifest entries of those an earlier run finished (`skip_existing`)."""
    if not (dst / MANIFEST_NAME).exists():
        return items, {}
    manifest = read_manifest(dst)
    for key, value in settings.items():
        if manifest.get(key) != value:
            raise ConfigError(
                f"--skip-existing: {dst / MANIFEST_NAME} was made with {key}={manifest.get(key)!r}, not "
                f"{value!r}; use the same settings, another DST, or --overwrite"
            )
    todo, kept = [], {}
    for item in items:
        key = item.relative.with_suffix(".png").as_posix()
        folders = [folder for folder in (dst, hq_dir) if folder is not None]
        done = all(output_path(item, folder, ".png").exists() for folder in folders)
        done = done and ("mask" not in manifest["images"].get(key, {}) or mask_path(item, dst).exists())
        if item.problem is None and done and key in manifest["images"]:
            kept[key] = manifest["images"][key]
        else:
            todo.append(item)
    return todo, kept


def check_folders(src: Path, dst: Path, hq_dir: Path | None) -> None:
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


def mask_path(item: BatchItem, dst: Path) -> Path:
    """Where an image's text mask goes: beside its degraded PNG, photos/a.jpg -> DST/photos/a_mask.png."""
    out = output_path(item, dst, ".png")
    return out.with_name(out.stem + MASK_SUFFIX)


def plan_outputs(
    items: list[BatchItem], dst: Path, hq_dir: Path | None, overwrite: bool, *, masks: bool = False
) -> list[BatchItem]:
    """Mark inputs whose PNG names collide (a.jpg, a.png; with `masks` also a.jpg, a_mask.png); refuse if outputs
    exist and not overwrite."""
    planned, seen, existing = [], {}, []
    for item in items:
        if item.problem is None:
            names = [item.relative.with_suffix(".png")]
            names += [mask_path(item, dst).relative_to(dst)] if masks else []
            firsts = [seen.setdefault(name.as_posix().casefold(), item.source) for name in names]
            first = next((source for source in firsts if source != item.source), None)
            if first is not None:
                item = BatchItem(item.source, item.relative, f"same output name as {first}")
            else:
                targets = [
                    output_path(item, folder, ".png") for folder in (dst, hq_dir) if folder is not None
                ] + ([mask_path(item, dst)] if masks else [])
                existing += [target for target in targets if target.exists()]
        planned.append(item)
    if (dst / MANIFEST_NAME).exists():
        existing.append(dst / MANIFEST_NAME)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise OutputError(existing[0], f"already exists{more}; use --overwrite to replace")
    return planned


def write_manifest(dst: Path, manifest: dict[str, Any]) -> Path:
    """Write `dst/manifest.json` atomically; sorted keys and a fixed layout give the same run the same bytes."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    return atomic_write_text(dst / MANIFEST_NAME, text)


def read_manifest(dst: Path) -> dict[str, Any]:
    """The manifest a run left in `dst`; `InputError` naming the file if it is missing or not a manifest."""
    path = dst / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such file (is this a crappify output folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the manifest: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), dict):
        raise InputError(path, "not a crappify manifest (no 'images' table)")
    return manifest


def _check_numbers(seed: int, workers: int, size: int | None, max_pixels: int | None) -> None:
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, not {seed}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, not {workers}")
    if size is not None and size < 1:
        raise ConfigError(f"--size must be >= 1, not {size}")
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"--max-pixels must be >= 1, not {max_pixels}")


def _record_path(records: Path, key: str) -> Path:
    """One record file per image, named by a hash of its key (a relative path may hold folders or odd names)."""
    return records / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def _collect_records(
    items: list[BatchItem], failed: list[tuple[Path, str]], records: Path
) -> dict[str, dict[str, Any]]:
    """Manifest entries of the images that were written, keyed by their path relative to DST."""
    failed_sources = {source for source, _ in failed}
    images = {}
    for item in items:
        record = _record_path(records, item.relative.as_posix())
        if item.source in failed_sources or not record.exists():
            continue
        images[item.relative.with_suffix(".png").as_posix()] = json.loads(record.read_text(encoding="utf-8"))
    return images
