"""Load and abuse check of `decrappify serve`: N honest clients plus a stream of bad uploads, on loopback only.

    python benchmarks/serve_load.py --seconds 20 --clients 8 [--model NAME|PATH] [--json report.json]

Starts the server itself (`python -m decrappify serve` on 127.0.0.1, a free port, a token), runs for a bounded
time, then reports: requests served, rejections by status, latency percentiles, the /healthz latency while the
model works, the server's peak memory (VmHWM), and whether it stayed up. Exit status 1 when a check fails: a 5xx
other than 503, a bad upload answered with the wrong status, a transport error, or a dead server.

Without --model it serves the shipped default model when one is installed, else a tiny untrained model (which
measures the service, not restoration quality).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from decrappify.io.atomic import atomic_write_text

TOKEN = "load-test-token"
MAX_UPLOAD_MB = 2
MAX_PIXELS = 1_000_000


# ------------------------------------------------------------------------------------------------ payloads


def encode(size: tuple[int, int], fmt: str = "PNG", seed: int = 0) -> bytes:
    """A smooth synthetic picture (gradients plus a little noise) of `size`, encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x / max(w - 1, 1), y / max(h - 1, 1), 0.5 + 0.5 * np.sin((x + y) / 7.0)], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((rgb * 255).astype(np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, *, real: bool) -> bytes:
    """A PNG claiming width x height. `real`: a valid zlib stream of all those zero pixels (a few hundred kB that
    would decode to gigabytes); otherwise only the header and a token IDAT."""
    compressor = zlib.compressobj(9)
    if real:
        row = b"\0" * (1 + 3 * width)
        parts = [compressor.compress(row) for _ in range(height)]
        idat = b"".join(parts) + compressor.flush()
    else:
        idat = zlib.compress(b"\0" * 64)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Abuse:
    """One bad request and the statuses that are right for it."""

    name: str
    data: bytes
    media_type: str = "application/octet-stream"
    fields: dict = field(default_factory=dict)
    token: str | None = TOKEN
    expected: frozenset[int] = frozenset({400})


@functools.cache
def abuse_cases() -> tuple[Abuse, ...]:
    """The bad requests, built once (the real bomb takes a moment to compress)."""
    good = encode((48, 40))
    rng = np.random.default_rng(1)
    return (
        Abuse(
            "random bytes", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), expected=frozenset({400})
        ),
        Abuse("text as text/plain", b"just some text\n" * 20, "text/plain", expected=frozenset({415})),
        Abuse("pdf", b"%PDF-1.7\n" + b"0" * 2000, "application/pdf", expected=frozenset({415})),
        Abuse("gif", encode((16, 16), "GIF"), "image/gif", expected=frozenset({415})),
        # A truncated picture has a valid header: it is only found out when decoded, which needs a worker.
        Abuse("truncated png", good[: len(good) // 2], "image/png", expected=frozenset({400, 503})),
        Abuse(
            "decompression bomb", png_bomb(12_000, 12_000, real=True), "image/png", expected=frozenset({413})
        ),
        Abuse(
            "huge dimensions",
            png_bomb(1_000_000, 1_000_000, real=False),
            "image/png",
            expected=frozenset({413}),
        ),
        Abuse(
            "oversized upload",
            os.urandom(MAX_UPLOAD_MB * 1024 * 1024 + 4096),
            "image/png",
            expected=frozenset({413}),
        ),
        Abuse("wrong token", good, "image/png", token="not-the-token", expected=frozenset({401})),
        Abuse("missing token", good, "image/png", token=None, expected=frozenset({401})),
        Abuse("unknown model", good, "image/png", fields={"model": "nope"}, expected=frozenset({400})),
        Abuse("bad tile", good, "image/png", fields={"tile": "7"}, expected=frozenset({400})),
    )


# ------------------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_model(folder: Path) -> Path:
    import torch

    from decrappify.nn.models import create_model
    from decrappify.weights import save_model

    torch.manual_seed(0)
    config = {"arch": "compact", "scale": 4, "widths": [16, 16, 16], "blocks": [1, 1, 1]}
    info = {"name": "tiny-untrained-x4", "task": "restore", "scale": 4}
    return save_model(create_model(config), folder / "tiny-untrained-x4.safetensors", config, info)


def pick_model(requested: str | None, folder: Path) -> str:
    if requested:
        return requested
    from decrappify.inference.zoo import DEFAULT_MODEL, list_models

    names = [entry.name for entry in list_models()]
    return DEFAULT_MODEL if DEFAULT_MODEL in names else str(tiny_model(folder))


class Server:
    """`decrappify serve` in a child process, with its memory sampled while it runs."""

    def __init__(self, model: str, args: argparse.Namespace, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "decrappify", "-q", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--models", model, "--workers", str(args.workers), "--queue", str(args.queue), "--token", TOKEN,
            "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-pixels", str(MAX_PIXELS), "--timeout", str(args.timeout),
            "--device", "cpu",
        ]  # fmt: skip
        self.log = log_path.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.rss_samples: list[int] = []
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _status_kib(self, key: str) -> int | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def _sample(self) -> None:
        while self._sampling and self.process.poll() is None:
            rss = self._status_kib("VmRSS")
            if rss is not None:
                self.rss_samples.append(rss)
            time.sleep(0.1)

    def wait_ready(self, timeout_s: float = 120) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    self._sampler.start()
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer /healthz within {timeout_s:g} s")

    def peak_rss_mib(self) -> float | None:
        hwm = self._status_kib("VmHWM")
        return None if hwm is None else hwm / 1024

    def stop(self) -> None:
        self._sampling = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# ------------------------------------------------------------------------------------------------ clients


@dataclass
class Tally:
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)

    def record(self, kind: str, status: int | str, seconds: float) -> None:
        self.statuses[kind][status] += 1
        self.latencies[f"{kind} {status}"].append(seconds)
        if isinstance(status, int) and status >= 500 and status != 503:
            self.problems.append(f"{kind}: answered {status}")


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def honest_client(
    client: httpx.AsyncClient, payloads: list, deadline: float, tally: Tally, first: int
) -> None:
    """Sends good pictures back to back; after a 503 it waits a little (less than Retry-After: impatient)."""
    index = first
    while time.monotonic() < deadline:
        name, data, media_type, size = payloads[index % len(payloads)]
        index += 1
        start = time.perf_counter()
        try:
            files = {"image": (name, data, media_type)}
            response = await client.post("/v1/restore", files=files, headers=_headers(TOKEN))
        except httpx.HTTPError as error:
            tally.record("restore", type(error).__name__, time.perf_counter() - start)
            tally.problems.append(f"restore: transport error {type(error).__name__}: {error}")
            continue
        tally.record("restore", response.status_code, time.perf_counter() - start)
        if response.status_code == 200:
            if response.headers.get("x-decrappify-size") != size:
                tally.problems.append(
                    f"restore: size {response.headers.get('x-decrappify-size')}, expected {size}"
                )
        elif response.status_code == 503:
            await asyncio.sleep(0.1)
        else:
            tally.problems.append(
                f"restore: good picture answered {response.status_code}: {response.text[:120]}"
            )


async def abuser(
    client: httpx.AsyncClient, cases: list[Abuse], deadline: float, tally: Tally, pause: float
) -> None:
    """Cycles through the bad requests until the deadline, checking each status."""
    index = 0
    while time.monotonic() < deadline:
        case = cases[index % len(cases)]
        index += 1
        start = time.perf_counter()
        try:
            files = {"image": ("upload", case.data, case.media_type)}
            response = await client.post(
                "/v1/restore", files=files, data=case.fields, headers=_headers(case.token)
            )
            status: int | str = response.status_code
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as error:
            # The server may answer 413 and close before a client has finished sending a too-large body.
            status = "closed early" if case.name == "oversized upload" else type(error).__name__
        tally.record(case.name, status, time.perf_counter() - start)
        if status not in case.expected and status != "closed early":
            tally.problems.append(f"{case.name}: answered {status}, expected {sorted(case.expected)}")
        await asyncio.sleep(pause)


async def health_probe(client: httpx.AsyncClient, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            status: int | str = (await client.get("/healthz")).status_code
        except httpx.HTTPError as error:
            status = type(error).__name__
        tally.record("healthz", status, time.perf_counter() - start)
        if status != 200:
            tally.problems.append(f"healthz answered {status}")
        await asyncio.sleep(0.2)


def honest_payloads(scale: int) -> list:
    payloads = []
    for seed, (w, h) in enumerate([(64, 48), (96, 96), (128, 96), (80, 120)]):
        for fmt, media_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
            payloads.append(
                (f"p{seed}.{fmt.lower()}", encode((w, h), fmt, seed), media_type, f"{w * scale}x{h * scale}")
            )
    return payloads


async def run_load(url: str, args: argparse.Namespace, scale: int) -> Tally:
    tally = Tally()
    cases, payloads = abuse_cases(), honest_payloads(scale)
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    timeout = httpx.Timeout(args.timeout + 30)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        tasks = [honest_client(client, payloads, deadline, tally, i) for i in range(args.clients)]
        tasks.append(abuser(client, cases, deadline, tally, args.abuse_pause))
        tasks.append(health_probe(client, deadline, tally))
        await asyncio.gather(*tasks)
    return tally


def final_check(url: str, scale: int) -> tuple[bool, str]:
    """The server still answers /healthz and restores a picture (waiting out 503s for up to 60 s)."""
    try:
        if httpx.get(url + "/healthz", timeout=10).status_code != 200:
            return False, "/healthz did not answer 200"
        data = encode((32, 32))
        for _ in range(120):
            files = {"image": ("last.png", data, "image/png")}
            response = httpx.post(url + "/v1/restore", files=files, headers=_headers(TOKEN), timeout=120)
            if response.status_code != 503:
                break
            time.sleep(0.5)
        ok = (
            response.status_code == 200
            and response.headers.get("x-decrappify-size") == f"{32 * scale}x{32 * scale}"
        )
        return ok, f"final restore answered {response.status_code}"
    except httpx.HTTPError as error:
        return False, f"transport error {type(error).__name__}"


# ------------------------------------------------------------------------------------------------ report


def percentiles(values: list[float], unit: float = 1.0, digits: int = 3) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    pick = {p: ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] for p in (50, 95, 99)}
    parts = [f"p{p} {pick[p] * unit:.{digits}f}" for p in (50, 95, 99)] + [
        f"max {ordered[-1] * unit:.{digits}f}"
    ]
    return "  ".join(parts) + f"  (n={len(values)})"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{status}: {count}" for status, count in sorted(counter.items(), key=str)) or "none"


def _memory_line(server: Server) -> str:
    rss = [kib / 1024 for kib in server.rss_samples] or [float("nan")]
    peak = server.peak_rss_mib()
    return (
        f"server memory, MiB: RSS after start-up {rss[0]:.0f}, max sampled {max(rss):.0f}, at the end {rss[-1]:.0f}, "
        f"peak (VmHWM) {peak if peak is not None else float('nan'):.0f}"
    )


def report(tally: Tally, server: Server, info: dict, alive: bool, final: str) -> tuple[str, dict]:
    restores = tally.statuses["restore"]
    served = restores.get(200, 0)
    setup = (
        f"model: {info['model']}  workers {info['workers']}, queue {info['queue']}, {info['clients']} clients, "
        f"{info['seconds']:g} s; server ready in {info['startup_s']:.1f} s"
    )
    lines = [
        "decrappify serve: load and abuse check (loopback)",
        setup,
        f"good pictures: {sum(restores.values())} sent; {_counts(restores)}  ({served / info['seconds']:.1f} served/s)",
        f"latency of served restores, s: {percentiles(tally.latencies['restore 200'])}",
        f"latency of 503 answers, ms: {percentiles(tally.latencies['restore 503'], 1000, 1)}",
        f"/healthz while busy, ms: {percentiles(tally.latencies['healthz 200'], 1000, 1)}",
        "bad requests (case: statuses seen -> expected):",
    ]
    for case in abuse_cases():
        seen = _counts(tally.statuses.get(case.name, Counter()))
        lines.append(f"  {case.name:<20} {seen:<28} -> {'/'.join(map(str, sorted(case.expected)))}")
    everything = Counter()
    for counts in tally.statuses.values():
        everything.update(counts)
    bad_5xx = sum(
        n for status, n in everything.items() if isinstance(status, int) and status >= 500 and status != 503
    )
    lines += [
        f"all answers: {_counts(everything)}",
        f"5xx other than 503: {bad_5xx}",
        _memory_line(server),
        f"server alive at the end: {'yes' if alive else 'NO'} ({final})",
    ]
    ok = alive and not tally.problems and bad_5xx == 0
    if tally.problems:
        lines.append(f"problems ({len(tally.problems)}): " + "; ".join(sorted(set(tally.problems))[:10]))
    lines.append(f"RESULT: {'PASS' if ok else 'FAIL'}")
    summary = {
        **info,
        "served": served,
        "statuses": {kind: {str(k): v for k, v in counts.items()} for kind, counts in tally.statuses.items()},
        "restore_latency_s": sorted(tally.latencies["restore 200"]),
        "bad_5xx": bad_5xx,
        "peak_rss_mib": server.peak_rss_mib(),
        "rss_samples_mib": [
            kib / 1024 for kib in server.rss_samples[:: max(1, len(server.rss_samples) // 50)]
        ],
        "alive": alive,
        "problems": tally.problems,
        "ok": ok,
    }
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="how long the clients run (default 20)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent honest clients (default 8)")
    parser.add_argument(
        "--model", help="model name or file (default: shipped default, else a tiny untrained one)"
    )
    parser.add_argument("--workers", type=int, default=1, help="server --workers (default 1)")
    parser.add_argument("--queue", type=int, default=4, help="server --queue (default 4)")
    parser.add_argument("--timeout", type=float, default=30, help="server --timeout in seconds (default 30)")
    parser.add_argument(
        "--abuse-pause", type=float, default=0.05, help="seconds between bad requests (default 0.05)"
    )
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 < args.clients <= 256:
        parser.error("--seconds must be in (0, 600] and --clients in (0, 256]")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as folder:
        model = pick_model(args.model, Path(folder))
        server = Server(model, args, Path(folder) / "server.log")
        try:
            startup = server.wait_ready()
            scale = httpx.get(server.url + "/v1/models", headers=_headers(TOKEN)).json()["models"][0]["scale"]
            tally = asyncio.run(run_load(server.url, args, scale))
            alive_ok, final = final_check(server.url, scale)
            alive = alive_ok and server.process.poll() is None
            info = {"model": Path(model).name, "workers": args.workers, "queue": args.queue}
            info |= {"clients": args.clients, "seconds": args.seconds, "startup_s": startup}
            text, summary = report(tally, server, info, alive, final)
        finally:
            server.stop()
            log_tail = Path(folder, "server.log").read_text(errors="replace")[-3000:]
    print(text)
    if "Traceback" in log_tail:
        print("server log (tail):\n" + log_tail)
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
