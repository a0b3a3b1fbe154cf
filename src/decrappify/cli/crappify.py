"""`decrappify crappify SRC DST --preset P --seed S`: degraded training inputs from a folder of clean images.

Argument parsing and output only; the run itself (the per-image job, the folder checks, the manifest) is
`decrappify.data.crappify.crappify_folder`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from decrappify.cli.options import add_existing_outputs, add_max_pixels
from decrappify.data.crappify import MANIFEST_NAME, crappify_folder
from decrappify.data.degrade import DEFAULT_PRESET, PRESETS
from decrappify.errors import ConfigError

log = logging.getLogger("decrappify")


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
            "of the scale. Presets that draw a watermark also write NAME_mask.png beside each output: white on the\n"
            "pixels the text changed, as drawn before JPEG, at the output's size (the manifest names it).\n"
            "An input that cannot be read is reported by name; the others are still written (exit 1)."
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
    add_existing_outputs(
        parser,
        overwrite_help="replace existing outputs",
        skip_help="leave images an earlier run with the same preset, seed and size finished (checked before any "
        "work) and make the rest, e.g. after adding photos or stopping a run",
    )
    add_max_pixels(parser)
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        print(_presets_text())
        return 0
    if args.src is None or args.dst is None:
        raise ConfigError("SRC and DST are both needed (or --list-presets)")
    dst = Path(args.dst)
    report = crappify_folder(
        Path(args.src),
        dst,
        preset=args.preset,
        seed=args.seed,
        workers=args.workers,
        size=args.size,
        hq_dir=Path(args.hq_dir) if args.hq_dir else None,
        max_pixels=args.max_pixels,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        quiet=args.quiet,
    )
    log.info("crappify: %s; wrote %s", report.summary(), dst / MANIFEST_NAME)
    return report.exit_code
