"""Bounded work off the event loop: `workers` restorations at once, `queue_size` more waiting, the rest refused.

Restorations run in a thread pool (PyTorch, Pillow and numpy release the GIL while they compute), so the event
loop keeps answering /healthz and new requests while a model works. A request that times out stops waiting at
once; a job that has not started is cancelled, and one that has started runs to its end while still counting
against the limit, so the number of pictures in memory never exceeds `workers + queue_size`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Weight of the newest job in the running average of job durations that `Retry-After` is estimated from.
_EWMA_WEIGHT = 0.3


class PoolFull(Exception):
    """Every worker is busy and the queue is full; `retry_after_s` estimates when a slot frees up."""

    def __init__(self, pending: int, retry_after_s: int):
        super().__init__(f"{pending} restorations running or waiting")
        self.pending = pending
        self.retry_after_s = retry_after_s


class InferencePool:
    """A fixed thread pool with admission control; see the module docstring."""

    def __init__(self, workers: int, queue_size: int):
        self.workers = workers
        self.queue_size = queue_size
        self._executor = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="decrappify-restore"
        )
        self._lock = threading.Lock()
        self._pending = 0  # admitted jobs not finished yet (queued + running), including abandoned ones
        self._running = 0
        self._mean_seconds: float | None = None

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return max(0, self._pending - self._running)

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the queue ahead divided among the workers, at least 1."""
        mean = self._mean_seconds or 1.0
        return max(1, math.ceil(mean * (self._pending + 1) / self.workers))

    async def run(self, job: Callable[[], T], timeout_s: float) -> T:
        """Run `job` in a worker and return its result; `PoolFull` when full, `TimeoutError` past `timeout_s`
        (counted from admission, so it covers the wait in the queue), and the job's own exceptions."""
        future = self._submit(job)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        finally:
            future.cancel()  # no effect once the job has started or finished

    def submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Admit `job` (`PoolFull` when full) and return its future without waiting: for work that outlives the
        request that started it (the service's video jobs)."""
        return self._submit(job)

    def _submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._pending >= self.workers + self.queue_size:
                raise PoolFull(self._pending, self.retry_after_s())
            self._pending += 1
        try:
            future = self._executor.submit(self._timed, job)
        except RuntimeError:  # shut down
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    def _timed(self, job: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
        start = time.perf_counter()
        try:
            return job()
        finally:
            seconds = time.perf_counter() - start
            with self._lock:
                self._running -= 1
                old = self._mean_seconds
                self._mean_seconds = seconds if old is None else old + _EWMA_WEIGHT * (seconds - old)

    def _release(self, _: object) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        """Cancel queued jobs; running ones finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
