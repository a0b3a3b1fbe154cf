"""`decrappify restore INPUT... -o OUT_DIR`: restore pictures with one model, loaded once for the whole batch."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from decrappify.cli.options import add_max_pixels, add_precision, add_threads, apply_threads
from decrappify.errors import ConfigError
from decrappify.inference.ensemble import ENSEMBLES
from decrappify.inference.memory import DEFAULT_MAX_OUTPUT_PIXELS
from decrappify.inference.restorer import DEFAULT_TILE, Restorer
from decrappify.inference.runners import BACKENDS, DEVICES
from decrappify.inference.zoo import DEFAULT_MODEL
from decrappify.io.images import WRITE_FORMATS, read_image, read_image_size, write_image
from decrappify.io.jobs import BatchItem, collect_inputs, mark_shared_outputs, output_path, run_batch

log = logging.getLogger("decrappify")

FORMATS = {"keep": None, "png": ".png", "jpg": ".jpg", "webp": ".webp"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "restore",
        help="restore pictures (upscale, remove JPEG artefacts and watermarks, colourise) with a model",
        description=(
            "Restore every input with one model, loaded once. Inputs are files, folders (searched recursively; "
            "the tree is mirrored under OUT_DIR) and glob patterns. Alpha, 16-bit depth, ICC profiles and EXIF "
            "are kept; inputs are never modified or overwritten. Large pictures are processed in tiles (the "
            "result matches the untiled one); when a tile does not fit in memory it is halved and retried. "
            "Before a picture is decoded, its output size and the memory it needs are checked. Two inputs "
            "whose results would have the same name are not both written: the later one fails. "
            "Exit status 1 if any input failed (all the others are still written)."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the results")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|PATH",
        help=f"shipped model name or model file ({DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=DEFAULT_TILE,
        metavar="N",
        help=f"tile size in input pixels, 0 for none (default {DEFAULT_TILE}); memory grows with it",
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
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
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


def run(args: argparse.Namespace) -> int:
    if args.max_output_pixels < 1:
        raise ConfigError(f"--max-output-pixels: must be at least 1, got {args.max_output_pixels}")
    out_dir = Path(args.output)
    items = collect_inputs(args.inputs)
    items = mark_shared_outputs(items, lambda item: output_path(item, out_dir, _suffix_for(item, args.format)))
    apply_threads(args.threads)
    restorer = Restorer.from_pretrained(
        args.model,
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

    def job(item: BatchItem) -> Path:
        target = output_path(item, out_dir, _suffix_for(item, args.format))
        protect = [item.source]
        other = inputs.get(target.resolve())
        if other is not None:
            protect.append(other)
        width, height = read_image_size(item.source, max_pixels=args.max_pixels)
        restorer.check_fits(
            width,
            height,
            path=item.source,
            max_output_pixels=args.max_output_pixels,
            max_memory_bytes=args.max_memory,
        )
        picture = read_image(item.source, max_pixels=args.max_pixels)
        restored = restorer.restore(picture)
        return write_image(restored, target, overwrite=args.overwrite, quality=args.quality, protect=protect)

    report = run_batch(items, job, desc="restore", quiet=args.quiet)
    log.info("%s; results in %s", report.summary(), out_dir)
    return report.exit_code
