"""`decrappify benchmark`: output megapixels per second per backend and variant, against this machine's peak."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from decrappify.errors import ConfigError
from decrappify.inference.benchmark import (
    DEFAULT_VARIANTS,
    ONNX_VARIANTS,
    TORCH_VARIANTS,
    benchmark,
    parse_size,
)
from decrappify.inference.ensemble import ENSEMBLES
from decrappify.inference.realesrgan import LABEL as REALESRGAN_LABEL
from decrappify.inference.realesrgan import is_realesrgan, load_realesrgan
from decrappify.inference.runners import load_runner
from decrappify.inference.zoo import DEFAULT_MODEL, resolve_model
from decrappify.io.atomic import atomic_write_text
from decrappify.io.model_metadata import is_onnx_file
from decrappify.nn.models import ARCHS, create_model
from decrappify.weights import load_model

log = logging.getLogger("decrappify")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "benchmark",
        help="measure restoration speed per backend (PyTorch, ONNX Runtime) against this machine's peak",
        description=(
            "Time the model on random pictures (median of --repeats calls after --warmup) on the CPU for each "
            "backend, variant and thread count, and print a markdown table: output megapixels per second, the "
            "model's GFLOPs per output megapixel, the GFLOP/s achieved, this machine's peak (an fp32 2048x2048 "
            "matrix product, and a bf16 one for the bf16 variant) and the fraction of it. Variants: "
            f"{', '.join(TORCH_VARIANTS)} (PyTorch; bf16 is autocast on channels-last); {', '.join(ONNX_VARIANTS)} "
            "(ONNX Runtime graph optimisation levels). 'compile' spends tens of seconds compiling first."
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        metavar="NAME|PATH",
        help=f"shipped model name, model file, or realesrgan-x4plus (the peer; decrappify[bench]) ({DEFAULT_MODEL})",
    )
    which.add_argument(
        "--arch",
        choices=tuple(ARCHS),
        help="an untrained model of this architecture with its default settings",
    )
    parser.add_argument(
        "--size",
        dest="sizes",
        action="append",
        metavar="WxH",
        help="output size (the input is this divided by the scale); repeatable (default 512x512)",
    )
    parser.add_argument(
        "--backend",
        dest="backends",
        action="append",
        choices=("torch", "onnx"),
        help="repeatable (default both)",
    )
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        choices=(*TORCH_VARIANTS, *ONNX_VARIANTS, "all"),
        help=f"repeatable (default {', '.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--threads",
        dest="threads",
        action="append",
        type=int,
        metavar="N",
        help="intra-op threads; repeatable",
    )
    parser.add_argument(
        "--ensemble",
        choices=tuple(ENSEMBLES),
        default=None,
        help="time the model as this self-ensemble (default: the model's own, see `decrappify models`)",
    )
    parser.add_argument("--repeats", type=int, default=3, metavar="N", help="timed calls per row (default 3)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed calls first (default 1)")
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="also write the results as JSON ({'rows': [...], ...}) to FILE"
    )
    parser.set_defaults(handler=run)
    return parser


def _load(args: argparse.Namespace):
    """(model, config, info, name, ONNX graph or None) of what --arch or --model names."""
    if args.arch:
        config = {"arch": args.arch}
        return create_model(config), config, {}, f"{args.arch} (untrained, default settings)", None
    if args.model and is_realesrgan(args.model):  # the peer, converted in memory from its ncnn files
        model, config, info = load_realesrgan()
        return model, config, info, REALESRGAN_LABEL, None
    path = resolve_model(args.model or DEFAULT_MODEL)
    if is_onnx_file(path):  # known by its content, whatever its name; its metadata holds the architecture
        loaded = load_runner(path, backend="onnx", precision="fp32")
        model = create_model(loaded.config)  # the architecture only: FLOPs, and torch rows if asked for
        name = str(loaded.info.get("name") or path.stem)
        return model, loaded.config, loaded.info, f"{name} (ONNX file)", path.read_bytes()
    model, config, info = load_model(path)
    return model, config, info, str(info.get("name") or path.stem), None


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.warmup < 0 or any(t < 1 for t in args.threads or ()):
        raise ConfigError("--repeats and --threads must be at least 1, --warmup at least 0")
    variants = args.variants or list(DEFAULT_VARIANTS)
    if "all" in variants:
        variants = [*TORCH_VARIANTS, *ONNX_VARIANTS]
    model, config, info, name, graph = _load(args)
    backends = args.backends or (["onnx"] if graph is not None else ["torch", "onnx"])
    if graph is not None and "torch" in backends:
        log.warning("an ONNX file holds no PyTorch weights: the torch rows time its architecture, untrained")
    result = benchmark(
        model,
        name=name,
        config=config,
        info=info,
        sizes=[parse_size(text) for text in args.sizes or ["512x512"]],
        backends=backends,
        variants=variants,
        threads=args.threads or [None],
        repeats=args.repeats,
        warmup=args.warmup,
        ensemble=args.ensemble,
        onnx_graph=graph,
    )
    print(result.to_markdown(), end="")
    if args.json:
        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        log.info("wrote %s", args.json)
    return 0
