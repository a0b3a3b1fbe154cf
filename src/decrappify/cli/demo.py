"""`decrappify demo`: the quickest way to see what decrappify does, offline."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from decrappify.demo import SAMPLE_PHOTOS, run_demo


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="restore bundled sample photos and write an HTML before/after page",
        description=(
            f"Degrade scikit-image's bundled sample photos ({', '.join(SAMPLE_PHOTOS)}) the way the task's preset "
            "does, restore them, and write OUT/index.html with the input, the bicubic baseline, our result and the "
            "truth side by side, plus PSNR/SSIM. Prints the table. Works offline."
        ),
    )
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("demo"), help="output folder (default: ./demo)"
    )
    parser.add_argument(
        "--task", default="restore-x4", help="degradation preset / task (default: restore-x4)"
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    demo = run_demo(args.out, task=args.task)
    print(demo.result.to_markdown())
    print(f"\nPage: {demo.page}  ({time.perf_counter() - started:.1f} s)")
    return 0
