"""`decrappify restore INPUT... -o OUT_DIR`: restore pictures with one model, loaded once for the whole batch."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from decrappify.cli.options import (
    add_existing_outputs,
    add_max_pixels,
    add_outscale,
    add_precision,
    add_strength,
    add_threads,
    apply_threads,
)
from decrappify.cli.restore_masked import add_mask_options, masked_step
from decrappify.cli.restore_video import add_video_options, restore_video_item, video_result_exists, video_target
from decrappify.errors import ConfigError, InputError
from decrappify.inference.colour_check import COLOUR_PHOTO_SPREAD, has_real_colour
from decrappify.inference.ensemble import ENSEMBLES
from decrappify.inference.memory import DEFAULT_MAX_OUTPUT_PIXELS
from decrappify.inference.outscale import check_output, restore_picture_at
from decrappify.inference.restorer import DEFAULT_TILE, Restorer
from decrappify.inference.runners import BACKENDS, DEVICES
from decrappify.inference.strength import restorer_with_strength
from decrappify.inference.zoo import DEFAULT_MODEL, FIDELITY_MODEL
from decrappify.io.images import WRITE_FORMATS, Picture, read_image, read_image_size, write_image
from decrappify.io.jobs import BatchItem, collect_inputs, mark_shared_outputs, output_path, run_batch
from decrappify.io.video import is_video_path
from decrappify.tasks import is_colour_task

log = logging.getLogger("decrappify")

FORMATS = {"keep": None, "png": ".png", "jpg": ".jpg", "webp": ".webp"}
#: What `--suffix` is without `-o`: results go next to their inputs and must not take their names.
DEFAULT_SUFFIX = "_restored"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "restore",
        help="restore pictures (upscale, remove JPEG artefacts and watermarks, colourise) with a model",
        description=(
            "Restore every input with one model, loaded once. Inputs are files, folders (searched recursively; "
            "the tree is mirrored under OUT_DIR, or results go next to their inputs without -o) and glob "
            "patterns. An existing result fails its input before any work (--overwrite replaces it, "
            "--skip-existing leaves it). Alpha, 16-bit depth, ICC profiles and EXIF "
            "are kept; inputs are never modified or overwritten. Large pictures are processed in tiles, each "
            "with --tile-overlap pixels of context: the result is close to the untiled one, not identical (a "
            "few levels in 255 near tile edges; a larger --tile or --tile-overlap, or --tile 0, closes the "
            "gap); when a tile does not fit in memory it is halved and retried. "
            "Before a picture is decoded, its output size and the memory it needs are checked. Two inputs "
            "whose results would have the same name are not both written: the later one fails. "
            "Exit status 1 if any input failed (all the others are still written). Videos (named explicitly "
            "or by a pattern ending in their suffix) are restored frame by frame: see the video options below."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT_DIR",
        help="folder for the results (default: next to each input, named with --suffix)",
    )
    parser.add_argument(
        "--suffix",
        default=None,
        metavar="TEXT",
        help=f"added to each result's name, photo.jpg -> photo{DEFAULT_SUFFIX}.jpg (default: none with -o, "
        f"'{DEFAULT_SUFFIX}' without)",
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help=f"shipped model name, model file, or realesrgan-x4plus (the peer; decrappify[bench]) (default "
        f"{DEFAULT_MODEL}; with --strength, {FIDELITY_MODEL}, whose pair it is; {FIDELITY_MODEL} is its L1 twin: "
        "more faithful, less texture)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=DEFAULT_TILE,
        metavar="N",
        help=f"tile size in input pixels, 0 for none (default {DEFAULT_TILE}); memory grows with it; smaller "
        "tiles differ more from the untiled result near their edges",
    )
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        metavar="N",
        help="context around each tile in input pixels (default: from the model, at least 32)",
    )
    parser.add_argument(
        "--ensemble",
        choices=tuple(ENSEMBLES),
        default=None,
        help="average the model over mirrored views ('flip', 2x the time) or all 8 turns and mirrors "
        "('dihedral', 8x; for models trained with turns, like sr-x4), or 'none': the plain model, fastest "
        "(default: the model's own, see `decrappify models`)",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="where the model runs (default auto)"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="torch", help="PyTorch or ONNX Runtime (torch)"
    )
    parser.add_argument(
        "--format", choices=tuple(FORMATS), default="keep", help="output format; keep = the input's (default)"
    )
    parser.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality (default 95)")
    add_existing_outputs(
        parser,
        overwrite_help="replace existing outputs (never an input)",
        skip_help="leave inputs whose result already exists alone (checked before any work), e.g. to finish a "
        "batch that was stopped",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="colourise pictures that already have colour (a colourisation model refuses them without it: it "
        "keeps only their luminance, so their own colour would be lost)",
    )
    add_max_pixels(parser)
    parser.add_argument(
        "--max-output-pixels",
        type=int,
        default=DEFAULT_MAX_OUTPUT_PIXELS,
        metavar="N",
        help=f"refuse pictures whose result would be larger than N pixels (an x4 model makes 16 of each input "
        f"pixel), checked before decoding (default {DEFAULT_MAX_OUTPUT_PIXELS:,})",
    )
    parser.add_argument(
        "--max-memory",
        type=_gigabytes,
        default=None,
        metavar="GB",
        help="refuse pictures whose restoration is estimated to need more memory than this, checked before "
        "decoding (default: the memory available when each picture starts)",
    )
    add_threads(parser)
    add_precision(parser)
    add_outscale(parser)
    add_strength(parser)
    add_video_options(parser)
    add_mask_options(parser)
    parser.set_defaults(handler=run)
    return parser


def _gigabytes(text: str) -> int:
    """`--max-memory 2.5` -> bytes."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of gigabytes, got {text!r}")
    return round(value * 1024**3)


def _suffix_for(item: BatchItem, fmt: str) -> str | None:
    """The output suffix: the chosen format's, else the input's own when it can be written, else PNG."""
    if FORMATS[fmt] is not None:
        return FORMATS[fmt]
    return None if item.source.suffix.lower() in WRITE_FORMATS else ".png"


def _target_for(item: BatchItem, args: argparse.Namespace) -> Path:
    """Where an input's result goes: under `-o` (input tree mirrored) or beside the input, with `--suffix`."""
    if is_video_path(item.source):
        return video_target(item, args, DEFAULT_SUFFIX)
    suffix = args.suffix if args.suffix is not None else ("" if args.output else DEFAULT_SUFFIX)
    if args.output:
        target = output_path(item, Path(args.output), _suffix_for(item, args.format))
    else:
        target = item.source.with_suffix(_suffix_for(item, args.format) or item.source.suffix)
    return target.with_name(f"{target.stem}{suffix}{target.suffix}") if suffix else target


def _split_existing(
    items: list[BatchItem], args: argparse.Namespace
) -> tuple[list[BatchItem], list[Path]]:
    """Items to run, and the inputs skipped because their result exists (`--skip-existing`). Without
    `--overwrite` an existing result fails its item here, before the model is even loaded."""
    to_run, skipped = [], []
    for item in items:
        if item.problem is None and not args.overwrite and _result_exists(item, args):
            if args.skip_existing:
                skipped.append(item.source)
                continue
            reason = f"result {_target_for(item, args)} already exists (--overwrite replaces, --skip-existing skips)"
            item = BatchItem(item.source, item.relative, reason)
        to_run.append(item)
    return to_run, skipped


def _result_exists(item: BatchItem, args: argparse.Namespace) -> bool:
    target = _target_for(item, args)
    return video_result_exists(target, args) if is_video_path(item.source) else target.exists()


def run(args: argparse.Namespace) -> int:
    if args.max_output_pixels < 1:
        raise ConfigError(f"--max-output-pixels: must be at least 1, got {args.max_output_pixels}")
    items = collect_inputs(args.inputs, videos=True)
    items = mark_shared_outputs(items, lambda item: _target_for(item, args))
    items, skipped = _split_existing(items, args)
    if skipped:
        log.info("skipping %d input(s) whose result already exists", len(skipped))
    if not any(item.problem is None for item in items):
        report = run_batch(items, _never_called, desc="restore", quiet=args.quiet)
        report.skipped = skipped
        log.info("%s", report.summary())
        return report.exit_code
    apply_threads(args.threads)
    restorer: Restorer = restorer_with_strength(
        args.model or (FIDELITY_MODEL if args.strength is not None else DEFAULT_MODEL),
        args.strength,
        blend_with=args.blend_with,
        device=args.device,
        backend=args.backend,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        threads=args.threads,
        ensemble=args.ensemble,
        precision=args.precision,
    )
    log.info(
        "model %s: x%d %s, on %s, precision %s",
        restorer.name,
        restorer.scale,
        restorer.task,
        restorer.device,
        restorer.precision_note,
    )
    inputs = {item.source.resolve(): item.source for item in items if item.problem is None}
    colourise = is_colour_task(restorer.task)
    masked = masked_step(args, restorer, len(inputs))  # --only-masked: None without it

    def job(item: BatchItem) -> Path:
        target = _target_for(item, args)
        protect = [item.source]
        other = inputs.get(target.resolve())
        if other is not None:
            protect.append(other)
        if is_video_path(item.source):
            if masked is not None:
                raise InputError(item.source, "--only-masked restores pictures, not videos")
            return restore_video_item(restorer, item, target, args)
        width, height = read_image_size(item.source, max_pixels=args.max_pixels)
        check_output(
            restorer,
            width,
            height,
            outscale=args.outscale,
            shrink_first=args.shrink_first,
            path=item.source,
            max_output_pixels=args.max_output_pixels,
            max_memory_bytes=args.max_memory,
        )
        picture = read_image(item.source, max_pixels=args.max_pixels)
        if colourise:
            _check_not_in_colour(picture, item.source, force=args.force)
        on_tile = None if args.quiet else _TileProgress(item.source.name)
        if masked is not None:
            restored = masked(item, picture, on_tile)
        else:
            restored = restore_picture_at(restorer, picture, args.outscale, shrink_first=args.shrink_first,
                                          on_tile=on_tile)  # fmt: skip
        return write_image(restored, target, overwrite=args.overwrite, quality=args.quality, protect=protect)

    report = run_batch(items, job, desc="restore", quiet=args.quiet)
    report.skipped = skipped
    where = f"; results in {args.output}" if report.done and args.output else ""
    log.info("%s%s", report.summary(), where)
    return report.exit_code


class _TileProgress:
    """`on_tile` for one picture: a progress bar of its tiles (on a terminal), under the batch's bar of
    pictures, so that one large picture does not sit at "0/1" with no sign of life."""

    def __init__(self, name: str):
        self.name = name
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if total <= 1:
            return
        if self.bar is None or self.bar.total != total:  # the first tile, or a retry with smaller tiles
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc=f"{self.name}: tiles", unit="tile", leave=False, position=1,
                            file=sys.stderr, disable=None)  # fmt: skip
        self.bar.update(done - self.bar.n)
        if done == total:
            self.bar.close()


def _check_not_in_colour(picture: Picture, source: Path, *, force: bool) -> None:
    """A colour photo given to a colourisation model: refused (`InputError`), or with `force` a warning."""
    if picture.grayscale:
        return
    in_colour, spread = has_real_colour(picture.rgb)
    if not in_colour:
        return
    reason = (
        f"already in colour (colour spread {spread:.1f} > {COLOUR_PHOTO_SPREAD:g}): colourising keeps only its "
        "luminance and would replace its colour with the model's guess"
    )
    if not force:
        raise InputError(source, f"{reason}; --force colourises it anyway")
    log.warning("%s: %s (--force: colourised anyway)", source, reason)


def _never_called(item: BatchItem) -> Path:
    raise AssertionError(f"{item.source}: every item has a problem, so no job runs")
