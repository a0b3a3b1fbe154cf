"""data.crappify: the per-image job, the output plan, the folder checks and the manifest, on tiny images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decrappify.data.crappify import (
    MANIFEST_NAME,
    CrappifyJob,
    check_folders,
    crappify_folder,
    plan_outputs,
    read_manifest,
    write_manifest,
)
from decrappify.data.degrade import create_preset, rng_for
from decrappify.errors import ConfigError, InputError, OutputError
from decrappify.io.jobs import BatchItem, collect_inputs


def _save_noise(path: Path, width: int, height: int, seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    _save_noise(root / "a.png", 18, 13, seed=1)
    _save_noise(root / "sub" / "b.png", 9, 10, seed=2, mode="RGBA")
    return root


def _item(src: Path, relative: str) -> BatchItem:
    return BatchItem(src / relative, Path(relative))


def _job(tmp_path: Path, preset: str = "sr-x4", **options: object) -> CrappifyJob:
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    return CrappifyJob(create_preset(preset), 3, tmp_path / "dst", records, **options)


# ---------------------------------------------------------------------------------------------------- the job


def test_job_degrades_with_the_stream_of_its_relative_path(src: Path, tmp_path: Path) -> None:
    job = _job(tmp_path, "restore-x4")
    out = job(_item(src, "sub/b.png"))
    assert out == tmp_path / "dst" / "sub" / "b.png"
    with Image.open(src / "sub" / "b.png") as clean:
        expected = create_preset("restore-x4")(clean.convert("RGB"), rng_for(3, "sub/b.png"))
    with Image.open(out) as written:
        assert written.mode == "RGB"  # alpha dropped: training pairs are RGB
        np.testing.assert_array_equal(np.asarray(written), np.asarray(expected.image))
    (record_file,) = (tmp_path / "records").iterdir()
    record = json.loads(record_file.read_text(encoding="utf-8"))
    assert record == {
        "source": "sub/b.png",
        "size": [2, 2],  # floor(9 / 4), floor(10 / 4)
        "clean_size": [9, 10],
        "boxes": [list(box) for box in expected.boxes],
        "mask": "sub/b_mask.png",  # restore-x4 draws text: its mask is written beside the picture
    }
    with Image.open(tmp_path / "dst" / "sub" / "b_mask.png") as mask:
        np.testing.assert_array_equal(np.asarray(mask) > 0, expected.text_mask())


def test_job_writes_the_clean_pair_cropped_to_a_multiple_of_the_scale(src: Path, tmp_path: Path) -> None:
    job = _job(tmp_path, hq_dir=tmp_path / "hq")
    job(_item(src, "a.png"))
    with Image.open(tmp_path / "dst" / "a.png") as lq, Image.open(tmp_path / "hq" / "a.png") as hq:
        assert lq.size == (4, 3) and hq.size == (16, 12)  # 18 x 13 cropped at the right and bottom
        with Image.open(src / "a.png") as clean:
            np.testing.assert_array_equal(np.asarray(hq), np.asarray(clean)[:12, :16])


def test_job_resizes_the_shorter_side_to_size_times_scale(src: Path, tmp_path: Path) -> None:
    job = _job(tmp_path, hq_dir=tmp_path / "hq", size=2)
    job(_item(src, "a.png"))
    with Image.open(tmp_path / "dst" / "a.png") as lq, Image.open(tmp_path / "hq" / "a.png") as hq:
        assert min(lq.size) == 2 and min(hq.size) == 8


def test_job_refuses_an_image_smaller_than_the_scale(tmp_path: Path) -> None:
    tiny = _save_noise(tmp_path / "src" / "tiny.png", 3, 9)
    with pytest.raises(InputError, match="smaller than the scale 4") as caught:
        _job(tmp_path)(BatchItem(tiny, Path("tiny.png")))
    assert caught.value.path == tiny
    assert not (tmp_path / "dst").exists() and list((tmp_path / "records").iterdir()) == []


def test_job_never_replaces_its_input_even_with_overwrite(src: Path, tmp_path: Path) -> None:
    before = (src / "a.png").read_bytes()
    job = CrappifyJob(create_preset("restore-x1"), 0, src, tmp_path, overwrite=True)
    with pytest.raises(OutputError, match="input"):
        job(_item(src, "a.png"))
    assert (src / "a.png").read_bytes() == before


# ------------------------------------------------------------------------------------- plan and folder checks


def test_plan_marks_colliding_names_and_refuses_existing_outputs(src: Path, tmp_path: Path) -> None:
    _save_noise(src / "a.jpg", 8, 8)  # a.jpg and a.png would both become a.png
    dst = tmp_path / "dst"
    planned = plan_outputs(collect_inputs([src]), dst, None, overwrite=False)
    problems = {item.relative.as_posix(): item.problem for item in planned}
    assert problems["a.jpg"] is None and problems["sub/b.png"] is None  # the first in sorted order is kept
    assert problems["a.png"] is not None and "same output name as" in problems["a.png"]
    _save_noise(dst / "sub" / "b.png", 2, 2)
    with pytest.raises(OutputError, match="already exists"):
        plan_outputs(collect_inputs([src]), dst, None, overwrite=False)
    assert len(plan_outputs(collect_inputs([src]), dst, None, overwrite=True)) == 3


def test_plan_counts_an_existing_manifest_as_an_output(src: Path, tmp_path: Path) -> None:
    write_manifest(tmp_path / "dst", {"images": {}})
    with pytest.raises(OutputError, match="manifest.json: already exists"):
        plan_outputs(collect_inputs([src]), tmp_path / "dst", None, overwrite=False)


@pytest.mark.parametrize(
    ("dst", "hq", "message"),
    [("src", None, "DST .* is inside SRC"), ("src/sub/out", None, "inside SRC"),
     ("out", "src/hq", "--hq-dir .* is inside SRC"), ("out", "out", "is DST"),
     ("src/a.png", None, "not a folder")],
)  # fmt: skip
def test_outputs_must_be_folders_of_their_own(
    src: Path, tmp_path: Path, dst: str, hq: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_folders(src, tmp_path / dst, tmp_path / hq if hq else None)
    check_folders(src, tmp_path / "out", tmp_path / "hq")  # separate folders outside SRC are fine


# ------------------------------------------------------------------------------------------ the whole folder


def test_crappify_folder_writes_a_manifest_of_the_written_images(src: Path, tmp_path: Path) -> None:
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dst = tmp_path / "dst"
    report = crappify_folder(src, dst, preset="sr-x4", seed=5, quiet=True)
    assert report.exit_code == 1 and [source.name for source, _ in report.failed] == ["broken.png"]
    manifest = read_manifest(dst)
    assert [manifest[key] for key in ("preset", "seed", "scale", "size")] == ["sr-x4", 5, 4, None]
    assert manifest["pipeline"] == create_preset("sr-x4").describe()
    assert sorted(manifest["images"]) == ["a.png", "sub/b.png"]
    assert manifest["images"]["a.png"]["size"] == [4, 3]
    assert manifest["images"]["sub/b.png"]["source"] == "sub/b.png"
    text = (dst / MANIFEST_NAME).read_text(encoding="utf-8")
    assert text.endswith("}\n") and text == json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def test_the_same_run_gives_the_same_bytes(src: Path, tmp_path: Path) -> None:
    for name in ("one", "two"):
        assert crappify_folder(src, tmp_path / name, preset="restore-x4", seed=2, quiet=True).exit_code == 0
    for relative in ("a.png", "sub/b.png", MANIFEST_NAME):
        assert (tmp_path / "one" / relative).read_bytes() == (tmp_path / "two" / relative).read_bytes()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"preset": "restore-x3", "seed": -1}, "unknown preset"), ({"seed": -1, "workers": 0}, "--seed"),
     ({"workers": 0}, "--workers"), ({"size": 0}, "--size"), ({"max_pixels": 0}, "--max-pixels")],
)  # fmt: skip
def test_bad_settings_are_refused_before_anything_is_written(
    src: Path, tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        crappify_folder(src, tmp_path / "dst", **options)
    assert not (tmp_path / "dst").exists()


def test_read_manifest_names_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as caught:
        read_manifest(tmp_path)
    assert caught.value.path == tmp_path / MANIFEST_NAME
    (tmp_path / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('{"preset": "sr-x4"}', encoding="utf-8")
    with pytest.raises(InputError, match="not a crappify manifest"):
        read_manifest(tmp_path)
