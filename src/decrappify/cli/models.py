"""`decrappify models`: the shipped models, with what each does and how well."""

from __future__ import annotations

import argparse

from decrappify.inference.zoo import MODELS_DIR, list_models


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list the shipped models (name, what it does, task, scale, size, default self-ensemble, metrics)",
        description="List the models installed with decrappify, usable by name with --model.",
    )
    parser.set_defaults(handler=run)
    return parser


def _metrics(metrics: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(metrics.items())) or "-"


def _what_it_does(description: str) -> str:
    """The description's first clause (the rest says how it was built): "clean x4 super-resolution (...)"."""
    return description.split(";")[0].strip() or "-"


def run(args: argparse.Namespace) -> int:
    entries = list_models()
    lines = [
        "| name | what it does | task | scale | size | runs as | precision (auto) | metrics |",
        "| --- | --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for entry in entries:
        runs_as = "plain model" if entry.ensemble == "none" else f"{entry.ensemble} self-ensemble"
        # What `--precision auto` does with it; without loading torch, so "where native" rather than a verdict.
        precision = f"{entry.precision} (its file asks)" if entry.precision else "bf16 where the CPU runs it, else fp32"
        lines.append(
            f"| {entry.name} | {_what_it_does(entry.description)} | {entry.task} | x{entry.scale} "
            f"| {entry.size_bytes / 1e6:.1f} MB | {runs_as} | {precision} "
            f"| {_metrics(entry.metrics)} |"
        )
    print("\n".join(lines))
    if not entries:
        print(
            f"\nNo shipped model is installed yet (looked in {MODELS_DIR}); pass --model PATH to a model file."
        )
    return 0
