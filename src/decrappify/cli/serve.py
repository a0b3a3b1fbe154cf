"""`decrappify serve`: the HTTP API and web page on uvicorn (needs the `serve` extra).

Loopback only unless `--host` says otherwise; a server reachable from other machines should have a token.
The token can come from `$DECRAPPIFY_TOKEN` instead of `--token`, which other users of the machine can see in the
process list.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from decrappify.cli.options import add_precision
from decrappify.errors import ConfigError
from decrappify.serve.settings import (
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_VIDEO_BYTES,
    DEFAULT_MAX_VIDEO_FRAMES,
    DEFAULT_MAX_VIDEO_PIXELS,
    DEFAULT_MAX_VIDEO_SECONDS,
    DEFAULT_MIN_UPLOAD_BYTES_PER_S,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT_S,
    ServeSettings,
)

log = logging.getLogger("decrappify")

TOKEN_ENV = "DECRAPPIFY_TOKEN"
_MB = 1024 * 1024


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="serve the models over HTTP: a JSON/upload API and a web page (needs decrappify[serve])",
        description=(
            "Start the HTTP service: POST /v1/restore (multipart upload -> restored image), GET /v1/models, "
            "GET /healthz, the schema at /openapi.json, and a web page at /. Models are loaded once at start-up."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="NAME|PATH",
        help="shipped model names or model files to serve; the first is the default (default: every shipped model)",
    )
    parser.add_argument(
        "--mask-model",
        metavar="NAME|PATH",
        help="text-mask model for POST /v1/detect and the page's 'repair only the watermark' (default: the "
        "shipped text-mask, when there is one)",
    )
    parser.add_argument("--workers", type=int, default=1, help="restorations running at once (default 1)")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"require 'Authorization: Bearer TOKEN' on /v1/* (default: ${TOKEN_ENV}, else no token)",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE_SIZE,
        help=f"requests that may wait (default {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_BYTES / _MB,
        help=f"largest upload in MiB (default {DEFAULT_MAX_UPLOAD_BYTES // _MB})",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest input picture in pixels, read from its header (default {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--max-output-pixels",
        type=int,
        default=DEFAULT_MAX_OUTPUT_PIXELS,
        help="largest restored picture in pixels (input pixels x the model's scale squared), checked from the "
        f"upload's header (default {DEFAULT_MAX_OUTPUT_PIXELS})",
    )
    parser.add_argument(
        "--min-upload-rate",
        type=float,
        default=DEFAULT_MIN_UPLOAD_BYTES_PER_S / 1024,
        metavar="KB_PER_S",
        help="uploads slower than this on average are dropped with a 408, so slow clients cannot hold every "
        f"upload slot; 0: no minimum (default {DEFAULT_MIN_UPLOAD_BYTES_PER_S // 1024})",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        metavar="SECONDS",
        help="connections that take longer to send a request's headers are closed "
        f"(default {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help=f"seconds a request may wait plus run before a 503 (default {DEFAULT_REQUEST_TIMEOUT_S:g})",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--tile", type=int, default=512, help="tile size in input pixels; 0: whole picture (default 512)"
    )
    add_precision(parser)
    video = parser.add_argument_group("video jobs (POST /v1/jobs; needs decrappify[video])")
    video.add_argument(
        "--max-video-mb",
        type=float,
        default=DEFAULT_MAX_VIDEO_BYTES / _MB,
        help=f"largest video upload in MiB (default {DEFAULT_MAX_VIDEO_BYTES // _MB})",
    )
    video.add_argument(
        "--max-video-seconds",
        type=float,
        default=DEFAULT_MAX_VIDEO_SECONDS,
        help=f"longest clip (default {DEFAULT_MAX_VIDEO_SECONDS:g})",
    )
    video.add_argument(
        "--max-video-frames",
        type=int,
        default=DEFAULT_MAX_VIDEO_FRAMES,
        help=f"most frames in a clip; 0 turns video jobs off (default {DEFAULT_MAX_VIDEO_FRAMES})",
    )
    video.add_argument(
        "--max-video-pixels",
        type=int,
        default=DEFAULT_MAX_VIDEO_PIXELS,
        help=f"largest frame in pixels, width x height (default {DEFAULT_MAX_VIDEO_PIXELS}: 1280 x 720)",
    )
    parser.set_defaults(handler=run)
    return parser


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The service settings the options describe (`ConfigError` for a bad value)."""
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: must be 0..65535, got {args.port}")
    if not 0 <= args.min_upload_rate < float("inf"):
        raise ConfigError(f"--min-upload-rate: must be a number of KB/s >= 0, got {args.min_upload_rate}")
    return ServeSettings(
        models=tuple(args.models),
        mask_model=args.mask_model,
        token=args.token,
        max_upload_bytes=max(1, round(args.max_upload_mb * _MB)),
        max_pixels=args.max_pixels,
        max_output_pixels=args.max_output_pixels,
        min_upload_bytes_per_s=round(args.min_upload_rate * 1024),
        header_timeout_s=args.header_timeout,
        max_concurrency=args.workers,
        queue_size=args.queue,
        request_timeout_s=args.timeout,
        device=args.device,
        tile=args.tile,
        precision=args.precision,
        max_video_bytes=max(1, round(args.max_video_mb * _MB)),
        max_video_seconds=args.max_video_seconds,
        max_video_frames=args.max_video_frames,
        max_video_pixels=args.max_video_pixels,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _share_cpu_threads(workers: int) -> None:
    """Give each concurrent restoration its share of the cores: N workers each using every core only thrash."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    log.debug("%d workers: %d CPU threads each", workers, threads)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        import uvicorn

        from decrappify.serve.app import create_app
        from decrappify.serve.server import uvicorn_options
    except ImportError as error:
        raise ConfigError(
            f"serve needs the serve extra ({error.name} is missing): pip install 'decrappify[serve]'"
        ) from None
    if not _is_loopback(args.host) and settings.token is None:
        log.warning("listening on %s without a token: anyone who can reach this port can use it", args.host)
    if settings.max_concurrency > 1:
        _share_cpu_threads(settings.max_concurrency)
    app = create_app(settings)
    level = "debug" if args.debug else "warning" if args.quiet else "info"
    log.info("serving %s on http://%s:%d/", ", ".join(app.state.restorers), args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=level, **uvicorn_options(settings))
    return 0
