"""`decrappify demo`: the quickest way to see what decrappify does, offline."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from decrappify.cli.options import add_precision
from decrappify.evaluation.demo import SAMPLE_PHOTOS, TASK_ORDER, run_demo


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="restore bundled sample photos with the shipped models and write an HTML before/after page",
        description=(
            f"Degrade scikit-image's bundled sample photos ({', '.join(SAMPLE_PHOTOS)}) with each shipped "
            "model's task preset, restore them with the baseline (bicubic, or the input as is for x1 tasks) and "
            "the model, and write OUT/index.html with the input, the baseline, our result and the truth side by "
            "side, plus PSNR/SSIM (restore-x4 first; each task also gets OUT/TASK/index.html). Prints one table "
            "per task. Works offline."
        ),
    )
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("demo"), help="output folder (default: ./demo)"
    )
    parser.add_argument(
        "--task",
        dest="tasks",
        action="append",
        choices=TASK_ORDER,
        metavar="TASK",
        help=f"show only this task ({', '.join(TASK_ORDER)}); repeatable (default: every shipped model's task)",
    )
    parser.add_argument(
        "--perceptual",
        dest="perceptual",
        action="store_true",
        default=None,
        help="score the VGG perceptual distance on every task (default: on the first task only; it is the slow part)",
    )
    parser.add_argument(
        "--no-perceptual",
        dest="perceptual",
        action="store_false",
        help="never score the VGG perceptual distance",
    )
    parser.add_argument(
        "--no-peer",
        dest="peer",
        action="store_false",
        help="leave out Real-ESRGAN x4plus's column on restore-x4 (shown when decrappify[bench] is installed)",
    )
    add_precision(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    demo = run_demo(
        args.out, tasks=args.tasks, perceptual=args.perceptual, precision=args.precision, peer=args.peer
    )
    for item in demo.tasks:
        print(f"## {item.heading}\n\n{item.result.to_markdown()}")
    print(f"Page: {demo.page}  ({time.perf_counter() - started:.1f} s)")
    return 0
