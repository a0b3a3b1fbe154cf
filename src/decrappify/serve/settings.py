"""What the HTTP service may accept and how much work it takes on: one frozen object, validated once.

Every limit has a default that is safe on a small CPU machine; the CLI exposes each one as an option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from decrappify.errors import ConfigError
from decrappify.inference.precision import PRECISIONS

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Input pixels, read from the upload's header.
DEFAULT_MAX_PIXELS = 4_000_000
#: Output pixels (input pixels x scale squared), checked from the header too: the result is what takes the
#: memory (12 bytes a pixel as float32, several copies). Sixteen times the input limit: an x4 model's output.
DEFAULT_MAX_OUTPUT_PIXELS = 16 * DEFAULT_MAX_PIXELS
DEFAULT_QUEUE_SIZE = 4
DEFAULT_REQUEST_TIMEOUT_S = 120.0
#: Uploads being received at once, per slot of work (running or queued), before new ones get a 503 straight away.
UPLOADS_PER_SLOT = 4
#: The slowest upload kept, in bytes a second on average. A phone on a poor link sends 100 KB/s; a client that
#: sends 1 byte a second holds an upload slot for nothing (the slow-body attack), so below this rate, after
#: `DEFAULT_UPLOAD_GRACE_S`, it gets a 408; and whenever every slot is taken, the slowest upload below this rate
#: gives its slot to the newcomer.
DEFAULT_MIN_UPLOAD_BYTES_PER_S = 8 * 1024
DEFAULT_UPLOAD_GRACE_S = 10.0
#: Seconds a connection may take to send a request's headers (a whole request line and header block is
#: a few hundred bytes); slower ones are closed, so slow headers cannot pile up connections either.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Video jobs (`serve.video_jobs`): short clips only. A 30 s 720p clip at 30 fps is 900 frames; restoring it x4
#: on a 2-core CPU takes tens of minutes, which is why a job runs in the background and is polled.
DEFAULT_MAX_VIDEO_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_VIDEO_SECONDS = 60.0
DEFAULT_MAX_VIDEO_FRAMES = 1800
#: Pixels of one input frame (1280 x 720).
DEFAULT_MAX_VIDEO_PIXELS = 1280 * 720
DEFAULT_VIDEO_QUEUE = 2
#: How long a finished job's result (or error) is kept for its client, and a job may run.
DEFAULT_VIDEO_RESULT_TTL_S = 3600.0
DEFAULT_VIDEO_TIMEOUT_S = 3 * 3600.0


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one service instance.

    `models` are shipped model names or model file paths, all loaded at start-up (empty: every shipped model);
    the first one is the default. `token`, when set, must be sent as `Authorization: Bearer TOKEN` on /v1/*.
    `max_concurrency` restorations run at once, `queue_size` more may wait; beyond that a request gets a 503 with
    `Retry-After`. `request_timeout_s` bounds the wait plus the restoration (and, separately, the upload).
    `max_pixels` bounds the input picture and `max_output_pixels` the restored one (input x scale squared), both
    read from the header before anything is decoded. Uploads slower than `min_upload_bytes_per_s` on average
    (after `upload_grace_s`; 0 turns the rule off) are dropped, and `header_timeout_s` bounds a request's headers.
    """

    models: tuple[str, ...] = ()
    #: The text-mask model (a shipped name or a file) behind /v1/detect and "repair only the watermark"; None:
    #: the shipped `text-mask` when there is one, else the page offers neither; "": none, even when one ships.
    mask_model: str | None = None
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS
    max_concurrency: int = 1
    queue_size: int = DEFAULT_QUEUE_SIZE
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    device: str = "auto"
    tile: int = 512
    precision: str = "auto"
    min_upload_bytes_per_s: int = DEFAULT_MIN_UPLOAD_BYTES_PER_S
    upload_grace_s: float = DEFAULT_UPLOAD_GRACE_S
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    #: Video jobs: upload size, clip duration, frame count and input frame pixels; jobs running at once and
    #: waiting; how long results are kept and a job may run. `max_video_frames` 0 turns video jobs off.
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS
    max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES
    max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS
    video_workers: int = 1
    video_queue: int = DEFAULT_VIDEO_QUEUE
    video_result_ttl_s: float = DEFAULT_VIDEO_RESULT_TTL_S
    video_timeout_s: float = DEFAULT_VIDEO_TIMEOUT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(str(model) for model in self.models))
        if self.token is not None and not self.token.strip():
            raise ConfigError("token: must not be empty (leave it out to serve without one)")
        _check_int("max_upload_bytes", self.max_upload_bytes, minimum=1)
        _check_int("max_pixels", self.max_pixels, minimum=1)
        _check_int("max_output_pixels", self.max_output_pixels, minimum=1)
        _check_int("min_upload_bytes_per_s", self.min_upload_bytes_per_s, minimum=0)
        _check_int("max_concurrency (--workers)", self.max_concurrency, minimum=1)
        _check_int("queue_size", self.queue_size, minimum=0)
        _check_int("tile", self.tile, minimum=0)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: choose one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("request_timeout_s", "upload_grace_s", "header_timeout_s", "max_video_seconds",
                     "video_result_ttl_s", "video_timeout_s"):  # fmt: skip
            _check_seconds(name, getattr(self, name))
        _check_int("max_video_bytes", self.max_video_bytes, minimum=1)
        _check_int("max_video_frames", self.max_video_frames, minimum=0)
        _check_int("max_video_pixels", self.max_video_pixels, minimum=1)
        _check_int("video_workers", self.video_workers, minimum=1)
        _check_int("video_queue", self.video_queue, minimum=0)

    @property
    def max_requests_in_flight(self) -> int:
        """Restore requests the server holds at once (uploading, queued or running); more get a 503 at once."""
        return UPLOADS_PER_SLOT * (self.max_concurrency + self.queue_size)


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected a whole number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
