"""Options shared by several subcommands, declared once so they read and behave the same everywhere."""

from __future__ import annotations

import argparse

from decrappify.imageio import DEFAULT_MAX_PIXELS


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    """`--max-pixels N`: the decompression-bomb limit passed to `read_image`."""
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images larger than N pixels, checked before decoding (default {DEFAULT_MAX_PIXELS:,})",
    )
