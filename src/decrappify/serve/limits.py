"""What an upload must be before any work is spent on it: small enough, an image we read, not a bomb; and the
token check.

How an upload's type is decided (the bytes win over the declared `Content-Type`, which clients often get wrong):

* the bytes are a PNG, JPEG, WebP, BMP or TIFF (as Pillow identifies them from their header) -> accepted, whatever
  was declared; if the picture then does not decode, 400 (corrupt);
* the bytes are another known format (GIF, PDF, ICO, ...) -> 415;
* the bytes are nothing we recognise -> 415 when the declared type names something that is not one of our image
  types (`text/plain`, `application/pdf`, `image/svg+xml`, ...), otherwise 400 "not an image" (declared as one of
  our image types, as `application/octet-stream`, or not declared at all).

Size: at most `max_upload_bytes` of body (413, checked on `Content-Length` before reading and again while
reading), and at most `max_pixels` pixels, read from the header before anything is decoded (413), which stops
decompression bombs: a tiny file that claims a huge picture. The restored picture (input x the model's scale
squared) must have at most `max_output_pixels` (413), checked from the same header.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from decrappify.serve.errors import ApiError, error_response
from decrappify.serve.upload_slots import Upload, UploadSlots

#: Pillow format name -> (media type, file suffix) of the pictures the service reads.
INPUT_FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", ".png"),
    "JPEG": ("image/jpeg", ".jpg"),
    "WEBP": ("image/webp", ".webp"),
    "BMP": ("image/bmp", ".bmp"),
    "TIFF": ("image/tiff", ".tif"),
}
#: Declared types that name one of INPUT_FORMATS (with common aliases), or say nothing about the content.
_IMAGE_TYPES = {mime for mime, _ in INPUT_FORMATS.values()} | {
    "image/jpg",
    "image/pjpeg",
    "image/x-png",
    "image/x-ms-bmp",
    "image/x-bmp",
}
_NEUTRAL_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_KNOWN_MAGIC = (
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"GIF8", "GIF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML"),
)
#: Multipart framing (boundaries, part headers, the small form fields) allowed on top of the file itself.
MULTIPART_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class UploadInfo:
    """What the header says: Pillow's format name and the stored size (before any EXIF rotation)."""

    format: str
    width: int
    height: int

    @property
    def suffix(self) -> str:
        return INPUT_FORMATS[self.format][1]


def _media_type(declared: str | None) -> str:
    return (declared or "").split(";", 1)[0].strip().lower()


def _identify(file: BinaryIO, max_pixels: int) -> tuple[str, int, int] | None:
    """(format, width, height) from the header only, or None when Pillow recognises nothing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:  # reads the header; a file object passed in is left open
                return str(image.format), int(image.width), int(image.height)
    except Image.DecompressionBombError as error:
        raise ApiError(413, f"picture too large: more than {max_pixels} pixels") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None


def _size(file: BinaryIO) -> int:
    file.seek(0, io.SEEK_END)
    size = file.tell()
    file.seek(0)
    return size


def inspect_upload(
    file: BinaryIO, declared_type: str | None, *, max_upload_bytes: int, max_pixels: int
) -> UploadInfo:
    """Accept an upload (its format and stored size) or raise `ApiError` 400, 413 or 415 as the module doc says.

    Reads only the header, so a refused upload costs no decoding and little memory; `file` is rewound."""
    size = _size(file)
    if size > max_upload_bytes:
        raise ApiError(413, f"upload too large: {size} bytes, the limit is {max_upload_bytes}")
    if size == 0:
        raise ApiError(400, "empty upload: send a PNG, JPEG, WebP, BMP or TIFF image")
    head = file.read(16)
    file.seek(0)
    try:
        found = _identify(file, max_pixels)
    finally:
        file.seek(0)
    declared = _media_type(declared_type)
    if found is None:
        magic = next((name for prefix, name in _KNOWN_MAGIC if head.startswith(prefix)), None)
        if magic is not None or declared not in _IMAGE_TYPES | _NEUTRAL_TYPES:
            kind = magic or declared
            raise ApiError(415, f"unsupported type {kind}: send a PNG, JPEG, WebP, BMP or TIFF image")
        raise ApiError(400, "not an image, or a corrupt one: its header is not PNG, JPEG, WebP, BMP or TIFF")
    format_name, width, height = found
    if format_name not in INPUT_FORMATS:
        raise ApiError(
            415, f"unsupported image type {format_name}: send a PNG, JPEG, WebP, BMP or TIFF image"
        )
    if width < 1 or height < 1:
        raise ApiError(400, f"not a valid image: it claims a size of {width}x{height}")
    if width * height > max_pixels:
        raise ApiError(
            413, f"picture too large: {width}x{height} is {width * height} pixels, the limit is {max_pixels}"
        )
    return UploadInfo(format_name, width, height)


def check_output_size(info: UploadInfo, scale: float, max_output_pixels: int) -> None:
    """`ApiError` 413 when the restored picture (`scale` times each side, rounded) would have more than
    `max_output_pixels`: the result, not the upload, is what takes a worker's memory, and this is known from
    the header alone."""
    width, height = max(1, round(info.width * scale)), max(1, round(info.height * scale))
    if width * height > max_output_pixels:
        raise ApiError(
            413,
            f"picture too large for this model: {info.width}x{info.height} would become {width}x{height}, "
            f"{width * height} pixels; the limit is {max_output_pixels}",
        )


def token_matches(expected: str | None, authorization: str | None) -> bool:
    """True when no token is set, or `authorization` is `Bearer <expected>` (compared in constant time)."""
    if expected is None:
        return True
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8"), expected.encode("utf-8"))


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "missing or wrong token: send the header 'Authorization: Bearer TOKEN'",
        {"WWW-Authenticate": "Bearer"},
    )


#: Sent with every answer given before the request's body was read: the connection then closes, so a client that
#: is still sending (slowly) holds no connection either.
_CLOSE = {"Connection": "close"}


class RequestLimitsMiddleware:
    """Guards /v1/* before a body is read: token (401), declared size (413), an upload slot (503 when none can
    be had; see `serve.upload_slots` for the minimum rate, the line and eviction); then bounds the body as it
    streams in (413 past the upload limit plus multipart framing; 408 past `body_timeout_s`, below the minimum
    rate, or when its slot went to another upload).

    Pure ASGI so that a rejected upload costs nothing: no form parsing, no spooling to a temporary file.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_upload_bytes: int,
        max_in_flight: int,
        body_timeout_s: float,
        min_bytes_per_s: float = 0.0,
        grace_s: float = 10.0,
        upload_paths: frozenset[str] = frozenset({"/v1/restore"}),
        other_upload_limits: Mapping[str, int] | None = None,
    ):
        self.app = app
        self.token = token
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_upload_bytes + MULTIPART_SLACK_BYTES
        self.body_timeout_s = body_timeout_s
        # Upload path -> its own largest upload (the video jobs' route takes larger files than /v1/restore).
        self.upload_limits = {path: max_upload_bytes for path in upload_paths} | dict(other_upload_limits or {})
        self.upload_paths = frozenset(self.upload_limits)
        self.slots = UploadSlots(max_in_flight, min_bytes_per_s=min_bytes_per_s, grace_s=grace_s)

    @property
    def in_flight(self) -> int:
        """Uploads holding a slot (receiving, queued or running)."""
        return self.slots.in_use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if not token_matches(self.token, headers.get("authorization")):
            error = unauthorized()
            await error_response(401, error.detail, {**error.headers, **_CLOSE})(scope, receive, send)
            return
        if path not in self.upload_paths:
            await self.app(scope, receive, send)
            return
        limit = self.upload_limits[path]
        length = headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > limit + MULTIPART_SLACK_BYTES):
            message = f"upload too large: the limit is {limit} bytes"
            await error_response(413, message, _CLOSE)(scope, receive, send)
            return
        upload = await self.slots.acquire()
        if upload is None:
            message = f"busy: {self.in_flight} uploads in progress; retry later"
            await error_response(503, message, {"Retry-After": "5", **_CLOSE})(scope, receive, send)
            return
        try:
            await self.app(scope, self._bounded(receive, upload, limit), send)
        finally:
            self.slots.release(upload)

    def _bounded(self, receive: Receive, upload: Upload, limit: int | None = None) -> Receive:
        """`receive`, counting body bytes and timing the body; transparent once the body is complete."""
        loop = asyncio.get_running_loop()
        deadline = upload.started + self.body_timeout_s
        limit = self.max_upload_bytes if limit is None else limit

        async def bounded_receive() -> Message:
            if upload.done:
                return await receive()
            try:
                if upload.evicted:
                    raise TimeoutError
                async with asyncio.timeout_at(min(deadline, self.slots.due(upload))) as timer:
                    upload.timer = timer
                    message = await receive()
            except TimeoutError:
                raise self._timeout_error(upload, loop.time()) from None
            finally:
                upload.timer = None
            if message["type"] == "http.request":
                upload.received += len(message.get("body", b""))
                if upload.received > limit + MULTIPART_SLACK_BYTES:
                    raise ApiError(413, f"upload too large: the limit is {limit} bytes", _CLOSE)
                upload.done = not message.get("more_body", False)
            return message

        return bounded_receive

    def _timeout_error(self, upload: Upload, now: float) -> ApiError:
        if upload.evicted or now < upload.started + self.body_timeout_s:
            rate = f"{upload.received} bytes in {now - upload.started:.1f} s"
            minimum = f"the minimum is {self.slots.min_bytes_per_s:g} bytes/s"
            reason = "; its slot went to another upload" if upload.evicted else ""
            return ApiError(408, f"upload too slow: {rate}, {minimum}{reason}", _CLOSE)
        return ApiError(408, f"upload took longer than {self.body_timeout_s:g} s", _CLOSE)
