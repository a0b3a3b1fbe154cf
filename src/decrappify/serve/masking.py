"""The service's watermark finder: the text-mask model, `POST /v1/detect`, and "repair only the watermark".

When a text-mask model is loaded (`ServeSettings.mask_model`, else the shipped `text-mask` when there is one), the
page can show where the text is (`/v1/detect` answers a PNG to lay over the picture: red on the text,
transparent elsewhere) and restore only there (`/v1/restore` with `only_masked`, same-size models only).
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from decrappify.errors import InputError
from decrappify.inference.restorer import Restorer
from decrappify.inference.text_mask import OVERLAY_COLOUR, TextMasker
from decrappify.inference.zoo import list_models
from decrappify.io.images import read_image
from decrappify.serve.errors import ApiError
from decrappify.serve.limits import UploadInfo, inspect_upload
from decrappify.serve.queue import InferencePool, PoolFull
from decrappify.serve.settings import ServeSettings
from decrappify.tasks import TEXT_MASK, is_segmentation_task

log = logging.getLogger(__name__)

OVERLAY_ALPHA = 140  # of 255: the text shows through the tint


def load_masker(settings: ServeSettings) -> TextMasker | None:
    """The text-mask model `settings` names, else the shipped one, else None (the page then offers no mask);
    an empty name ("") turns it off."""
    source = settings.mask_model
    if source == "":
        return None
    if source is None:
        shipped = [entry.name for entry in list_models() if is_segmentation_task(entry.task)]
        if not shipped:
            return None
        source = shipped[0]
    masker = TextMasker.from_pretrained(source, device=settings.device, tile=settings.tile,
                                        precision=settings.precision)  # fmt: skip
    log.info("loaded text-mask model %s (precision %s) from %s", masker.name, masker.precision_note, source)
    return masker


def masker_for(masker: TextMasker | None, restorer: Restorer, only_masked: bool) -> TextMasker | None:
    """The masker a restore request uses (None: restore the whole picture); `ApiError` 400 when it cannot."""
    if not only_masked:
        return None
    if masker is None:
        raise ApiError(400, f"only_masked: this server has no {TEXT_MASK} model")
    if restorer.scale != 1:
        raise ApiError(400, f"only_masked needs a same-size model; {restorer.name} is x{restorer.scale}")
    return masker


def overlay_png(mask: np.ndarray) -> bytes:
    """The mask as an RGBA PNG to lay over the picture: the overlay colour on text, transparent elsewhere."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.rint(OVERLAY_COLOUR * 255).astype(np.uint8)
    rgba[..., 3] = np.where(mask, OVERLAY_ALPHA, 0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def detect_upload(masker: TextMasker, upload: Any, info: UploadInfo, max_pixels: int) -> tuple[bytes, float]:
    """Decode one checked upload and find its text: (overlay PNG, share of pixels that are text)."""
    with tempfile.TemporaryDirectory(prefix="decrappify-serve-") as folder:
        source = Path(folder) / f"upload{info.suffix}"
        upload.seek(0)
        with source.open("wb") as file:
            shutil.copyfileobj(upload, file)
        try:
            picture = read_image(source, max_pixels=max_pixels)
        except InputError as error:
            raise ApiError(400, f"cannot read the image: {error.reason}") from None
    mask = masker.predict(picture.rgb)
    return overlay_png(mask), float(mask.mean())


def add_mask_routes(app: FastAPI, settings: ServeSettings, masker: TextMasker | None, pool: InferencePool,
                    auth: Any) -> None:  # fmt: skip
    """`POST /v1/detect` (404 when no text-mask model is loaded)."""

    @app.post(
        "/v1/detect",
        dependencies=[auth],
        summary="Find the watermark's text: a PNG to lay over the picture (red on text, transparent elsewhere)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the mask overlay"}},
    )
    async def detect(image: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP or TIFF")]) -> Response:
        if masker is None:
            raise ApiError(404, f"this server has no {TEXT_MASK} model")
        limits = {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels}
        info = await run_in_threadpool(inspect_upload, image.file, image.content_type, **limits)
        try:
            data, share = await pool.run(lambda: detect_upload(masker, image.file, info, settings.max_pixels),
                                         settings.request_timeout_s)  # fmt: skip
        except PoolFull as full:
            message = f"busy: {full.pending} jobs running or waiting; retry later"
            raise ApiError(503, message, {"Retry-After": str(full.retry_after_s)}) from None
        except TimeoutError:
            raise ApiError(503, "timed out; retry later", {"Retry-After": str(pool.retry_after_s())}) from None
        except InputError as error:
            raise ApiError(400, f"cannot read this image: {error.reason}") from None
        return Response(content=data, media_type="image/png",
                        headers={"Cache-Control": "no-store", "X-Decrappify-Text-Share": f"{share:.4f}"})  # fmt: skip
