"""Writing files so that a reader never sees half of one: every file decrappify writes goes through here.

A file is written under a unique hidden name in its target folder (`.NAME.XXXXXXXX.tmp`), flushed to disk, then
moved over the target in one rename. The temporary gets the permissions of any other new file (0666 less the
umask; `tempfile.mkstemp` would give 0600), so a model file, a report and a picture are all readable alike. The
temporary is removed when the write fails; a process killed mid-write leaves it behind, and
`remove_stale_temporaries` clears such leftovers when the next run starts in that folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from decrappify.errors import OutputError

log = logging.getLogger(__name__)

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
_ATTEMPTS = 100


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *, overwrite: bool = True) -> Path:
    """Call `write(file)` on a fresh temporary beside `path`, then move it into place.

    Without `overwrite`, a file already at `path` (or one that appears while writing) raises `OutputError` and
    is left untouched. Any `OSError` becomes an `OutputError` naming `path`; other exceptions pass through. The
    temporary never outlives a failure.
    """

    def fill(temp: Path) -> None:
        with open(temp, "wb") as file:
            write(file)

    return atomic_write_path(path, fill, overwrite=overwrite)


def atomic_write_path(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """`atomic_write` for writers that need a file name, not a file object (FFmpeg reopens an MP4 it writes to
    move its index to the front): `write(temporary)` fills a fresh temporary beside `path`, which is then
    flushed and moved into place, with the same guarantees."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(path, f"cannot create its folder: {_reason(exc)}") from exc
    temp, fd = _open_temp(path)
    os.close(fd)
    try:
        write(temp)
        with open(temp, "rb+") as file:
            os.fsync(file.fileno())
        _publish(temp, path, overwrite)
    except OSError as exc:
        _remove_quietly(temp)
        raise OutputError(path, f"cannot write: {_reason(exc)}") from exc
    except BaseException:
        _remove_quietly(temp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True) -> Path:
    """`data` to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda file: file.write(data), overwrite=overwrite)


def atomic_write_text(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """UTF-8 `text` to `path` atomically (see `atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside `path` to fill; on success it replaces `path` whole.

    The folder being replaced is first renamed to `.NAME.old`, so a crash between the two renames leaves one
    complete copy under one of the two names (`previous_folder` finds it). On failure the temporary is removed
    and `path` is untouched.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = _make_temp_folder(path)
    except OSError as exc:
        raise OutputError(path, f"cannot write: {_reason(exc)}") from exc
    try:
        yield temp
        _fsync_folder(temp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(path, f"cannot write: {_reason(exc)}") from exc
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def previous_folder(path: str | Path) -> Path:
    """Where `atomic_folder` keeps the replaced copy of `path` between its two renames."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries (files or folders) that a killed writer left in `folder`; returns what went.

    Only names this module makes are touched. Call it when a run that owns the folder starts, never while
    another writer may be at work there.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if not _TEMP_NAME.match(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _remove_quietly(entry)
        if not entry.exists():
            removed.append(entry)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", folder, len(removed))
    return removed


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _open_temp(path: Path) -> tuple[Path, int]:
    """A fresh hidden file beside `path`, created exclusively with mode 0666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_ATTEMPTS):
        temp = _temp_name(path)
        try:
            return temp, os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(path, f"cannot write in its folder: {_reason(exc)}") from exc
    raise OutputError(path, "cannot create a temporary file beside it")


def _make_temp_folder(path: Path) -> Path:
    """A fresh hidden folder beside `path`, mode 0777 less the umask (`mkdtemp` would give 0700)."""
    for _ in range(_ATTEMPTS):
        temp = _temp_name(path)
        try:
            temp.mkdir(0o777)
            return temp
        except FileExistsError:
            continue
    raise OutputError(path, "cannot create a temporary folder beside it")


def _publish(temp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished file into place; without `overwrite`, a file that appeared meanwhile still wins."""
    if overwrite:
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # fails if `path` exists, atomically, unlike a check followed by a rename
    except FileExistsError:
        raise OutputError(path, "already exists (use --overwrite to replace it)") from None
    except OSError:  # this file system has no hard links
        if path.exists():
            raise OutputError(path, "already exists (use --overwrite to replace it)") from None
        os.replace(temp, path)
        return
    _remove_quietly(temp)  # the file is in place; a stray temporary name is not worth an error


def _fsync_folder(folder: Path) -> None:
    """Flush the files in `folder` (written by other libraries, e.g. torch.save) before it is published."""
    for entry in folder.iterdir():
        if entry.is_file():
            with contextlib.suppress(OSError), open(entry, "rb+") as file:
                os.fsync(file.fileno())


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
