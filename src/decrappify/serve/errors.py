"""Every error the service answers is JSON `{"error": "one line"}` with the status that says what went wrong.

Status codes: 400 not an image / corrupt / bad option, 401 bad or missing token, 404/405 no such route,
408 upload too slow, 413 upload or picture too large, 415 a type we do not read, 503 busy or over the time limit
(with `Retry-After`), 500 a bug (logged with its traceback; the client sees no details).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(HTTPException):
    """An expected failure with its HTTP status; a subclass of Starlette's, so it may be raised anywhere,
    including while the request body is being read."""

    def __init__(self, status_code: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(status_code=status_code, detail=message, headers=dict(headers or {}))


def error_response(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=dict(headers or {}))


def _validation_message(error: RequestValidationError) -> str:
    """One line per bad field: "image: Field required; tile: Input should be a valid integer"."""
    parts = []
    for item in error.errors():
        where = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path", "header")]
        parts.append(f"{'.'.join(where) or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Replace FastAPI's `{"detail": ...}` bodies (and its 422s) with our JSON errors."""

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(error))

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(500, "internal server error")
