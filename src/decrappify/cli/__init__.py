"""The `decrappify` command line: a thin layer over the library.

Each subcommand lives in its own module of this package and exposes two functions:

    add_parser(subparsers) -> argparse.ArgumentParser   # declares the options, sets `handler=run`
    run(args: argparse.Namespace) -> int                # parses nothing more; one library call; exit status

Exit status: 0 success, 1 some inputs failed (the rest were still done) or an expected error, 2 usage error.
A `DecrappifyError` becomes one line on stderr (no traceback unless `--debug`). What other libraries log or warn
(tifffile's notes on odd tags, deprecation warnings) is shown with `--debug` only: the output is ours to keep
readable, and such lines say nothing the user can act on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from decrappify import __version__
from decrappify.cli.commands import COMMAND_HELP
from decrappify.errors import ConfigError, DecrappifyError
from decrappify.openmp_wait import choose_wait_policy

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("decrappify")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the options of `command` (None: every subcommand's) and a summary line for the others.

    Only the subcommand being run is imported: the others' modules may load torch, which `--help` and light
    commands do not need.
    """
    parser = argparse.ArgumentParser(
        prog="decrappify",
        description="Train and run image-restoration models: upscaling, JPEG and watermark removal, colourisation.",
    )
    _add_global_options(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, summary in COMMAND_HELP.items():
        if name == command:
            sub = importlib.import_module(f"decrappify.cli.{name}").add_parser(subparsers)
            # Also after the subcommand (`restore x.jpg -o out --debug`); SUPPRESS: absent there, the value
            # given before the subcommand (or False) stands.
            _add_global_options(sub, default=argparse.SUPPRESS)
        else:
            subparsers.add_parser(name, help=summary, description=summary)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    """`--version`, `--debug` and `-q`, accepted before the subcommand and anywhere after it."""
    parser.add_argument("--version", action="version", version=f"decrappify {__version__}")
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show full tracebacks and debug logging"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only warnings and errors; no progress bars"
    )


def requested_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line: the first word that is not an option (the top-level options
    take no values), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def _worker_rank() -> int:
    """This process's rank under torchrun (`RANK`), 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    if _worker_rank() > 0 and not debug:
        level = logging.WARNING  # under torchrun every rank runs this: rank 0 tells the story, once
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


@contextlib.contextmanager
def _third_party_output(debug: bool) -> Iterator[None]:
    """While a command runs, route other libraries' log records and Python warnings to stderr with `--debug`,
    and nowhere without it.

    Our own logger does not propagate, so the root logger sees only other libraries' records; without a handler
    there, Python's last-resort handler would print their warnings. Handlers already on the root logger (a
    test's capture, an embedding program's) are left alone, and everything is put back afterwards.
    """
    root = logging.getLogger()
    if debug:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (the console script passes it to `sys.exit`)."""
    # How torch's threads wait between operations: spinning briefly on an idle machine, sleeping when other
    # processes run (`decrappify.openmp_wait`). It must be set before torch loads its OpenMP runtime, which
    # happens below when the subcommand is imported; a value the user set wins.
    argv = sys.argv[1:] if argv is None else list(argv)
    wait_policy = choose_wait_policy(service=requested_command(argv) == "serve")
    parser = build_parser(requested_command(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on usage errors and 0 on --help/--version
        return int(exit_.code or 0)
    _configure_logging(args.debug, args.quiet)
    log.debug("OpenMP waiting: %s", wait_policy or "as set in the environment")
    try:
        with _third_party_output(args.debug):
            return int(args.handler(args))
    except ConfigError as error:
        if args.debug:
            raise
        if _worker_rank() == 0:  # a usage error is the same on every torchrun rank: said once
            print(f"decrappify {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DecrappifyError as error:
        if args.debug:
            raise
        if _worker_rank() == 0:  # every rank reads the same config and data, so rank 0 has the same error
            print(f"decrappify {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"decrappify {args.command}: interrupted", file=sys.stderr)
        return 130
