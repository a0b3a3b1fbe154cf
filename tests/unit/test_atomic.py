"""One atomic writer for every file: unique temporaries, usual permissions, nothing left after a failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from decrappify.errors import OutputError
from decrappify.io.atomic import (
    atomic_folder,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    previous_folder,
    remove_stale_temporaries,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_written_file_gets_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
        (tmp_path / "plain.txt").write_text("hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "plain.txt") == 0o644


def test_replacing_and_refusing_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(OutputError, match="already exists"):
        atomic_write_bytes(target, b"three", overwrite=False)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


def test_a_failed_write_removes_its_temporary_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def disk_full(file) -> None:
        file.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"a\.bin: cannot write: No space left"):
        atomic_write(target, disk_full)

    def bug(file) -> None:
        file.write(b"half")
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        atomic_write(target, bug)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_two_writers_never_share_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    seen: list[str] = []

    def inner(file) -> None:
        seen.append(Path(file.name).name if isinstance(file.name, str) else "")
        seen.extend(p.name for p in tmp_path.iterdir())

    def outer(file) -> None:
        file.write(b"outer")
        atomic_write(target, inner)

    atomic_write(target, outer)
    temporaries = {name for name in seen if name.endswith(".tmp")}
    assert len(temporaries) == 2  # the outer writer's file was still there, under another name
    assert target.read_bytes() == b"outer"


def test_a_folder_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "last"
    with atomic_folder(target) as folder:
        (folder / "a").write_text("1")
    with atomic_folder(target) as folder:
        (folder / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert not previous_folder(target).exists()
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "c").write_text("3")
        raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.0a1b2c3d.tmp").mkdir()
    (tmp_path / ".last.0a1b2c3d.tmp" / "model.safetensors").write_bytes(b"x")
    (tmp_path / ".log.csv.deadbeef.tmp").write_text("x")
    (tmp_path / ".hidden.tmp").write_text("not ours")
    (tmp_path / "log.csv").write_text("kept")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".last.0a1b2c3d.tmp", ".log.csv.deadbeef.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden.tmp", "log.csv"]


def test_atomic_write_path_gives_a_writer_a_file_name_with_the_same_guarantees(tmp_path):
    from decrappify.io.atomic import atomic_write_path

    target = tmp_path / "clip.mp4"
    seen: list[Path] = []

    def write(temporary: Path) -> None:
        seen.append(temporary)
        temporary.write_bytes(b"frames")

    assert atomic_write_path(target, write) == target and target.read_bytes() == b"frames"
    assert seen[0].parent == tmp_path and not seen[0].exists()
    with pytest.raises(OutputError, match="already exists"):
        atomic_write_path(target, write, overwrite=False)

    def fail(temporary: Path) -> None:
        temporary.write_bytes(b"half")
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        atomic_write_path(tmp_path / "other.mp4", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
