"""Options shared by several subcommands, declared once so they read and behave the same everywhere."""

from __future__ import annotations

import argparse

from decrappify.inference.precision import PRECISIONS
from decrappify.io.images import DEFAULT_MAX_PIXELS


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    """`--max-pixels N`: the decompression-bomb limit passed to `read_image`."""
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images larger than N pixels, checked before decoding (default {DEFAULT_MAX_PIXELS:,})",
    )


def add_threads(parser: argparse.ArgumentParser) -> None:
    """`--threads N`: CPU threads for the model (torch's intra-op pool or ONNX Runtime's session)."""
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="CPU threads for the model (default: torch's choice, one per core); 1 is faster while another "
        "program keeps a core busy",
    )


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count for this process when `--threads` was given."""
    if threads:
        import torch  # local: `decrappify --help` does not need torch loaded

        torch.set_num_threads(threads)


def add_existing_outputs(parser: argparse.ArgumentParser, *, overwrite_help: str, skip_help: str) -> None:
    """`--overwrite` or `--skip-existing` (never both): what a command does with outputs that already exist.

    Without either, an existing output is an error, found before any work is done."""
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help=overwrite_help)
    existing.add_argument("--skip-existing", action="store_true", help=skip_help)


def add_precision(parser: argparse.ArgumentParser) -> None:
    """`--precision auto|fp32|bf16`: the number format the network runs in."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="number format of the network: bf16 is 2-3x faster on CPUs that run it natively (AVX512-BF16, "
        "AMX); auto (default) uses it there unless the model file asks for fp32, and fp32 elsewhere",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value
