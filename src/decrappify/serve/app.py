"""The FastAPI app: `create_app(settings)` loads the models once and returns an app for any ASGI server.

Routes (all errors are JSON `{"error": ...}`, see `serve.errors`):

* `GET /` the web page (static files under `/static/`), `GET /healthz` liveness and load: no token needed;
* `GET /v1/models`, `POST /v1/restore`: need `Authorization: Bearer TOKEN` when a token is set;
* `GET /openapi.json` the schema. The interactive /docs pages are off: they load scripts from a CDN.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from decrappify import __version__
from decrappify.errors import ConfigError, DecrappifyError, InputError
from decrappify.inference.outscale import MAX_OUTSCALE, MIN_OUTSCALE
from decrappify.inference.restorer import Restorer
from decrappify.inference.text_mask import TextMasker
from decrappify.inference.tiling import OutOfMemory
from decrappify.inference.zoo import DEFAULT_MODEL, list_models
from decrappify.io.video import av_available
from decrappify.serve.errors import ApiError, install_error_handlers
from decrappify.serve.job import OUTPUT_CHOICES, RestoredImage, RestoreRequest, restore_upload
from decrappify.serve.limits import (
    RequestLimitsMiddleware,
    check_output_size,
    inspect_upload,
    token_matches,
    unauthorized,
)
from decrappify.serve.masking import add_mask_routes, load_masker, masker_for
from decrappify.serve.queue import InferencePool, PoolFull
from decrappify.serve.settings import ServeSettings
from decrappify.serve.variants import StrengthVariants
from decrappify.serve.video_jobs import VideoJobs
from decrappify.serve.video_routes import JOBS_PATH, add_video_routes
from decrappify.tasks import is_segmentation_task

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page uses only its own files; uploads and results are shown through blob: URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
MIN_REQUEST_TILE = 32
_bearer = HTTPBearer(auto_error=False, description="Needed only when the server was started with a token.")


class SecurityHeadersMiddleware:
    """Adds `SECURITY_HEADERS` to every response that does not set them itself (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.headers = [
            (key.lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in SECURITY_HEADERS.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                extra = [(key, value) for key, value in self.headers if key not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def load_restorers(settings: ServeSettings) -> dict[str, Restorer]:
    """Every model of `settings` (every shipped model when none is named), loaded once, by name."""
    shipped = sorted((entry.name for entry in list_models() if not is_segmentation_task(entry.task)),
                     key=lambda name: name != DEFAULT_MODEL)  # a text-mask model finds text; `masking` loads it
    sources = list(settings.models) or shipped  # the shipped default first: it is the page's default
    if not sources:
        raise ConfigError("no model to serve: no shipped model is installed; pass --models PATH")
    restorers: dict[str, Restorer] = {}
    for source in sources:
        restorer = Restorer.from_pretrained(
            source, device=settings.device, tile=settings.tile, precision=settings.precision
        )
        if restorer.name in restorers:
            raise ConfigError(f"two models are named '{restorer.name}': serve only one of them")
        restorers[restorer.name] = restorer
        log.info(
            "loaded model %s (%s, x%d, precision %s) from %s",
            restorer.name,
            restorer.task,
            restorer.scale,
            restorer.precision_note,
            source,
        )
    return restorers


def create_app(
    settings: ServeSettings, *, restorers: Mapping[str, Restorer] | None = None, masker: TextMasker | None = None
) -> FastAPI:
    """The service for `settings`; `restorers` (name -> loaded restorer, first is the default) skips loading, as
    `masker` does the text-mask model's (None: `settings.mask_model`, else the shipped one, else none)."""
    models = dict(restorers) if restorers is not None else load_restorers(settings)
    masker = masker if masker is not None else load_masker(settings)
    if not models:
        raise ConfigError("no model to serve")
    pool = InferencePool(settings.max_concurrency, settings.queue_size)
    # Strength pairs need the models' files: known when loaded here (in `settings.models` order, or shipped names).
    sources = dict(zip(models, settings.models or models, strict=False)) if restorers is None else {}
    variants = StrengthVariants(settings, sources)
    jobs = VideoJobs(settings) if settings.max_video_frames and av_available() else None  # no PyAV: no videos

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()
        if jobs is not None:
            jobs.shutdown()

    app = FastAPI(
        title="decrappify",
        version=__version__,
        summary="Restore and upscale images.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings, app.state.restorers, app.state.pool = settings, models, pool
    app.state.variants, app.state.jobs = variants, jobs
    app.state.masker = masker
    install_error_handlers(app)
    app.add_middleware(
        RequestLimitsMiddleware,
        token=settings.token,
        max_upload_bytes=settings.max_upload_bytes,
        max_in_flight=settings.max_requests_in_flight,
        body_timeout_s=settings.request_timeout_s,
        min_bytes_per_s=settings.min_upload_bytes_per_s,
        grace_s=settings.upload_grace_s,
        other_upload_limits={JOBS_PATH: settings.max_video_bytes} if jobs is not None else None,
    )

    app.add_middleware(SecurityHeadersMiddleware)  # added last: outermost, so every answer gets them
    _add_page_routes(app)
    _add_api_routes(app, settings, models, pool, masker, variants=variants, jobs=jobs)
    if jobs is not None:
        add_video_routes(app, jobs, lambda name, strength: _choose(models, variants, settings, name, strength),
                         _token_dependency(settings))  # fmt: skip
    add_mask_routes(app, settings, masker, pool, _token_dependency(settings))
    return app


def _add_page_routes(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/healthz", summary="Liveness and load; no token needed")
    async def healthz() -> dict[str, Any]:
        pool: InferencePool = app.state.pool
        return {"status": "ok", "running": pool.running, "queued": pool.queued, "workers": pool.workers}


def _token_dependency(settings: ServeSettings) -> Any:
    """Checks the bearer token again inside the route (the middleware already refused bad ones before reading
    any body) and declares the scheme in the OpenAPI schema."""

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
        if not token_matches(settings.token, header):
            raise unauthorized()

    return Depends(require_token)


def pick_restorer(
    models: Mapping[str, Restorer], name: str | None, tile: int | None, server_tile: int
) -> Restorer:
    """The named model (the first one when no name), with a smaller tile when asked: `ApiError` 400 otherwise.

    A request may lower the tile (less memory) but never raise it above the server's, which bounds memory."""
    restorer = models[next(iter(models))] if not name else models.get(name)
    if restorer is None:
        raise ApiError(400, f"unknown model '{name}'; choose one of: {', '.join(models)}")
    if tile is None or tile == restorer.tile:
        return restorer
    if server_tile and not MIN_REQUEST_TILE <= tile <= server_tile:
        raise ApiError(400, f"tile {tile}: choose {MIN_REQUEST_TILE}..{server_tile} (this server's tile)")
    if not server_tile and 0 < tile < MIN_REQUEST_TILE:
        raise ApiError(400, f"tile {tile}: choose 0 (whole picture) or at least {MIN_REQUEST_TILE}")
    tiled = copy.copy(restorer)  # restorers keep no state between calls: the copy shares the loaded model
    tiled.tile = tile
    return tiled


def _choose(
    models: Mapping[str, Restorer], variants: StrengthVariants, settings: ServeSettings, name: str | None,
    strength: float | None,
) -> Restorer:
    """The model `name` (None: the default) at `strength`, for a video job; `ApiError` 400 for an unknown model."""
    restorer = pick_restorer(models, name, None, settings.tile)
    return variants.at(name or next(iter(models)), restorer, strength)


def _image_response(result: RestoredImage, model: str) -> Response:
    return Response(
        content=result.data,
        media_type=result.media_type,
        headers={
            "Content-Disposition": f'inline; filename="{result.filename}"',
            "Cache-Control": "no-store",
            "X-Decrappify-Model": model,
            "X-Decrappify-Size": f"{result.width}x{result.height}",
            "X-Decrappify-Seconds": f"{result.seconds:.3f}",
        },
    )


_IMAGE_CONTENT = {mime: {} for mime in ("image/png", "image/jpeg", "image/webp", "image/tiff")}
_ERRORS = {
    status: {"description": text, "content": {"application/json": {"example": {"error": text}}}}
    for status, text in {
        400: "not an image, a corrupt one, or a bad option",
        401: "missing or wrong token",
        413: "upload or picture too large",
        415: "unsupported type",
        503: "busy or over the time limit; see Retry-After",
    }.items()
}


def _add_api_routes(
    app: FastAPI,
    settings: ServeSettings,
    models: Mapping[str, Restorer],
    pool: InferencePool,
    masker: TextMasker | None = None,
    *,
    variants: StrengthVariants | None = None,
    jobs: VideoJobs | None = None,
) -> None:
    auth = _token_dependency(settings)

    @app.get(
        "/v1/models", dependencies=[auth], summary="The models this server runs; the first is the default"
    )
    async def list_models() -> dict[str, Any]:
        return {
            "default": next(iter(models)),
            "models": [
                {"name": n, "task": r.task, "scale": r.scale, "precision": r.precision,
                 "strength": variants.describe(n) if variants is not None else None}  # fmt: skip
                for n, r in models.items()
            ],
            "outscale": {"min": MIN_OUTSCALE, "max": MAX_OUTSCALE},
            "video": jobs.limits() if jobs is not None else None,
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_output_pixels": settings.max_output_pixels,
            },
            "formats": list(OUTPUT_CHOICES),
            "text_mask": masker.name if masker is not None else None,  # set: /v1/detect and only_masked work
        }

    @app.post(
        "/v1/restore",
        dependencies=[auth],
        summary="Restore one uploaded image; the answer is the image itself",
        response_class=Response,
        responses={200: {"content": _IMAGE_CONTENT, "description": "the restored image"}, **_ERRORS},
    )
    async def restore(
        image: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP or TIFF")],
        model: Annotated[
            str | None, Form(description="model name (GET /v1/models); default: the first")
        ] = None,
        tile: Annotated[
            int | None, Form(ge=0, description="tile size in input pixels, at most the server's")
        ] = None,
        output: Annotated[
            Literal[OUTPUT_CHOICES], Form(alias="format", description="auto: like the input")
        ] = "auto",
        quality: Annotated[int, Form(ge=1, le=100, description="JPEG/WebP quality")] = 95,
        only_masked: Annotated[
            bool, Form(description="repair only the watermark: keep the input outside the text mask (x1 models)")
        ] = False,
        outscale: Annotated[
            float | None, Form(ge=MIN_OUTSCALE, le=MAX_OUTSCALE, description="output size / input size")
        ] = None,
        strength: Annotated[
            float | None, Form(ge=0, le=1, description="0: the model, 1: its pair (models with a pair only)")
        ] = None,
    ) -> Response:
        restorer = pick_restorer(models, model, tile, settings.tile)
        if variants is not None:
            restorer = variants.at(model or next(iter(models)), restorer, strength)
        text_masker = masker_for(masker, restorer, only_masked)
        info = await run_in_threadpool(
            inspect_upload,
            image.file,
            image.content_type,
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
        )  # before admission: a bad upload is refused with its own status even when the workers are busy
        check_output_size(info, outscale or restorer.scale, settings.max_output_pixels)
        request = RestoreRequest(
            restorer=restorer,
            upload=image.file,
            info=info,
            filename=image.filename or "image",
            output_format=output,
            quality=quality,
            max_pixels=settings.max_pixels,
            masker=text_masker,
            outscale=outscale,
        )
        result = await _run(pool, request, settings.request_timeout_s)
        return _image_response(result, restorer.name)


async def _run(pool: InferencePool, request: RestoreRequest, timeout_s: float) -> RestoredImage:
    """`restore_upload` in the pool, with the pool's and the library's failures turned into HTTP errors."""
    try:
        return await pool.run(lambda: restore_upload(request), timeout_s)
    except PoolFull as full:
        message = f"busy: {full.pending} restorations running or waiting; retry later"
        raise ApiError(503, message, {"Retry-After": str(full.retry_after_s)}) from None
    except TimeoutError:
        message = f"timed out: no result within {timeout_s:g} s; retry later or send a smaller picture"
        raise ApiError(503, message, {"Retry-After": str(pool.retry_after_s())}) from None
    except ApiError:
        raise
    except OutOfMemory:
        raise ApiError(503, "out of memory for this picture; retry later", {"Retry-After": "30"}) from None
    except InputError as error:
        raise ApiError(400, f"cannot restore this image: {error.reason}") from None
    except DecrappifyError as error:
        log.error("restoration failed: %s", error, exc_info=error)
        raise ApiError(500, "restoration failed") from None
