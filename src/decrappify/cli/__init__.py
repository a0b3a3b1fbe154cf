"""The `decrappify` command line: a thin layer over the library.

Each subcommand lives in its own module of this package and exposes two functions:

    add_parser(subparsers) -> argparse.ArgumentParser   # declares the options, sets `handler=run`
    run(args: argparse.Namespace) -> int                # parses nothing more; one library call; exit status

Exit status: 0 success, 1 some inputs failed (the rest were still done) or an expected error, 2 usage error.
A `DecrappifyError` becomes one line on stderr (no traceback unless `--debug`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from decrappify import __version__
from decrappify.errors import ConfigError, DecrappifyError

# Subcommand modules, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "crappify",
    "demo",
    "evaluate",
    "serve",
    "train",
    "restore",
    "export",
    "benchmark",
    "models",
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("decrappify")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with one sub-parser per module in `COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="decrappify",
        description="Train and run image-restoration models: upscaling, JPEG and watermark removal, colourisation.",
    )
    parser.add_argument("--version", action="version", version=f"decrappify {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"decrappify.cli.{name}")
        module.add_parser(subparsers)
    return parser


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (the console script passes it to `sys.exit`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on usage errors and 0 on --help/--version
        return int(exit_.code or 0)
    _configure_logging(args.debug, args.quiet)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        if args.debug:
            raise
        print(f"decrappify {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DecrappifyError as error:
        if args.debug:
            raise
        print(f"decrappify {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"decrappify {args.command}: interrupted", file=sys.stderr)
        return 130
