"""The service's video jobs: an uploaded clip is restored in the background; the client polls, then downloads.

A clip takes minutes, far longer than a request may wait, so `POST /v1/jobs` only checks the upload (a video
this FFmpeg reads, within the duration, frame, size and output limits) and queues a job: the answer is the
job's id. The job runs `inference.video.restore_video` in its own bounded pool (`serve.queue.InferencePool`:
`video_workers` at once, `video_queue` more waiting, then 503), separate from the pictures' so that one clip
does not hold up every picture. `GET /v1/jobs/ID` reports its progress (frames, frames/s, ETA), `GET
/v1/jobs/ID/result` gives the restored clip, `DELETE /v1/jobs/ID` cancels it and deletes its files.

Each job lives in its own folder under one temporary folder of the service; the upload is deleted when the job
ends, the result `video_result_ttl_s` after that (or at shutdown). Job ids are 128-bit random: only the client
that made a job can find it.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from decrappify.errors import ConfigError, DecrappifyError, InputError
from decrappify.inference.restorer import Restorer
from decrappify.inference.video import VideoCancelled, VideoOptions, output_frame_size, restore_video
from decrappify.io.video import VideoInfo, is_video_path, probe_video
from decrappify.io.video_encode import output_suffix
from decrappify.serve.errors import ApiError
from decrappify.serve.job import download_name
from decrappify.serve.queue import InferencePool, PoolFull
from decrappify.serve.settings import ServeSettings

log = logging.getLogger(__name__)

MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
               ".webm": "video/webm"}  # fmt: skip
#: Finished jobs kept at most (their results on disk); the oldest finished go first.
MAX_KEPT_JOBS = 64


@dataclass
class VideoJob:
    """One clip's restoration and what the client may know of it (`public`)."""

    id: str
    model: str
    filename: str
    folder: Path
    source: Path
    target: Path
    options: VideoOptions
    info: VideoInfo
    output_size: tuple[int, int] = (0, 0)  # (width, height) of the restored frames, stored orientation
    status: str = "queued"  # queued, running, done, failed, cancelled
    frames_done: int = 0
    frames_total: int | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None
    deleted: bool = False

    @property
    def result_name(self) -> str:
        return download_name(self.filename, self.model, self.target.suffix)

    def public(self) -> dict[str, Any]:
        """The job as JSON: status, progress (frames, frames/s, ETA in seconds), and its result once done."""
        elapsed = (self.finished or time.monotonic()) - self.started if self.started else 0.0
        rate = self.frames_done / elapsed if elapsed > 0 and self.frames_done else None
        total = self.frames_total
        eta = (total - self.frames_done) / rate if rate and total and self.status == "running" else None
        info = self.info
        body: dict[str, Any] = {
            "id": self.id, "status": self.status, "model": self.model,
            "frames_done": self.frames_done, "frames_total": total,
            "progress": round(self.frames_done / total, 4) if total else None,
            "frames_per_second": round(rate, 3) if rate else None,
            "eta_s": round(eta, 1) if eta is not None else None, "elapsed_s": round(elapsed, 1),
            "input": {"name": self.filename, "width": info.width, "height": info.height, "fps": float(info.fps),
                      "frames": info.expected_frames, "duration_s": round(info.duration_s, 3),
                      "rotation": info.rotation, "audio": [track.codec for track in info.audio]},
            "output": {"width": self.output_size[0], "height": self.output_size[1]},
            "error": self.error, "status_url": f"/v1/jobs/{self.id}",
        }  # fmt: skip
        if self.status == "done":
            body["result"] = {"url": f"/v1/jobs/{self.id}/result", "filename": self.result_name,
                              "media_type": MEDIA_TYPES.get(self.target.suffix, "application/octet-stream"),
                              "bytes": self.target.stat().st_size if self.target.is_file() else None}  # fmt: skip
        return body


class VideoJobs:
    """The jobs of one service instance (see the module docstring); thread-safe."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.pool = InferencePool(settings.video_workers, settings.video_queue)
        self.jobs: dict[str, VideoJob] = {}
        self.lock = threading.Lock()
        self._root: Path | None = None  # made at the first job

    @property
    def root(self) -> Path:
        with self.lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="decrappify-jobs-"))
            return self._root

    def limits(self) -> dict[str, Any]:
        """The documented limits, as /v1/models reports them."""
        s = self.settings
        return {"max_video_bytes": s.max_video_bytes, "max_video_seconds": s.max_video_seconds,
                "max_video_frames": s.max_video_frames, "max_video_pixels": s.max_video_pixels,
                "video_result_ttl_s": s.video_result_ttl_s}  # fmt: skip

    def create(
        self, restorer: Restorer, model: str, upload: BinaryIO, filename: str, options: VideoOptions
    ) -> VideoJob:
        """Check an upload and queue its job (blocking: run it off the event loop). `ApiError` 400 (not a video
        this service reads), 413 (over a limit), 503 (the queue is full)."""
        self.expire()
        job_id = secrets.token_urlsafe(16)
        folder = self.root / job_id
        folder.mkdir()
        try:
            suffix = Path(filename).suffix.lower() if is_video_path(filename) else ".video"
            source = folder / f"upload{suffix}"
            upload.seek(0)
            with source.open("wb") as file:
                shutil.copyfileobj(upload, file)
            info = self._inspect(source, restorer, options)
            target = folder / f"restored{output_suffix(Path(filename or 'clip.mp4'))}"
            job = VideoJob(job_id, model, filename or "video", folder, source, target, options, info,
                           output_frame_size(restorer, info, options), frames_total=info.expected_frames)  # fmt: skip
            try:
                job.future = self.pool.submit(lambda: self._run(job, restorer))
            except PoolFull as full:
                message = f"busy: {full.pending} video jobs running or waiting; retry later"
                raise ApiError(503, message, {"Retry-After": str(max(30, full.retry_after_s))}) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self.lock:
            self.jobs[job_id] = job
        log.info("video job %s: %s, %s", job_id, info.describe(), model)
        return job

    def _inspect(self, source: Path, restorer: Restorer, options: VideoOptions) -> VideoInfo:
        s = self.settings
        try:
            info = probe_video(source)
        except InputError as error:
            raise ApiError(400, f"not a video this server reads: {error.reason}") from None
        except ConfigError as error:  # PyAV missing
            raise ApiError(501, str(error)) from None
        frames = info.expected_frames or 0
        problems = [
            (info.duration_s > s.max_video_seconds,
             f"{info.duration_s:.1f} s long, the limit is {s.max_video_seconds:g} s"),
            (frames > s.max_video_frames, f"{frames} frames, the limit is {s.max_video_frames}"),
            (info.width * info.height > s.max_video_pixels,
             f"{info.width}x{info.height} frames, the limit is {s.max_video_pixels} pixels a frame"),
        ]  # fmt: skip
        for too_much, reason in problems:
            if too_much:
                raise ApiError(413, f"video too large: {reason}")
        width, height = output_frame_size(restorer, info, options)
        if width * height > s.max_output_pixels:
            raise ApiError(413, f"video too large for this model: its frames would become {width}x{height}, "
                                f"{width * height} pixels; the limit is {s.max_output_pixels}")  # fmt: skip
        return info

    def _run(self, job: VideoJob, restorer: Restorer) -> None:
        """The job, in a worker thread: its status says how it ended, whatever happens."""
        job.status, job.started = "running", time.monotonic()
        deadline = job.started + self.settings.video_timeout_s

        def on_progress(done: int, total: int | None) -> None:
            job.frames_done, job.frames_total = done, total or job.frames_total
            if time.monotonic() > deadline:
                job.error = f"timed out after {self.settings.video_timeout_s:g} s"
                job.cancel.set()

        try:
            restore_video(restorer, job.source, job.target, options=job.options, on_progress=on_progress,
                          cancel=job.cancel, max_output_pixels=self.settings.max_output_pixels)  # fmt: skip
            job.status = "done"
        except VideoCancelled:
            job.status = "failed" if job.error else "cancelled"
        except InputError as error:
            job.status, job.error = "failed", f"cannot restore this video: {error.reason}"
        except DecrappifyError as error:
            log.error("video job %s failed: %s", job.id, error, exc_info=error)
            job.status, job.error = "failed", "restoration failed"
        except Exception as error:  # noqa: BLE001 - a bug: logged; the job says it failed, the service goes on
            log.error("video job %s: internal error", job.id, exc_info=error)
            job.status, job.error = "failed", "internal error"
        finally:
            job.finished = time.monotonic()
            job.source.unlink(missing_ok=True)
            if job.deleted:
                shutil.rmtree(job.folder, ignore_errors=True)

    def get(self, job_id: str) -> VideoJob:
        """The job, or `ApiError` 404 (unknown, expired or deleted)."""
        self.expire()
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no video job '{job_id[:40]}': unknown, expired or deleted")
        return job

    def delete(self, job_id: str) -> VideoJob:
        """Cancel the job (a queued one never starts; a running one stops after its frame) and delete its
        files; it is gone from the table at once."""
        job = self.get(job_id)
        with self.lock:
            self.jobs.pop(job_id, None)
        job.deleted = True
        job.cancel.set()
        if job.future is not None and job.future.cancel():  # it had not started: it never will
            job.status, job.finished = "cancelled", time.monotonic()
        if job.finished is not None:  # else it is running: the worker removes the folder when it stops
            shutil.rmtree(job.folder, ignore_errors=True)
        return job

    def expire(self) -> None:
        """Remove finished jobs older than the time to live, and the oldest finished beyond `MAX_KEPT_JOBS`."""
        now = time.monotonic()
        with self.lock:
            finished = sorted((job for job in self.jobs.values() if job.finished is not None),
                              key=lambda job: job.finished)  # fmt: skip
            extra = max(0, len(self.jobs) - MAX_KEPT_JOBS)
            old = [job for job in finished if now - job.finished > self.settings.video_result_ttl_s]
            gone = {job.id: job for job in [*old, *finished[:extra]]}
            for job_id in gone:
                self.jobs.pop(job_id, None)
        for job in gone.values():
            shutil.rmtree(job.folder, ignore_errors=True)

    def shutdown(self) -> None:
        """Cancel every job and remove every file."""
        with self.lock:
            jobs, self.jobs = list(self.jobs.values()), {}
        for job in jobs:
            job.cancel.set()
        self.pool.shutdown()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
