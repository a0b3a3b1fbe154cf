"""Screenshots of the web page after a restore, for the docs: a desktop one and a phone-sized one.

    python benchmarks/serve_screenshot.py [--model NAME|PATH] [--input PICTURE] [--out docs/serve-page.png]

Serves the model on a free loopback port (in this process), opens the page in headless Debian Chromium through
Playwright, uploads the picture (default: a small synthetic JPEG), waits for the result and saves the shots
(`--out` and the same name with `-phone`). Without --model: the shipped default model, else a placeholder that
upscales bicubically (see `placeholder_model`).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
VIEWPORTS = {"": {"width": 1280, "height": 900}, "-phone": {"width": 390, "height": 844}}


def synthetic_picture(path: Path) -> Path:
    """A small, slightly blurred, heavily compressed landscape: what a restoration model is for."""
    w, h = 160, 112
    image = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(image)
    for y in range(h):  # sky
        t = y / h
        draw.line([(0, y), (w, y)], fill=(int(90 + 100 * t), int(150 + 70 * t), int(230 - 30 * t)))
    draw.ellipse([112, 12, 140, 40], fill=(255, 214, 90))
    draw.polygon(
        [(0, 80), (40, 50), (75, 72), (110, 46), (160, 78), (160, 112), (0, 112)], fill=(70, 120, 70)
    )
    draw.polygon([(0, 96), (60, 78), (160, 100), (160, 112), (0, 112)], fill=(45, 90, 50))
    for x in range(8, 160, 22):  # a fence
        draw.rectangle([x, 86, x + 3, 104], fill=(120, 85, 60))
    draw.line([(0, 92), (160, 92)], fill=(120, 85, 60), width=2)
    draw.text((8, 8), "decrappify", fill=(255, 255, 255))
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    image.save(path, "JPEG", quality=25)
    return path


def placeholder_model(folder: Path) -> Path:
    """Until a trained model ships: a compact x4 U-Net whose residual head is zeroed, so its output is exactly
    the bicubic upscale; honest about what it is (its name says so) and free of an untrained net's colour cast."""
    import torch

    from decrappify.nn.models import create_model
    from decrappify.weights import save_model

    config = {"arch": "compact", "scale": 4, "widths": [8, 8, 8], "blocks": [1, 1, 1]}
    model = create_model(config)
    with torch.no_grad():
        model.head.conv.weight.zero_()
        model.head.conv.bias.zero_()
    info = {"name": "placeholder-bicubic-x4", "task": "restore", "scale": 4}
    return save_model(model, folder / "placeholder-bicubic-x4.safetensors", config, info)


def pick_model(requested: str | None, folder: Path) -> str:
    if requested:
        return requested
    from decrappify.inference.zoo import DEFAULT_MODEL, list_models

    names = [entry.name for entry in list_models()]
    return DEFAULT_MODEL if DEFAULT_MODEL in names else str(placeholder_model(folder))


def start_server(model: str):
    import uvicorn

    from decrappify.serve import ServeSettings, create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(ServeSettings(models=(model,), device="cpu"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def shoot(url: str, picture: Path, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for suffix, viewport in VIEWPORTS.items():
            page = browser.new_page(viewport=viewport, device_scale_factor=1)
            page.goto(url)
            expect(page.locator("#model")).to_be_enabled(timeout=20_000)
            page.set_input_files("#file", str(picture))
            page.click("#go")
            expect(page.locator("#result")).to_be_visible(timeout=120_000)
            page.locator("#slider").fill("50")
            page.locator("#slider").blur()
            target = out.with_name(f"{out.stem}{suffix}{out.suffix}")
            page.screenshot(path=str(target), full_page=True)
            print(f"wrote {target}")
            page.close()
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="model name or file (default: the shipped default, else a bicubic placeholder)"
    )
    parser.add_argument("--input", type=Path, help="picture to upload (default: a synthetic JPEG)")
    parser.add_argument("--out", type=Path, default=Path("docs/serve-page.png"), help="desktop shot (PNG)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve-shot-") as folder:
        model = pick_model(args.model, Path(folder))
        picture = args.input or synthetic_picture(Path(folder) / "landscape.jpg")
        server, thread, url = start_server(model)
        try:
            shoot(url, picture, args.out)
        finally:
            server.should_exit = True
            thread.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
