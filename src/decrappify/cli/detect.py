"""`decrappify detect PHOTO... -o OUT_DIR`: find the watermark's text, write its mask and a preview per photo."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from decrappify.cli.options import add_existing_outputs, add_max_pixels, add_precision, add_threads, apply_threads
from decrappify.cli.restore_masked import add_mask_side
from decrappify.errors import OutputError
from decrappify.inference.restorer import DEFAULT_TILE
from decrappify.inference.runners import DEVICES
from decrappify.inference.text_mask import (
    DEFAULT_MASK_MODEL,
    DEFAULT_THRESHOLD,
    MASK_SUFFIX,
    OVERLAY_SUFFIX,
    TextMasker,
    detect_outputs,
    detect_picture,
)
from decrappify.io.images import read_image, write_image
from decrappify.io.jobs import BatchItem, collect_inputs, mark_shared_outputs, run_batch

log = logging.getLogger("decrappify")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "detect",
        help="find watermark text in photos: write its mask (PNG) and a preview with the mask over the photo",
        description=(
            "Run a text-mask model on every input (files, folders searched recursively, glob patterns) and write, "
            f"under OUT_DIR with the input tree mirrored, NAME{MASK_SUFFIX} (white where the model found text, "
            f"at the photo's size) and NAME{OVERLAY_SUFFIX} (the photo with the mask tinted red, for the eye). "
            "A mask can be edited by hand and given back to `decrappify restore --only-masked --mask`. "
            "Exit status 1 if any input failed (all the others are still written)."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="PHOTO", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the masks and previews")
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help=f"text-mask model: a shipped name or a model file trained with configs/text-mask.toml (default: the "
        f"shipped '{DEFAULT_MASK_MODEL}')",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="P",
        help=f"a pixel is text when the model's probability is at least P (default {DEFAULT_THRESHOLD})",
    )
    add_mask_side(parser)
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="N",
                        help=f"tile size in input pixels, 0 for none (default {DEFAULT_TILE})")  # fmt: skip
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs (default auto)")
    add_existing_outputs(
        parser,
        overwrite_help="replace existing masks and previews (never an input)",
        skip_help="leave inputs whose mask and preview already exist alone",
    )
    add_max_pixels(parser)
    add_threads(parser)
    add_precision(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    out_dir = Path(args.output)
    items = mark_shared_outputs(collect_inputs(args.inputs), lambda item: detect_outputs(item.relative, out_dir)[0])
    skipped = [item.source for item in items if item.problem is None and args.skip_existing
               and all(path.exists() for path in detect_outputs(item.relative, out_dir))]  # fmt: skip
    items = [item for item in items if item.source not in skipped]
    apply_threads(args.threads)
    masker = None
    if any(item.problem is None for item in items):
        masker = TextMasker.from_pretrained(args.model, device=args.device, tile=args.tile, threads=args.threads,
                                            precision=args.precision, threshold=args.threshold,
                                            working_side=args.mask_side)  # fmt: skip
        log.info("model %s on %s, precision %s, threshold %g, %s", masker.name, masker.device, masker.precision_note,
                 masker.threshold, f"photos over {masker.working_side} px scaled down to it" if masker.working_side
                 else "at each photo's own size")  # fmt: skip

    def job(item: BatchItem) -> Path:
        mask_path, overlay_path = detect_outputs(item.relative, out_dir)
        for path in (mask_path, overlay_path):  # both checked before either is written: nothing half-done
            if path.exists() and not args.overwrite:
                raise OutputError(path, "already exists (--overwrite replaces, --skip-existing skips)")
        picture = read_image(item.source, max_pixels=args.max_pixels)
        mask, preview = detect_picture(masker, picture)
        write_image(preview, overlay_path, overwrite=args.overwrite, quality=90, protect=[item.source])
        return write_image(mask, mask_path, overwrite=args.overwrite, protect=[item.source])

    report = run_batch(items, job, desc="detect", quiet=args.quiet)
    report.skipped = skipped
    log.info("%s%s", report.summary(), f"; masks in {out_dir}" if report.done else "")
    return report.exit_code
