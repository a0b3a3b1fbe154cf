"""The web page in a real headless Chromium: upload a picture, get the restored one back at the right size.

Needs Debian's `chromium` at /usr/bin/chromium (`.ci/install-browser`) and Playwright for Python (no
`playwright install`: the system browser is used). Skipped when either is missing, except in CI (`CI=true`), where
that is a failure, so that CI cannot pass without running it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path(os.environ.get("DECRAPPIFY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
SCALE = 4
TOKEN = "page-token"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI must run the browser test (run .ci/install-browser)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed")
    if not CHROMIUM.is_file():
        _unavailable(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def model_path(x4_model_file: Path) -> Path:
    return x4_model_file


def serve(settings) -> Iterator[str]:
    """Run the app with uvicorn on a free loopback port in a background thread; yields its base URL."""
    import uvicorn

    from decrappify.serve import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def base_url(model_path) -> Iterator[str]:
    from decrappify.serve import ServeSettings

    yield from serve(ServeSettings(models=(str(model_path),), device="cpu"))


@pytest.fixture(scope="module")
def token_url(model_path) -> Iterator[str]:
    from decrappify.serve import ServeSettings

    yield from serve(ServeSettings(models=(str(model_path),), device="cpu", token=TOKEN))


@pytest.fixture
def picture(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return path


def open_page(browser, url: str, viewport: dict[str, int]):
    page = browser.new_page(viewport=viewport)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console", lambda message: message.type == "error" and problems.append(f"console: {message.text}")
    )
    page.goto(url)
    return page, problems


def restore_through_page(page, picture: Path) -> dict:
    from playwright.sync_api import expect

    expect(page.locator("#model")).to_be_enabled(timeout=10_000)
    page.set_input_files("#file", str(picture))
    expect(page.locator("#file-name")).to_contain_text(picture.name)
    page.click("#go")
    expect(page.locator("#result")).to_be_visible(timeout=15_000)
    return page.evaluate(
        """() => {
            const after = document.getElementById('after'), before = document.getElementById('before');
            const link = document.getElementById('download');
            return {width: after.naturalWidth, height: after.naturalHeight, complete: after.complete,
                    beforeWidth: before.naturalWidth, href: link.href, download: link.download,
                    info: document.getElementById('info').textContent,
                    error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent};
        }"""
    )


def test_upload_through_the_page_shows_the_restored_picture(browser, base_url, picture):
    page, problems = open_page(browser, base_url, {"width": 390, "height": 844})  # a phone
    shown = restore_through_page(page, picture)
    assert shown["error"] == ""
    assert (shown["width"], shown["height"], shown["complete"]) == (24 * SCALE, 20 * SCALE, True)
    assert shown["beforeWidth"] == 24
    assert shown["href"].startswith("blob:") and shown["download"] == "small-tiny-x4.png"
    assert "24 × 20 → 96 × 80" in shown["info"]
    # The comparison slider moves the split between the two pictures.
    page.locator("#slider").fill("20")
    assert (
        page.evaluate("getComputedStyle(document.getElementById('compare')).getPropertyValue('--split')")
        == "20%"
    )
    # Nothing overflows a phone-sized screen sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert problems == []
    page.close()


def test_page_asks_for_the_token_and_then_works(browser, token_url, picture):
    from playwright.sync_api import expect

    page, problems = open_page(browser, token_url, {"width": 1024, "height": 768})
    expect(page.locator("#error")).to_contain_text("token", timeout=10_000)
    expect(page.locator("#token")).to_be_visible()
    page.fill("#token", TOKEN)
    page.locator("#token").dispatch_event("change")
    shown = restore_through_page(page, picture)
    assert (shown["width"], shown["height"]) == (24 * SCALE, 20 * SCALE)
    # The failed /v1/models call before the token was entered is the only error the console saw.
    assert all("401" in problem for problem in problems), problems
    page.close()


@pytest.fixture(scope="module")
def mask_url(tmp_path_factory) -> Iterator[str]:
    """A server with a same-size model and a text-mask model that finds text everywhere."""
    from decrappify.serve import ServeSettings
    from tests.conftest import save_tiny_model
    from tests.text_mask_models import save_constant_mask_model

    folder = tmp_path_factory.mktemp("mask-models")
    x1 = save_tiny_model(folder / "tiny-x1.safetensors", {"arch": "compact", "scale": 1, "widths": [8, 8, 8],
                                                         "blocks": [1, 1, 1]}, scale=1)  # fmt: skip
    masks = save_constant_mask_model(folder / "all-text.safetensors", text=True)
    yield from serve(ServeSettings(models=(str(x1),), mask_model=str(masks), device="cpu"))


def test_page_repairs_only_the_watermark_and_shows_the_mask(browser, mask_url, picture):
    from playwright.sync_api import expect

    page, problems = open_page(browser, mask_url, {"width": 1024, "height": 768})
    expect(page.locator("#only-masked-box")).to_be_visible(timeout=10_000)  # an x1 model and a text-mask model
    page.check("#only-masked")
    shown = restore_through_page(page, picture)
    assert shown["error"] == "" and (shown["width"], shown["height"]) == (24, 20)
    expect(page.locator("#mask")).to_be_visible(timeout=10_000)  # the text mask laid over the comparison
    assert page.evaluate("document.getElementById('mask').naturalWidth") == 24
    page.uncheck("#show-mask")
    expect(page.locator("#mask")).to_be_hidden()
    assert problems == []
    page.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from tests.video_clips import make_clip, require_av

    require_av()
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=6, size=(32, 24))


def test_a_video_becomes_a_job_whose_progress_the_page_shows(browser, base_url, clip):
    from playwright.sync_api import expect

    page, problems = open_page(browser, base_url, {"width": 390, "height": 844})
    polls: list[str] = []
    page.on("request", lambda request: "/v1/jobs/" in request.url and polls.append(request.url))
    expect(page.locator("#model")).to_be_enabled(timeout=10_000)
    page.set_input_files("#file", str(clip))
    expect(page.locator("#smoothing-box")).to_be_visible()  # a video: the temporal smoothing option appears
    expect(page.locator("#go")).to_have_text("Restore the video")
    page.click("#go")
    expect(page.locator("#video-result")).to_be_visible(timeout=60_000)
    shown = page.evaluate(
        """() => {
            const link = document.getElementById('video-download'), video = document.getElementById('video');
            return {href: link.href, download: link.download, src: video.src,
                    info: document.getElementById('video-info').textContent,
                    playable: video.canPlayType('video/mp4; codecs="avc1.64000b"'),
                    error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent};
        }"""
    )
    assert shown["error"] == ""
    assert shown["href"].startswith("blob:") and shown["src"] == shown["href"]
    assert shown["download"] == "clip-tiny-x4.mp4"
    assert "32 × 24 → 128 × 96 · 6 frames · tiny-x4" in shown["info"]
    assert any(url.endswith("/result") for url in polls) and len(polls) >= 2  # polled, then downloaded
    if shown["playable"]:  # a Chromium built with H.264 plays it: its frames have the restored size
        page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=10_000)
        assert page.evaluate("document.getElementById('video').videoWidth") in (128, 96)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert problems == []
    page.close()


@pytest.fixture(scope="module")
def pair_url(tmp_path_factory) -> Iterator[str]:
    """A server with a model whose file names a pair: the page shows the strength slider."""
    import torch

    from decrappify.nn.models import create_model
    from decrappify.serve import ServeSettings
    from decrappify.weights import save_model

    folder = tmp_path_factory.mktemp("pair")
    config = {"arch": "compact", "scale": SCALE, "widths": [8, 8, 8], "blocks": [1, 1, 1]}
    for seed, name, info in ((0, "soft", {"strength_pair": "sharp.safetensors"}), (1, "sharp", {})):
        torch.manual_seed(seed)
        save_model(create_model(config), folder / f"{name}.safetensors", config,
                   {"name": name, "task": "restore", "scale": SCALE, **info})  # fmt: skip
    yield from serve(ServeSettings(models=(str(folder / "soft.safetensors"),), device="cpu"))


def test_the_strength_slider_and_output_size(browser, pair_url, picture):
    from playwright.sync_api import expect

    page, problems = open_page(browser, pair_url, {"width": 1024, "height": 768})
    expect(page.locator("#strength-box")).to_be_visible(timeout=10_000)
    expect(page.locator("#strength-hint")).to_contain_text("1: sharp")
    page.locator("#strength").fill("0.5")
    expect(page.locator("#strength-value")).to_have_text("0.50")
    page.select_option("#outscale", "2")
    shown = restore_through_page(page, picture)
    assert shown["error"] == "" and (shown["width"], shown["height"]) == (48, 40)
    assert "soft+sharp@0.5" in shown["info"]
    assert problems == []
    page.close()
