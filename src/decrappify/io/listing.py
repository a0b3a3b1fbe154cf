"""Finding the image files in a folder tree: the one walk that training, evaluation and batch jobs share.

Hidden files and folders are skipped (`.git`, the `._x.jpg` resource forks macOS leaves on shared drives): they
are never pictures the user meant, and a fork with an image suffix would fail to decode in the middle of a run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from decrappify.errors import InputError
from decrappify.io.images import is_image_path

log = logging.getLogger(__name__)


def is_hidden(relative: Path) -> bool:
    """Whether any part of a relative path is a hidden name (a leading dot)."""
    return any(part.startswith(".") and part not in (".", "..") for part in relative.parts)


def walk_images(root: str | Path) -> list[Path]:
    """Image files under `root` (by suffix), depth first in sorted order, skipping hidden files and folders."""
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root, onerror=_warn_unreadable):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            file = Path(folder) / name
            if not name.startswith(".") and is_image_path(file) and file.is_file():
                found.append(file)
    return found


def images_in_folder(folder: str | Path) -> list[tuple[Path, str]]:
    """Every image under `folder` as (path, posix path relative to it), sorted by the relative path.

    `InputError` naming the folder when it is not a folder or holds no image: a data set that silently came out
    empty would train or score nothing.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "not a folder of images")
    found = [(path, path.relative_to(root).as_posix()) for path in walk_images(root)]
    if not found:
        raise InputError(root, "no images found (looked for image files in this folder and below)")
    return sorted(found, key=lambda item: item[1])


def _warn_unreadable(error: OSError) -> None:
    log.warning("%s: cannot read this folder (%s); skipped", error.filename, error.strerror)
