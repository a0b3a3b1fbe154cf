"""A video restoration's work in progress: the record of what is done, and where finished frames go.

`Progress` is `progress.json` (the run's identity and what is finished), `SegmentSink` writes encoded segments
into a work folder (`restore_video`), `FrameSink` PNG frames into a folder (`restore_video_frames`);
`save_state` / `load_state` keep the temporal smoother's state beside them, so a resumed run goes on exactly.
The layout is in docs/architecture.md ("Video progress folder").
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from decrappify.errors import OutputError
from decrappify.inference.temporal import SmootherState
from decrappify.io.atomic import atomic_write_bytes, atomic_write_text
from decrappify.io.images import Picture, write_image
from decrappify.io.video import Frame, VideoInfo
from decrappify.io.video_encode import EncodeSpec, SegmentWriter

log = logging.getLogger(__name__)

MANIFEST = "progress.json"
STATE = "smoother.npz"
#: Frames between two saves of the record when frames are written as pictures.
FRAMES_PER_SAVE = 24


class Progress:
    """`progress.json`: the identity of the run and what is finished (frames, segments, timestamps)."""

    def __init__(self, path: Path, identity: dict[str, Any], record: dict[str, Any] | None):
        self.path, self.identity = path, identity
        record = record or {}
        self.done: int = int(record.get("done", 0))
        self.segments: list[dict[str, Any]] = list(record.get("segments", []))
        self.pts: list[int] = list(record.get("pts", []))

    @classmethod
    def open(cls, path: Path, identity: dict[str, Any], overwrite: bool, *, folder_is_work: bool = True) -> Progress:
        """Continue the run recorded at `path` (a work folder's `progress.json`, or the file itself), or start
        a new one; `OutputError` for a recorded run with another identity, unless `overwrite`."""
        manifest = path / MANIFEST if folder_is_work else path
        record = None
        if manifest.is_file():
            try:
                record = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = None  # a damaged record: nothing in it can be trusted
            if record is not None and record.get("identity") != json.loads(json.dumps(identity)):
                if not overwrite:
                    raise OutputError(
                        path,
                        "holds an interrupted run with other options or another source; rerun with the same "
                        "options to continue it, or --overwrite to start over",
                    )
                record = None
        if record is None and folder_is_work and path.exists():
            shutil.rmtree(path)
        if folder_is_work:
            path.mkdir(parents=True, exist_ok=True)
        progress = cls(manifest, identity, record)
        if progress.done:
            log.info("resuming after frame %d (%s)", progress.done, path)
        return progress

    def save(self) -> None:
        record = {"identity": self.identity, "done": self.done, "segments": self.segments, "pts": self.pts}
        atomic_write_text(self.path, json.dumps(record) + "\n", overwrite=True)


class SegmentSink:
    """Frames into encoded segments; a segment closes after so many frames or seconds, and at a stop."""

    def __init__(self, work: Path, spec: EncodeSpec, progress: Progress, segment_frames: int, segment_seconds: float):
        self.work, self.spec, self.progress = work, spec, progress
        self.segment_frames, self.segment_seconds = segment_frames, segment_seconds
        self.writer: SegmentWriter | None = None
        self.started = 0.0
        self.state_path = work / STATE
        for leftover in work.glob("*.part"):
            leftover.unlink(missing_ok=True)

    def write(self, frame: Frame, rgb: np.ndarray) -> None:
        if self.writer is None:
            name = f"segment-{len(self.progress.segments):05d}.nut"
            self.writer, self.started = SegmentWriter(self.work / name, self.spec), time.monotonic()
        self.writer.write(rgb, frame.pts)

    def due(self) -> bool:
        return self.writer is not None and (
            self.writer.frames >= self.segment_frames or time.monotonic() - self.started >= self.segment_seconds
        )

    def checkpoint(self, done: int, state: SmootherState | None) -> None:
        """Close the open segment and record it (with the frame count and the smoother's state)."""
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            path = writer.close()
        except BaseException:
            writer.abort()
            raise
        self.progress.segments.append({"file": path.name, "frames": writer.frames, "timestamps": writer.timestamps})
        self.progress.done = done
        save_state(self.state_path, state, done)
        self.progress.save()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


class FrameSink:
    """Frames into PNG files, in the display orientation; the record is saved every so many frames."""

    def __init__(self, folder: Path, info: VideoInfo, progress: Progress):
        self.folder, self.progress = folder, progress
        self.turns = (info.rotation // 90) % 4
        self.bit_depth = 16 if info.bit_depth > 8 else 8
        self.state_path = folder / f".{STATE}"
        self.pending = 0
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame, rgb: np.ndarray) -> None:
        values = np.rot90(rgb, self.turns) if self.turns else rgb
        top = 255.0 if values.dtype == np.uint8 else 65535.0
        picture = Picture(np.ascontiguousarray(values, dtype=np.float32) / np.float32(top), bit_depth=self.bit_depth)
        write_image(picture, self.folder / f"frame_{frame.index + 1:06d}.png", overwrite=True)
        self.progress.pts.append(frame.pts)
        self.pending += 1

    def due(self) -> bool:
        return self.pending >= FRAMES_PER_SAVE

    def checkpoint(self, done: int, state: SmootherState | None) -> None:
        self.pending = 0
        self.progress.done = done
        save_state(self.state_path, state, done)
        self.progress.save()

    def abort(self) -> None:
        pass


def save_state(path: Path, state: SmootherState | None, done: int) -> None:
    if state is None:
        return
    buffer = io.BytesIO()
    np.savez(buffer, grey=state.grey, output=state.output.astype(np.float16), done=np.int64(done))
    atomic_write_bytes(path, buffer.getvalue(), overwrite=True)


def load_state(path: Path, done: int) -> SmootherState | None:
    """The smoother's state saved after frame `done`, or None (it then restarts: one frame unsmoothed)."""
    try:
        with np.load(path) as data:
            if int(data["done"]) != done:
                return None
            return SmootherState(data["grey"], data["output"].astype(np.float32))
    except (OSError, ValueError, KeyError):
        return None
