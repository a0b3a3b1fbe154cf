"""`decrappify crappify`: mirrored tree, determinism across workers, manifest, safety of inputs and outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decrappify.cli import main
from decrappify.data.degrade import PRESETS, create_preset, rng_for
from decrappify.io.images import picture_to_pil, read_image


def photo_like(seed: int, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack(
        [0.5 + 0.4 * np.sin(rng.uniform(0.05, 0.3) * x + c) * np.cos(0.1 * y) for c in range(3)], 2
    )
    rgb += rng.normal(0, 0.03, rgb.shape)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), "RGB")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    photo_like(0, 64, 48).save(root / "a.png")
    photo_like(1, 70, 50).save(root / "sub" / "b.jpg", quality=90)
    photo_like(2, 41, 37).convert("RGBA").save(root / "sub" / "deeper" / "c.png")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def crappify(*args: str | Path) -> int:
    return main(["-q", "crappify", *map(str, args)])


def test_output_is_identical_whatever_the_number_of_workers(src, tmp_path):
    assert crappify(src, tmp_path / "one", "--seed", "3", "--workers", "1") == 0
    assert crappify(src, tmp_path / "two", "--seed", "3", "--workers", "2") == 0
    one, two = tree_digest(tmp_path / "one"), tree_digest(tmp_path / "two")
    assert sorted(one) == ["a.png", "a_mask.png", "manifest.json", "sub/b.png", "sub/b_mask.png",
                           "sub/deeper/c.png", "sub/deeper/c_mask.png"]  # the default preset draws text: masks
    assert one == two
    assert crappify(src, tmp_path / "other", "--seed", "4", "--workers", "1") == 0
    assert tree_digest(tmp_path / "other")["a.png"] != one["a.png"]


def test_outputs_are_the_preset_applied_to_each_image(src, tmp_path):
    dst = tmp_path / "out"
    assert crappify(src, dst, "--preset", "restore-x4", "--workers", "1") == 0
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["preset"] == "restore-x4" and manifest["seed"] == 0 and manifest["scale"] == 4
    assert sorted(manifest["images"]) == ["a.png", "sub/b.png", "sub/deeper/c.png"]
    for relative, source in [
        ("a.png", "a.png"),
        ("sub/b.png", "sub/b.jpg"),
        ("sub/deeper/c.png", "sub/deeper/c.png"),
    ]:
        expected = create_preset("restore-x4")(picture_to_pil(read_image(src / source)), rng_for(0, source))
        written = Image.open(dst / relative)
        assert written.mode == "RGB"
        assert np.array_equal(np.asarray(written), np.asarray(expected.image))
        entry = manifest["images"][relative]
        assert entry["source"] == source
        assert entry["size"] == list(written.size) == list(expected.image.size)
        assert entry["boxes"] == [list(box) for box in expected.boxes] and entry["boxes"]
        for left, top, right, bottom in entry["boxes"]:
            assert 0 <= left < right <= written.width and 0 <= top < bottom <= written.height
    assert manifest["images"]["sub/deeper/c.png"]["size"] == [10, 9]  # floor(41 / 4), floor(37 / 4)


def test_inputs_are_untouched(src, tmp_path):
    before = tree_digest(src)
    assert crappify(src, tmp_path / "out", "--preset", "restore-x1", "--workers", "1") == 0
    assert tree_digest(src) == before


def test_a_corrupt_file_is_named_and_the_rest_is_written(src, tmp_path, capsys):
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    photo_like(3, 3, 9).save(src / "tiny.png")  # smaller than the scale: no x4 pair can come from it
    dst = tmp_path / "out"
    assert crappify(src, dst, "--workers", "2") == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "tiny.png" in err
    written = [name for name in tree_digest(dst) if not name.endswith("_mask.png")]
    assert sorted(written) == ["a.png", "manifest.json", "sub/b.png", "sub/deeper/c.png"]
    assert "sub/broken.png" not in json.loads((dst / "manifest.json").read_text())["images"]


@pytest.mark.parametrize("where", ["same", "inside"])
def test_refuses_dst_inside_src(src, capsys, where):
    dst = src if where == "same" else src / "sub" / "out"
    assert crappify(src, dst) == 2
    assert "inside SRC" in capsys.readouterr().err
    assert not (src / "manifest.json").exists() and not (src / "sub" / "out").exists()


def test_refuses_existing_outputs_unless_overwrite(src, tmp_path, capsys):
    dst = tmp_path / "out"
    assert crappify(src, dst, "--workers", "1") == 0
    first = tree_digest(dst)
    capsys.readouterr()
    assert crappify(src, dst, "--workers", "1") == 1
    assert "already exists" in capsys.readouterr().err
    assert crappify(src, dst, "--workers", "1", "--overwrite") == 0
    assert tree_digest(dst) == first


def test_colliding_output_names_fail_that_input_only(src, tmp_path, capsys):
    photo_like(5, 32, 32).save(src / "a.jpg")  # a.jpg and a.png would both become a.png
    assert crappify(src, tmp_path / "out", "--workers", "1", "--preset", "colorize") == 1
    assert "same output name" in capsys.readouterr().err
    assert (tmp_path / "out" / "a.png").exists()


def test_unknown_preset_lists_the_valid_names(src, tmp_path, capsys):
    assert crappify(src, tmp_path / "out", "--preset", "restore-x3") == 2
    err = capsys.readouterr().err
    assert all(name in err for name in PRESETS)


def test_presets_are_listed_with_descriptions(capsys):
    assert main(["crappify", "--list-presets"]) == 0
    out = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert name in out and preset.description in out
    assert main(["crappify", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in PRESETS)


def test_size_resizes_the_clean_image_and_hq_dir_holds_the_pairs(src, tmp_path):
    dst, hq = tmp_path / "lq", tmp_path / "hq"
    assert crappify(src, dst, "--preset", "sr-x4", "--size", "6", "--hq-dir", hq, "--workers", "1") == 0
    for relative in ["a.png", "sub/b.png", "sub/deeper/c.png"]:
        lq_image, hq_image = Image.open(dst / relative), Image.open(hq / relative)
        assert min(lq_image.size) == 6
        assert hq_image.size == (lq_image.width * 4, lq_image.height * 4)
        again = hq_image.resize(lq_image.size, Image.Resampling.BICUBIC)
        assert np.array_equal(np.asarray(again), np.asarray(lq_image))  # sr-x4 is exactly bicubic of the pair
    assert json.loads((dst / "manifest.json").read_text())["size"] == 6


def test_missing_arguments_and_bad_numbers_are_usage_errors(src, tmp_path):
    assert main(["crappify"]) == 2
    assert crappify(src, tmp_path / "out", "--workers", "0") == 2
    assert crappify(tmp_path / "nowhere", tmp_path / "out") == 2
