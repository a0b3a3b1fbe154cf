"""batch: inputs are expanded predictably, and one bad file is reported while the others are still done."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pytest

from decrappify.errors import InputError
from decrappify.io.images import Picture, read_image, write_image
from decrappify.io.jobs import BatchItem, BatchReport, collect_inputs, output_path, run_batch


def _write_png(path: Path, value: float = 0.5) -> Path:
    return write_image(Picture(np.full((4, 3, 3), value, np.float32)), path)


def invert_job(item: BatchItem, out_dir: Path) -> Path:
    """A real job: read, change, write; module-level so worker processes can unpickle it."""
    picture = read_image(item.source)
    return write_image(picture.with_rgb(1.0 - picture.rgb), output_path(item, out_dir), protect=[item.source])


def crashing_job(item: BatchItem) -> Path:
    if "boom" in item.source.name:
        raise ZeroDivisionError("a bug")
    return item.source


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """photos/ a.png, b.jpg (really a text file), sub/c.png, sub/deep/d.png, notes.txt, .hidden.png, .git/e.png"""
    root = tmp_path / "photos"
    _write_png(root / "a.png", 0.1)
    (root / "b.jpg").write_text("not a picture")
    _write_png(root / "sub" / "c.png", 0.2)
    _write_png(root / "sub" / "deep" / "d.png", 0.3)
    (root / "notes.txt").write_text("ignored when walking a folder")
    _write_png(root / ".hidden.png")
    _write_png(root / ".git" / "e.png")
    return root


def _relatives(items: list[BatchItem]) -> list[str]:
    return [item.relative.as_posix() for item in items]


# ------------------------------------------------------------------------------------------------ collecting


def test_a_folder_is_walked_recursively_keeping_its_tree(photos: Path) -> None:
    items = collect_inputs([photos])
    assert _relatives(items) == ["a.png", "b.jpg", "sub/c.png", "sub/deep/d.png"]
    assert all(item.problem is None for item in items)
    assert items[2].source == photos / "sub" / "c.png"


def test_a_named_file_is_kept_whatever_its_extension(photos: Path) -> None:
    items = collect_inputs([photos / "notes.txt", str(photos / "sub" / "c.png")])
    assert _relatives(items) == ["notes.txt", "c.png"]  # argument order, the file's own name
    assert all(item.problem is None for item in items)


def test_globs_keep_the_tree_below_their_literal_folder(photos: Path) -> None:
    assert _relatives(collect_inputs([f"{photos}/*.png"])) == ["a.png"]
    assert _relatives(collect_inputs([f"{photos}/**/*.png"])) == ["a.png", "sub/c.png", "sub/deep/d.png"]
    assert _relatives(collect_inputs([f"{photos}/su*"])) == ["sub/c.png", "sub/deep/d.png"]


def test_missing_paths_become_items_with_a_problem(photos: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    items = collect_inputs([tmp_path / "nope.png", f"{photos}/*.gif", tmp_path / "empty", photos / "a.png"])
    problems = [item.problem for item in items]
    assert problems[0] is not None and "no such file" in problems[0]
    assert problems[1] is not None and "no file matches" in problems[1]
    assert problems[2] is not None and "no image files" in problems[2]
    assert problems[3] is None


def test_a_file_reached_twice_is_kept_once_and_same_output_names_are_flagged(
    photos: Path, tmp_path: Path
) -> None:
    items = collect_inputs([photos, photos / "a.png", photos / "sub" / ".." / "a.png"])
    assert _relatives(items) == ["a.png", "b.jpg", "sub/c.png", "sub/deep/d.png"]
    other = _write_png(tmp_path / "other" / "a.png")
    clash = collect_inputs([photos / "a.png", other])
    assert clash[0].problem is None
    assert clash[1].problem is not None and "same output name" in clash[1].problem


def test_output_path_mirrors_the_tree_and_can_change_the_suffix(tmp_path: Path) -> None:
    item = BatchItem(Path("in/sub/x.jpg"), Path("sub/x.jpg"))
    assert output_path(item, tmp_path) == tmp_path / "sub" / "x.jpg"
    assert output_path(item, tmp_path, ".png") == tmp_path / "sub" / "x.png"
    assert output_path(item, tmp_path, "tif") == tmp_path / "sub" / "x.tif"


# --------------------------------------------------------------------------------------------------- running


@pytest.mark.parametrize("workers", [1, 2])
def test_one_bad_file_is_reported_and_the_others_are_done(
    workers: int, photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    items = collect_inputs([photos, tmp_path / "missing.png"])
    with caplog.at_level(logging.ERROR, logger="decrappify"):
        report = run_batch(items, functools.partial(invert_job, out_dir=out), workers=workers, quiet=True)
    assert report.done == [
        out / "a.png",
        out / "sub" / "c.png",
        out / "sub" / "deep" / "d.png",
    ]  # input order
    assert [path.name for path, _ in report.failed] == ["b.jpg", "missing.png"]
    assert report.exit_code == 1 and report.seconds > 0
    np.testing.assert_allclose(read_image(out / "sub" / "c.png").rgb, 0.8, atol=1 / 255)
    bad_line = f"{photos / 'b.jpg'}: not an image file"
    assert any(record.getMessage().startswith(bad_line) for record in caplog.records)
    assert any("missing.png: no such file" in record.getMessage() for record in caplog.records)
    assert all("\n" not in record.getMessage() for record in caplog.records)
    assert "3 done, 2 failed" in report.summary()


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unexpected_exception_is_an_internal_error_for_that_file_only(
    workers: int, tmp_path: Path
) -> None:
    items = [BatchItem(tmp_path / name, Path(name)) for name in ("a.png", "boom.png", "c.png")]
    report = run_batch(items, crashing_job, workers=workers, quiet=True)
    assert report.done == [tmp_path / "a.png", tmp_path / "c.png"]
    assert len(report.failed) == 1
    path, reason = report.failed[0]
    assert path.name == "boom.png" and reason == "internal error: ZeroDivisionError: a bug"


def test_items_with_a_problem_are_not_given_to_the_job(tmp_path: Path) -> None:
    called: list[Path] = []

    def job(item: BatchItem) -> Path:
        called.append(item.source)
        return item.source

    items = [
        BatchItem(tmp_path / "x.png", Path("x.png"), "no such file or folder"),
        BatchItem(tmp_path, Path("y")),
    ]
    report = run_batch(items, job, quiet=True)
    assert called == [tmp_path]
    assert report.failed == [(tmp_path / "x.png", "no such file or folder")]


def test_errors_naming_another_file_keep_their_name(tmp_path: Path) -> None:
    def job(item: BatchItem) -> Path:
        raise InputError(tmp_path / "weights.safetensors", "corrupt")

    report = run_batch([BatchItem(tmp_path / "a.png", Path("a.png"))], job, quiet=True)
    assert report.failed[0][1].endswith("weights.safetensors: corrupt")


def test_an_empty_batch_succeeds_and_a_clean_one_exits_0(tmp_path: Path) -> None:
    assert run_batch([], crashing_job, quiet=True).exit_code == 0
    report = run_batch([BatchItem(tmp_path / "a.png", Path("a.png"))], crashing_job, workers=4)
    assert isinstance(report, BatchReport) and report.exit_code == 0 and report.failed == []


def test_workers_need_a_picklable_job(tmp_path: Path) -> None:
    items = [BatchItem(tmp_path / f"{i}.png", Path(f"{i}.png")) for i in range(2)]
    with pytest.raises(TypeError, match="picklable"):
        run_batch(items, lambda item: item.source, workers=2, quiet=True)
