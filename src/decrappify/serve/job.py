"""One restoration as the service runs it, in a worker thread: upload bytes in, encoded picture bytes out.

The library reads and writes files, so the upload goes to a `TemporaryDirectory` that is removed before the
answer is sent: nothing the service handles outlives its request on disk.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from decrappify.errors import InputError
from decrappify.inference.outscale import resize_rgb, scaled_size
from decrappify.io.images import read_image, write_image
from decrappify.serve.errors import ApiError
from decrappify.serve.limits import UploadInfo

if TYPE_CHECKING:
    from decrappify.inference.restorer import Restorer
    from decrappify.inference.text_mask import TextMasker

#: Output format name -> (media type, suffix that makes `write_image` pick the format).
OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    "png": ("image/png", ".png"),
    "jpeg": ("image/jpeg", ".jpg"),
    "webp": ("image/webp", ".webp"),
    "tiff": ("image/tiff", ".tif"),
}
#: `auto` keeps the input's kind where we can write it (lossy in, lossy out), PNG for everything else.
_AUTO_FORMAT = {"JPEG": "jpeg", "WEBP": "webp", "TIFF": "tiff"}
OUTPUT_CHOICES = ("auto", *OUTPUT_FORMATS)


@dataclass(frozen=True)
class RestoreRequest:
    """What a worker needs. `upload` is the spooled upload, already checked by `inspect_upload` (which gave
    `info`); it is read in the worker, so that only admitted jobs hold whole pictures in memory."""

    restorer: Restorer
    upload: BinaryIO
    info: UploadInfo
    filename: str
    output_format: str
    quality: int
    max_pixels: int
    masker: TextMasker | None = None  # "repair only the watermark": restore only where this model finds text
    outscale: float | None = None  # output size / input size (None: the model's scale)


@dataclass(frozen=True)
class RestoredImage:
    data: bytes
    media_type: str
    filename: str
    width: int
    height: int
    seconds: float


def download_name(upload_name: str, model: str, suffix: str) -> str:
    """`photo-restore-x4.png` from `photo.jpg`: safe in a header (ASCII letters, digits, `._-` only)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(upload_name or "image").stem).strip("._") or "image"
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    return f"{stem[:80]}-{model}{suffix}"


def restore_upload(request: RestoreRequest) -> RestoredImage:
    """Decode, restore and encode one upload; `ApiError` 400 when it does not decode."""
    start = time.perf_counter()
    info = request.info
    name = request.output_format if request.output_format != "auto" else _AUTO_FORMAT.get(info.format, "png")
    media_type, suffix = OUTPUT_FORMATS[name]
    with tempfile.TemporaryDirectory(prefix="decrappify-serve-") as folder:
        source = Path(folder) / f"upload{info.suffix}"
        request.upload.seek(0)
        with source.open("wb") as file:
            shutil.copyfileobj(request.upload, file)
        try:
            picture = read_image(source, max_pixels=request.max_pixels)
        except InputError as error:
            raise ApiError(400, f"cannot read the image: {error.reason}") from None
        if request.masker is not None:
            from decrappify.inference.text_mask import restore_only_masked  # with the masker: torch is loaded

            restored = restore_only_masked(request.restorer, picture, request.masker.predict(picture.rgb))
        else:
            restored = request.restorer.restore(picture)
        if request.outscale is not None:
            restored = restored.with_rgb(
                resize_rgb(restored.rgb, scaled_size(picture.width, picture.height, request.outscale))
            )
        target = write_image(restored, Path(folder) / f"restored{suffix}", quality=request.quality)
        encoded = target.read_bytes()
    return RestoredImage(
        data=encoded,
        media_type=media_type,
        filename=download_name(request.filename, request.restorer.name, suffix),
        width=restored.width,
        height=restored.height,
        seconds=time.perf_counter() - start,
    )
