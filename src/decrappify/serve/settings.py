"""What the HTTP service may accept and how much work it takes on: one frozen object, validated once.

Every limit has a default that is safe on a small CPU machine; the CLI exposes each one as an option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from decrappify.errors import ConfigError
from decrappify.inference.precision import PRECISIONS

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Input pixels; an x4 model makes 16 times as many output pixels, so this also bounds the output's memory.
DEFAULT_MAX_PIXELS = 4_000_000
DEFAULT_QUEUE_SIZE = 4
DEFAULT_REQUEST_TIMEOUT_S = 120.0
#: Uploads being received at once, per slot of work (running or queued), before new ones get a 503 straight away.
UPLOADS_PER_SLOT = 4


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one service instance.

    `models` are shipped model names or model file paths, all loaded at start-up (empty: every shipped model);
    the first one is the default. `token`, when set, must be sent as `Authorization: Bearer TOKEN` on /v1/*.
    `max_concurrency` restorations run at once, `queue_size` more may wait; beyond that a request gets a 503 with
    `Retry-After`. `request_timeout_s` bounds the wait plus the restoration (and, separately, the upload).
    """

    models: tuple[str, ...] = ()
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_concurrency: int = 1
    queue_size: int = DEFAULT_QUEUE_SIZE
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    device: str = "auto"
    tile: int = 512
    precision: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(str(model) for model in self.models))
        if self.token is not None and not self.token.strip():
            raise ConfigError("token: must not be empty (leave it out to serve without one)")
        _check_int("max_upload_bytes", self.max_upload_bytes, minimum=1)
        _check_int("max_pixels", self.max_pixels, minimum=1)
        _check_int("max_concurrency (--workers)", self.max_concurrency, minimum=1)
        _check_int("queue_size", self.queue_size, minimum=0)
        _check_int("tile", self.tile, minimum=0)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: choose one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        timeout = self.request_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout):
            raise ConfigError(f"request_timeout_s: expected a number of seconds, got {timeout!r}")
        if timeout <= 0:
            raise ConfigError(f"request_timeout_s: must be > 0, got {timeout}")

    @property
    def max_requests_in_flight(self) -> int:
        """Restore requests the server holds at once (uploading, queued or running); more get a 503 at once."""
        return UPLOADS_PER_SLOT * (self.max_concurrency + self.queue_size)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected a whole number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
