"""The HTTP API: restores, limits, errors and auth, with a tiny untrained model or a controllable fake one."""

from __future__ import annotations

import asyncio
import io
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
import httpx
from fastapi.testclient import TestClient

from decrappify.errors import ConfigError
from decrappify.serve import ServeSettings, create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCALE = 4
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def model_path(x4_model_file: Path) -> Path:
    return x4_model_file


def make_client(model_path: Path, **overrides) -> TestClient:
    settings = ServeSettings(models=(str(model_path),), device="cpu", **overrides)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client(model_path) -> TestClient:
    return make_client(model_path)


def encode(mode: str = "RGB", size: tuple[int, int] = (24, 20), fmt: str = "PNG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    values = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(values[..., 0] if channels == 1 else values, mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but holds almost nothing: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def upload(data: bytes, name: str = "photo.png", media_type: str = "image/png") -> dict:
    return {"image": (name, data, media_type)}


def decoded(response: httpx.Response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and "\n" not in message
    for word in words:
        assert word in message.lower(), message


# ------------------------------------------------------------------------------------------------ happy paths


def test_restore_png_returns_the_upscaled_png(client):
    response = client.post("/v1/restore", files=upload(encode()))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-decrappify-model"] == "tiny-x4"
    assert response.headers["x-decrappify-size"] == "96x80"
    assert response.headers["content-disposition"] == 'inline; filename="photo-tiny-x4.png"'
    image = decoded(response)
    assert (image.format, image.size, image.mode) == ("PNG", (24 * SCALE, 20 * SCALE), "RGB")


@pytest.mark.parametrize(
    ("source", "requested", "media_type", "pil_format"),
    [
        ("JPEG", "auto", "image/jpeg", "JPEG"),
        ("PNG", "jpeg", "image/jpeg", "JPEG"),
        ("PNG", "webp", "image/webp", "WEBP"),
        ("BMP", "auto", "image/png", "PNG"),
    ],
)
def test_output_format_follows_the_option(client, source, requested, media_type, pil_format):
    data = encode(fmt=source)
    response = client.post(
        "/v1/restore", files=upload(data, "x.bin", "application/octet-stream"), data={"format": requested}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert decoded(response).format == pil_format


def test_alpha_survives_the_round_trip(client):
    response = client.post("/v1/restore", files=upload(encode("RGBA")))
    assert response.status_code == 200, response.text
    assert decoded(response).mode == "RGBA"


def test_a_smaller_tile_gives_the_same_size(client):
    response = client.post("/v1/restore", files=upload(encode(size=(40, 36))), data={"tile": "32"})
    assert response.status_code == 200, response.text
    assert decoded(response).size == (40 * SCALE, 36 * SCALE)


def test_models_health_page_and_schema(client):
    models = client.get("/v1/models").json()
    assert models["default"] == "tiny-x4"
    (entry,) = models["models"]
    assert entry.pop("precision") in ("fp32", "bf16")  # "auto": bf16 where the CPU runs it natively
    assert entry.pop("strength") is None  # its file names no pair: the page shows no strength slider
    assert entry == {"name": "tiny-x4", "task": "restore", "scale": SCALE}
    assert client.get("/healthz").json() == {"status": "ok", "running": 0, "queued": 0, "workers": 1}
    schema = client.get("/openapi.json").json()
    assert {"/v1/restore", "/v1/models", "/healthz"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/v1/restore"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # its scripts would come from a CDN


def test_page_uses_only_its_own_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for path in ("/", "/static/app.js", "/static/style.css"):
        text = client.get(path).text
        assert client.get(path).status_code == 200
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


def test_nothing_is_left_in_the_temporary_folder(model_path, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    client = make_client(model_path)
    assert client.post("/v1/restore", files=upload(encode())).status_code == 200
    assert client.post("/v1/restore", files=upload(encode()[:80])).status_code == 400
    assert list(scratch.iterdir()) == []


# ------------------------------------------------------------------------------------------------ bad uploads


@pytest.mark.parametrize(
    ("data", "media_type", "status", "word"),
    [
        (b"", "image/png", 400, "empty"),
        (b"\x00\x01 definitely not an image" * 10, "application/octet-stream", 400, "not an image"),
        (b"hello, world\n", "image/jpeg", 400, "not an image"),
        (b"hello, world\n", "text/plain", 415, "unsupported"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf", 415, "pdf"),
        (b"%PDF-1.7\n", "image/png", 415, "pdf"),
    ],
)
def test_non_images_are_refused(client, data, media_type, status, word):
    assert_error(client.post("/v1/restore", files=upload(data, "x", media_type)), status, word)


def test_corrupt_and_unsupported_images(client):
    truncated = encode(size=(64, 64))[:200]
    assert_error(client.post("/v1/restore", files=upload(truncated)), 400, "cannot read")
    gif = encode("RGB", fmt="GIF")
    assert_error(client.post("/v1/restore", files=upload(gif, "a.gif", "image/gif")), 415, "gif")


def test_decompression_bombs_are_refused_before_decoding(client):
    # The uploads hold a PNG header and nothing else: decoding them would fail as unreadable (400), so a 413
    # naming the pixel count shows the refusal came from the header alone.
    assert_error(
        client.post("/v1/restore", files=upload(png_header_only(3000, 2000))), 413, "too large", "6000000"
    )
    assert_error(
        client.post("/v1/restore", files=upload(png_header_only(100_000, 100_000))), 413, "too large"
    )


def test_upload_size_limit(model_path):
    client = make_client(model_path, max_upload_bytes=2000)
    big = encode(size=(64, 64))  # ~12 kB of noise
    assert_error(client.post("/v1/restore", files=upload(big)), 413, "too large")
    # Without Content-Length (chunked) the limit is enforced while the body streams in.
    boundary = "xxBOUNDARYxx"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + big
        + b"\0" * 80_000
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks():
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert_error(client.post("/v1/restore", content=chunks(), headers=headers), 413, "too large")
    # A picture just over the limit but inside the multipart slack is caught after parsing.
    assert_error(
        client.post("/v1/restore", files=upload(encode(size=(24, 24)) + b"\0" * 2000)), 413, "too large"
    )


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"model": "nope"}, "unknown model"),
        ({"tile": "abc"}, "tile"),
        ({"tile": "16"}, "tile 16"),
        ({"tile": "4096"}, "tile 4096"),
        ({"format": "gif"}, "format"),
        ({"quality": "0"}, "quality"),
    ],
)
def test_bad_options_are_400(client, fields, word):
    assert_error(client.post("/v1/restore", files=upload(encode()), data=fields), 400, word)


def test_missing_file_and_unknown_routes(client):
    assert_error(client.post("/v1/restore", data={"model": "tiny-x4"}), 400, "image")
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/restore"), 405)


# ------------------------------------------------------------------------------------------------ token


def test_token_guards_the_api_but_not_health_or_page(model_path):
    client = make_client(model_path, token=TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": "Basic x"},
    ):
        response = client.post("/v1/restore", files=upload(encode()), headers=headers)
        assert_error(response, 401, "token")
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error(client.get("/v1/models", headers=headers), 401, "token")
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/restore", files=upload(encode()), headers=good).status_code == 200
    assert client.get("/v1/models", headers=good).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 200


# ------------------------------------------------------------------------------------------------ load


class SlowRestorer:
    """Stands in for a model: each restore blocks until `release` is set, then returns the picture unchanged."""

    name, task, scale, tile = "slow", "restore", 1, 512

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def restore(self, picture):
        self.started.release()
        self.release.wait(10)
        return picture


async def _wait_started(slow: SlowRestorer, count: int = 1) -> None:
    for _ in range(count):
        for _ in range(500):
            if slow.started.acquire(blocking=False):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the restoration never started")


def _async_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_full_queue_gets_503_and_health_answers_meanwhile():
    slow = SlowRestorer()
    app = create_app(ServeSettings(max_concurrency=1, queue_size=1), restorers={"slow": slow})

    async def scenario():
        async with _async_client(app) as client:
            first = asyncio.create_task(client.post("/v1/restore", files=upload(encode())))
            await _wait_started(slow)
            second = asyncio.create_task(client.post("/v1/restore", files=upload(encode())))
            for _ in range(500):  # until the second one is queued
                health = (await client.get("/healthz")).json()
                if health["queued"] == 1:
                    break
                await asyncio.sleep(0.01)
            assert health == {"status": "ok", "running": 1, "queued": 1, "workers": 1}
            third = await client.post("/v1/restore", files=upload(encode()))
            # A bad upload is still refused for what it is: the checks run before a worker is needed.
            text = await client.post("/v1/restore", files=upload(b"hello", "a.txt", "text/plain"))
            slow.release.set()
            return third, text, await first, await second

    third, text, first, second = asyncio.run(scenario())
    assert_error(text, 415, "unsupported")
    assert_error(third, 503, "busy")
    assert int(third.headers["retry-after"]) >= 1
    assert first.status_code == 200 and second.status_code == 200


def test_time_limit_gives_503_and_frees_the_slot_when_the_job_ends():
    slow = SlowRestorer()
    app = create_app(ServeSettings(request_timeout_s=0.3, queue_size=0), restorers={"slow": slow})

    async def scenario():
        async with _async_client(app) as client:
            timed_out = await client.post("/v1/restore", files=upload(encode()))
            busy = await client.post(
                "/v1/restore", files=upload(encode())
            )  # the first job still holds the slot
            slow.release.set()
            for _ in range(500):
                if (await client.get("/healthz")).json()["running"] == 0:
                    break
                await asyncio.sleep(0.01)
            return timed_out, busy, await client.post("/v1/restore", files=upload(encode()))

    timed_out, busy, after = asyncio.run(scenario())
    assert_error(timed_out, 503, "timed out")
    assert "retry-after" in timed_out.headers
    assert_error(busy, 503, "busy")
    assert after.status_code == 200


# ------------------------------------------------------------------------------------------------ settings, CLI


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_concurrency": 0},
        {"queue_size": -1},
        {"max_upload_bytes": 0},
        {"max_pixels": 1.5},
        {"request_timeout_s": 0},
        {"request_timeout_s": float("nan")},
        {"token": "  "},
        {"tile": -1},
    ],
)
def test_bad_settings_raise_config_error(overrides):
    with pytest.raises(ConfigError):
        ServeSettings(**overrides)


def test_cli_builds_settings_and_runs_uvicorn(model_path, monkeypatch):
    import torch
    import uvicorn

    from decrappify.cli import main

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.update(app=app, **kwargs))
    monkeypatch.setattr(
        torch, "set_num_threads", lambda n: calls.update(threads=n)
    )  # not for the whole session
    monkeypatch.delenv("DECRAPPIFY_TOKEN", raising=False)
    argv = ["serve", "--models", str(model_path), "--port", "8123", "--workers", "2", "--max-upload-mb", "1"]
    assert main([*argv, "--device", "cpu", "--token", TOKEN]) == 0
    assert (calls["host"], calls["port"]) == ("127.0.0.1", 8123)
    settings = calls["app"].state.settings
    assert (settings.max_concurrency, settings.max_upload_bytes, settings.token) == (2, 1024 * 1024, TOKEN)
    assert list(calls["app"].state.restorers) == ["tiny-x4"]
    assert calls["threads"] >= 1  # two workers share the cores
    assert main(["serve", "--models", str(model_path), "--workers", "0"]) == 2
    assert main(["serve", "--models", "no-such-model.safetensors"]) == 2


def _guarded(**overrides):
    """The limits middleware around an app that reads the whole body, then waits for `gate` before answering."""
    from starlette.responses import PlainTextResponse

    from decrappify.serve.limits import RequestLimitsMiddleware

    gate = asyncio.Event()

    async def inner(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await gate.wait()
        await PlainTextResponse("done")(scope, receive, send)

    options = {
        "token": None,
        "max_upload_bytes": 10_000,
        "max_in_flight": 1,
        "body_timeout_s": 5.0,
    } | overrides
    return RequestLimitsMiddleware(inner, **options), gate


def test_too_many_uploads_at_once_get_503_before_reading():
    async def scenario():
        app, gate = _guarded(max_in_flight=1)
        async with _async_client(app) as client:
            first = asyncio.create_task(client.post("/v1/restore", content=b"x"))
            while app.in_flight == 0:
                await asyncio.sleep(0.01)
            second = await client.post("/v1/restore", content=b"x")
            gate.set()
            return second, await first

    second, first = asyncio.run(scenario())
    assert_error(second, 503, "busy")
    assert second.headers["retry-after"]
    assert first.text == "done"


def test_a_slow_upload_gets_408():
    boundary = "slowBOUNDARY"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'

    sent_whole_body = []

    async def slow_body():
        yield head.encode() + encode()[:50]
        await asyncio.sleep(2)
        sent_whole_body.append(True)
        yield encode()[50:] + f"\r\n--{boundary}--\r\n".encode()

    async def scenario():
        app = create_app(ServeSettings(request_timeout_s=0.2), restorers={"slow": SlowRestorer()})
        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        async with _async_client(app) as client:
            return await client.post("/v1/restore", content=slow_body(), headers=headers)

    response = asyncio.run(scenario())
    assert_error(response, 408, "upload took longer")
    assert not sent_whole_body  # answered while the client was still stalling, not after it finished
