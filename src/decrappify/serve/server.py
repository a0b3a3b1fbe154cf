"""Running the service on uvicorn with what an exposed server needs beyond the app: a header timeout, bounded
headers and keep-alive, and an access log without query strings.

uvicorn closes idle keep-alive connections, but a connection that sends its request line and headers a byte at a
time is never closed: enough of them exhaust the process's connections. `HeaderTimeoutH11Protocol` closes one
that has not finished a request's headers `header_timeout_s` after it opened (or after its last response).
The body has its own limits in `serve.limits` (size, minimum rate, timeout).

Query strings are dropped from the access log: the API takes none, so one is either noise or a mistake worth not
keeping, such as a token sent as `?token=` instead of in the `Authorization` header.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from decrappify.serve.settings import ServeSettings

#: Largest request line plus headers, in bytes; our clients send well under 2 KB.
MAX_HEADER_BYTES = 16 * 1024
#: Seconds an idle keep-alive connection stays open (uvicorn's default, stated so it is a decision).
KEEP_ALIVE_S = 5


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a timer that closes a connection still short of a request's headers."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._header_timer = None
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request's headers get the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        # IDLE: no request has got past its headers since the timer was armed (a request under way is not).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class DropQueryStrings(logging.Filter):
    """Cuts the query string off the path in uvicorn's access-log records (`client - "GET /path?x HTTP/1.1" 200`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that apply these limits (host, port, logging are
    the caller's); the access-log filter is installed as a side effect, once."""
    hide_query_strings()
    protocol = type("HeaderTimeoutH11", (HeaderTimeoutH11Protocol,), {"header_timeout_s": settings.header_timeout_s})
    return {
        "http": protocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "server_header": False,
    }


def hide_query_strings() -> None:
    """Attach `DropQueryStrings` to uvicorn's access logger (a logger's filters survive uvicorn's log setup)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, DropQueryStrings) for existing in access.filters):
        access.addFilter(DropQueryStrings())


def create_server(
    app: Any,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    log_config: dict[str, Any] | None = LOGGING_CONFIG,
) -> uvicorn.Server:
    """A uvicorn server for an app made by `create_app` (its settings give the limits); `server.run()` serves."""
    options = uvicorn_options(app.state.settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=copy.deepcopy(log_config) if log_config is not None else None,
        **options,
    )
    return uvicorn.Server(config)
