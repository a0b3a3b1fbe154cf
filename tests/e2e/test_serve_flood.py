"""The service on a real socket: a slow-body flood does not lock out other uploads; slow headers are cut off;
query strings stay out of the access log.

Everything runs on 127.0.0.1 against a server started in a thread; every flood is bounded in clients and time
and stops by itself, and every socket has a timeout, so a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("uvicorn")
import httpx

from decrappify.serve import ServeSettings, create_app
from decrappify.serve.server import create_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: The default service: one worker, four waiting, so 20 uploads may be in progress at once.
SETTINGS = {"device": "cpu"}
FLOOD_CLIENTS = 21  # one more than the upload slots, as in issue 19
LEGITIMATE_UPLOADS = 5  # at once, fewer than the worker and the queue take
#: Hard stop for any flood: the test fails rather than waits if the server stops answering.
FLOOD_LIMIT_S = 30.0
#: What a flood client claims it will send; it sends one byte at a time instead.
CLAIMED_BYTES = 100_000


@contextlib.contextmanager
def running_server(app, **options) -> Iterator[int]:
    """Serve `app` on 127.0.0.1 (a free port) in a thread until the block ends; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = create_server(app, host="127.0.0.1", port=0, log_config=None, **options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        assert server.started, "the server did not start"
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def png_bytes(seed: int = 0) -> bytes:
    values = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    return buffer.getvalue()


def upload(port: int, seed: int) -> int:
    """One ordinary upload of a small PNG; its status."""
    files = {"image": ("a.png", png_bytes(seed), "image/png")}
    return httpx.post(f"http://127.0.0.1:{port}/v1/restore", files=files, timeout=20).status_code


class SlowBodyFlood:
    """`clients` threads that each send a complete header for a large upload, then its body one byte per
    `interval_s`, reconnecting whenever the server answers or closes, until `stop()` or `FLOOD_LIMIT_S`."""

    def __init__(self, port: int, clients: int, interval_s: float = 0.2):
        self.port, self.interval_s = port, interval_s
        self.deadline = time.monotonic() + FLOOD_LIMIT_S
        self.stopping = threading.Event()
        self.connections = 0
        self.answers: dict[int, int] = {}  # status the server answered a flood upload with -> count
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> SlowBodyFlood:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(5)

    def _running(self) -> bool:
        return not self.stopping.is_set() and time.monotonic() < self.deadline

    def _client(self) -> None:
        head = (
            f"POST /v1/restore HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {CLAIMED_BYTES}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n"
        ).encode()
        while self._running():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 2) as conn:
                with self.lock:
                    self.connections += 1
                conn.sendall(head)
                conn.settimeout(self.interval_s)
                while self._running():
                    try:
                        answer = conn.recv(4096)
                    except TimeoutError:
                        conn.sendall(b"a")  # still "uploading"
                        continue
                    if answer.startswith(b"HTTP/1.1 "):
                        status = int(answer[9:12])
                        with self.lock:
                            self.answers[status] = self.answers.get(status, 0) + 1
                    break  # answered or closed: connect again, as an attacker would
            time.sleep(0.01)


def test_a_slow_body_flood_does_not_lock_out_other_uploads(x4_model_file: Path):
    settings = ServeSettings(models=(str(x4_model_file),), **SETTINGS)
    app = create_app(settings)
    with running_server(app) as port, SlowBodyFlood(port, FLOOD_CLIENTS) as flood:
        time.sleep(1.5)  # the flood now holds every upload slot, long enough to show its rate
        with ThreadPoolExecutor(LEGITIMATE_UPLOADS) as pool:  # other users, uploading at the same time
            statuses = list(pool.map(lambda seed: upload(port, seed), range(LEGITIMATE_UPLOADS)))
    served = statuses.count(200)
    print(f"flood: {FLOOD_CLIENTS} clients, {flood.connections} connections, answers {flood.answers}; "
          f"legitimate uploads: {served} served, {len(statuses) - served} rejected ({statuses})")  # fmt: skip
    assert flood.connections >= FLOOD_CLIENTS  # the flood did run
    assert statuses == [200] * LEGITIMATE_UPLOADS


def test_connections_that_never_finish_their_headers_are_closed(x4_model_file: Path):
    settings = ServeSettings(models=(str(x4_model_file),), header_timeout_s=0.5, **SETTINGS)
    with running_server(create_app(settings)) as port:
        stalled = [socket.create_connection(("127.0.0.1", port), 5) for _ in range(5)]
        for connection in stalled:
            connection.sendall(b"POST /v1/restore HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: unfinished
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        for connection in stalled:
            connection.settimeout(10)  # a connection left open fails the test here instead of hanging it
            with connection:
                assert connection.recv(1) == b""  # closed by the server


def test_query_strings_stay_out_of_the_access_log(x4_model_file: Path, caplog):
    app = create_app(ServeSettings(models=(str(x4_model_file),), **SETTINGS))
    with caplog.at_level(logging.INFO, logger="uvicorn.access"), running_server(app) as port:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz?token=s3cret", timeout=5).status_code == 200
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert any("GET /healthz HTTP/1.1" in line for line in lines), lines
    assert not any("s3cret" in line for line in lines), lines
