"""`decrappify export MODEL --onnx OUT.onnx`: an ONNX file for any height and width, checked against PyTorch."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from decrappify.errors import OutputError, WeightsError
from decrappify.inference.export import (
    DEFAULT_OPSET,
    PARITY_TOLERANCE,
    create_session,
    export_onnx,
    parity,
    save_onnx,
)
from decrappify.inference.zoo import resolve_model
from decrappify.weights import load_model

log = logging.getLogger("decrappify")

PARITY_SIZES = ((37, 53), (64, 48))


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX (dynamic height and width) for ONNX Runtime and other runtimes",
        description=(
            "Write MODEL as an ONNX file whose input is any N x 3 x H x W; the model's config, name, task, "
            "scale and stride go into the file's metadata, so `restore --backend onnx --model OUT.onnx` needs "
            f"nothing else. The export is checked: ONNX Runtime must match PyTorch within {PARITY_TOLERANCE:g} "
            "(largest absolute difference) on random pictures of odd sizes, or the command fails."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="shipped model name or .safetensors model file")
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the ONNX file")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.onnx if it exists")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    target = Path(args.onnx)
    if target.exists() and not args.overwrite:
        raise OutputError(target, "already exists (use --overwrite to replace it)")
    source = resolve_model(args.model)
    if target.exists() and target.resolve() == source.resolve():
        raise OutputError(target, "is the input model; refusing to overwrite it")
    model, config, info = load_model(source)
    data = export_onnx(model, None, config=config, info=info, opset=args.opset)
    worst = parity(model, create_session(data), PARITY_SIZES)
    if worst > PARITY_TOLERANCE:
        raise WeightsError(
            f"{source}: ONNX output differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE:g}); not written"
        )
    save_onnx(data, target)
    log.info("wrote %s (%.1f MB); largest difference from PyTorch: %.1e", target, len(data) / 1e6, worst)
    return 0
