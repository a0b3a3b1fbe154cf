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


def add_outscale(parser: argparse.ArgumentParser) -> None:
    """`--outscale S` and `--shrink-first`: any output scale from 1 to 8, whatever the model's own."""
    parser.add_argument(
        "--outscale",
        type=_float_in(1.0, 8.0),
        default=None,
        metavar="S",
        help="output size as a multiple of the input's, any number from 1 to 8 (default: the model's scale); "
        "the model runs at its own scale and its output is resized (Lanczos up, area averaging down)",
    )
    parser.add_argument(
        "--shrink-first",
        action="store_true",
        help="for an --outscale below the model's scale, shrink the input instead of the output: (scale/S)^2 "
        "times faster but blurrier (docs/benchmarks/outscale.md)",
    )


def add_strength(parser: argparse.ArgumentParser) -> None:
    """`--strength S` and `--blend-with MODEL`: a model part way to its pair (network interpolation)."""
    parser.add_argument(
        "--strength",
        type=_float_in(0.0, 1.0),
        default=None,
        metavar="S",
        help="mix the model with its pair: 0 is the model, 1 the pair (such as its GAN fine-tune: more texture, "
        "less fidelity); weights are interpolated when both share an architecture, else outputs are blended "
        "(default: the model alone)",
    )
    parser.add_argument(
        "--blend-with",
        default=None,
        metavar="NAME|PATH",
        help="the model --strength mixes toward (default: the pair the model file names)",
    )


def _float_in(low: float, high: float):
    """An argparse type: a float in [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a number from {low:g} to {high:g}, got {text!r}")
        return value

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value
