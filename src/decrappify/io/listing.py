"""Finding the image files in a folder tree: the one walk that training, evaluation and batch jobs share.

Hidden files and folders are skipped (`.git`, the `._x.jpg` resource forks macOS leaves on shared drives): they
are never pictures the user meant, and a fork with an image suffix would fail to decode in the middle of a run.
A symbolic link with an image name whose target is missing or loops is not skipped in silence: it is a picture
the user meant and will not get, so `list_images` returns it for the caller to report.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from decrappify.errors import InputError
from decrappify.io.images import is_image_path

log = logging.getLogger(__name__)


def is_hidden(relative: Path) -> bool:
    """Whether any part of a relative path is a hidden name (a leading dot)."""
    return any(part.startswith(".") and part not in (".", "..") for part in relative.parts)


@dataclass
class ImageListing:
    """What a folder walk found, in walk order: image files, and the image-named links that lead nowhere."""

    paths: list[Path] = field(default_factory=list)
    broken_links: dict[Path, str] = field(default_factory=dict)  # link -> why it leads to no file

    @property
    def images(self) -> list[Path]:
        return [path for path in self.paths if path not in self.broken_links]


def list_images(root: str | Path) -> ImageListing:
    """Image files under `root` (by suffix), depth first in sorted order, skipping hidden files and folders;
    dangling or looping symbolic links with an image suffix are listed too, with the reason they are broken."""
    listing = ImageListing()
    for folder, subfolders, files in os.walk(root, onerror=_warn_unreadable):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            file = Path(folder) / name
            if name.startswith(".") or not is_image_path(file):
                continue
            if not file.is_file():
                reason = broken_link_reason(file)
                if reason is None:
                    continue  # a socket, a device: not a picture anyone meant
                listing.broken_links[file] = reason
            listing.paths.append(file)
    return listing


def walk_images(root: str | Path) -> list[Path]:
    """The image files of `list_images`; each broken link is logged as a warning, so it is never skipped unseen."""
    listing = list_images(root)
    for link, reason in listing.broken_links.items():
        log.warning("%s: %s; skipped", link, reason)
    return listing.images


def broken_link_reason(path: Path) -> str | None:
    """Why a symbolic link leads to no file (its target is missing, or it loops), or None when it is not a
    symbolic link or leads somewhere."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        if error.errno == errno.ENOENT:
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        return f"cannot follow symbolic link ({error.strerror})"
    return None


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
