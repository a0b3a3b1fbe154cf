"""Issue 21, "the first hour": the friction a new user hit following the README, each point held by a test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from decrappify.cli import main
from decrappify.io.images import Picture, write_image


def _photo(path: Path, seed: int = 0, size: tuple[int, int] = (16, 20)) -> Path:
    rgb = np.random.default_rng(seed).random((*size, 3), dtype=np.float32)
    return write_image(Picture(rgb), path)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def restore_calls(monkeypatch) -> list[int]:
    """Counts `Restorer.restore` calls made by `decrappify restore`."""
    from decrappify.cli import restore as restore_cli

    calls: list[int] = []
    original = restore_cli.Restorer.restore

    def counting(self, picture, **kwargs):
        calls.append(1)
        return original(self, picture, **kwargs)

    monkeypatch.setattr(restore_cli.Restorer, "restore", counting)
    return calls


# ------------------------------------------------------------------ 1. re-running a batch does not waste the work


def test_restore_checks_existing_outputs_before_the_work(model_file, tmp_path, restore_calls, capsys):
    photos = tmp_path / "in"
    _photo(photos / "a.png", 0), _photo(photos / "b.png", 1)
    out = tmp_path / "out"
    args = ["restore", str(photos), "-o", str(out), "--model", str(model_file)]
    assert main(args) == 0 and len(restore_calls) == 2
    capsys.readouterr()
    assert main(args) == 1  # both exist: failed, and nothing computed
    assert len(restore_calls) == 2
    assert "already exists" in capsys.readouterr().err
    (out / "b.png").unlink()
    before = _digest(out / "a.png")
    assert main([*args, "--skip-existing"]) == 0  # only b is made again
    assert len(restore_calls) == 3 and _digest(out / "a.png") == before
    assert "1 done, 1 skipped" in capsys.readouterr().err


def test_crappify_skip_existing_makes_only_what_is_missing(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for seed in range(3):
        _photo(src / f"p{seed}.png", seed, (32, 32))
    assert main(["-q", "crappify", str(src), str(dst), "--workers", "1"]) == 0
    manifest = (dst / "manifest.json").read_text()
    (dst / "p1.png").unlink()
    stamp = (dst / "p0.png").stat().st_mtime_ns
    assert main(["crappify", str(src), str(dst), "--workers", "1", "--skip-existing"]) == 0
    assert "1 done, 2 skipped" in capsys.readouterr().err
    assert (dst / "p1.png").exists() and (dst / "p0.png").stat().st_mtime_ns == stamp
    assert (dst / "manifest.json").read_text() == manifest  # the same run, byte for byte
    assert main(["-q", "crappify", str(src), str(dst), "--seed", "1", "--skip-existing"]) == 2  # other settings


# -------------------------------------------------------------- 9. -o optional, --suffix, "results in" only if any


def test_results_next_to_inputs_with_a_suffix(model_file, tmp_path, capsys):
    photo = _photo(tmp_path / "a.png")
    assert main(["restore", str(photo), "--model", str(model_file)]) == 0
    assert (tmp_path / "a_restored.png").is_file()
    assert main(["-q", "restore", str(photo), "--model", str(model_file), "--suffix", "_x2"]) == 0
    assert (tmp_path / "a_x2.png").is_file()
    out = tmp_path / "out"
    assert main(["-q", "restore", str(photo), "-o", str(out), "--model", str(model_file), "--suffix=-s"]) == 0
    assert (out / "a-s.png").is_file()


def test_a_run_that_wrote_nothing_does_not_point_at_results(model_file, tmp_path, capsys):
    out = tmp_path / "out2"
    assert main(["restore", str(tmp_path / "missing.png"), "-o", str(out), "--model", str(model_file)]) == 1
    assert "results in" not in capsys.readouterr().err


# ------------------------------------------------------------------- 5. --debug, -q and --version at any position


def test_global_options_work_after_the_subcommand(model_file, tmp_path, capsys):
    photo = _photo(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["restore", str(photo), "-o", str(out), "--model", str(model_file), "-q"]) == 0
    assert capsys.readouterr().err == ""  # quiet
    with pytest.raises(Exception) as raised:  # --debug: the error's traceback, not the one line
        main(["restore", str(photo), "-o", str(out), "--model", str(tmp_path / "none.safetensors"), "--overwrite",
              "--debug"])  # fmt: skip
    assert "none.safetensors" in str(raised.value)
    assert main(["models", "--version"]) == 0
    assert capsys.readouterr().out.startswith("decrappify ")


# ------------------------------------------------------------------ 6. ONNX files are known by their content


def test_onnx_files_need_no_backend_option(model_file, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    onnx_file = tmp_path / "m.onnx"
    assert main(["-q", "export", str(model_file), "--onnx", str(onnx_file)]) == 0
    photo = _photo(tmp_path / "a.png")
    assert main(["restore", str(photo), "-o", str(tmp_path / "out"), "--model", str(onnx_file)]) == 0
    assert "ONNX Runtime" in capsys.readouterr().err
    args = ["benchmark", "--model", str(onnx_file), "--size", "16x16", "--repeats", "1", "--warmup", "0"]
    assert main([*args, "--backend", "onnx"]) == 0
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| onnx | ort-all |" in table and "| torch |" not in table and "ONNX file" in table


# --------------------------------------------------------- 9. the Python API takes arrays, Pillow images and paths


def test_restorer_restore_accepts_arrays_pil_images_and_paths(model_file, tmp_path):
    from PIL import Image

    from decrappify.inference.restorer import Restorer

    restorer = Restorer.from_pretrained(model_file)
    photo = _photo(tmp_path / "a.png", size=(10, 12))
    from_path = restorer.restore(photo)  # a path: a Picture
    assert from_path.size == (24, 20)
    as_uint8 = np.asarray(Image.open(photo).convert("RGB"))
    out = restorer.restore(as_uint8)
    assert out.dtype == np.uint8 and out.shape == (20, 24, 3)
    assert np.abs(out.astype(int) - np.rint(from_path.rgb * 255).astype(int)).max() <= 1
    floats = restorer.restore(as_uint8 / 255.0)
    assert floats.dtype == np.float32 and floats.shape == (20, 24, 3)
    grey = restorer.restore(as_uint8[..., 0])
    assert grey.shape == (20, 24, 3)
    image = restorer.restore(Image.open(photo))
    assert isinstance(image, Image.Image) and image.size == (24, 20)


# ------------------------------------------------- 9. `models` says what each does; --tile's help is honest


def test_models_table_has_a_what_it_does_column(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| name | what it does |")
    row = next(line for line in lines if line.startswith("| sr-x4 |"))
    assert "super-resolution" in row.split(" | ")[1]


def test_restore_help_does_not_promise_tiles_match_exactly(capsys):
    assert main(["restore", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "matches the untiled" not in text and "not identical" in text


# ----------------------------------------------------- 9. evaluate takes the task from a model that knows it


def test_evaluate_needs_no_task_for_a_model_that_knows_it(x4_model_file, tmp_path, capsys):
    clean = tmp_path / "clean"
    for seed in range(2):
        _photo(clean / f"{seed}.png", seed, (24, 24))
    trained = tmp_path / "trained.safetensors"
    trained.write_bytes(x4_model_file.read_bytes())
    from decrappify.weights import update_model_info

    update_model_info(trained, {"task": "sr-x4"})
    assert main(["evaluate", str(clean), "--model", str(trained), "--no-perceptual"]) == 0
    captured = capsys.readouterr()
    assert "task sr-x4 (from the model files)" in captured.err and "bicubic" in captured.out
    assert main(["evaluate", str(clean)]) == 2  # nothing to take it from
    assert "--task is needed" in capsys.readouterr().err


# ------------------------------------- 9. the report: honest input label, human headers, rounded, not overwritten


def test_report_reads_well_and_is_not_silently_replaced(tmp_path, capsys):
    import re

    clean = tmp_path / "clean"
    for seed in range(2):
        _photo(clean / f"{seed}.png", seed, (32, 32))
    report, scores = tmp_path / "report", tmp_path / "s.json"
    args = ["-q", "evaluate", str(clean), "--task", "sr-x4", "--report", str(report), "--json", str(scores),
            "--no-perceptual"]  # fmt: skip
    assert main(args) == 0
    page = (report / "index.html").read_text()
    assert 'alt="input (1/4 size)"' in page and "nearest)" not in page
    assert "<th>PSNR Y (dB)</th>" in page and "psnr_y" not in page
    cells = re.findall(r"<td>([0-9.]+)</td>", page)
    assert cells and all(len(cell.partition(".")[2]) <= 4 for cell in cells)
    before = page
    capsys.readouterr()
    assert main(args) == 1  # refused before any work
    assert "already exists" in capsys.readouterr().err and (report / "index.html").read_text() == before
    assert main([*args, "--overwrite"]) == 0


# ------------------------------------------------- 9. under torchrun, only rank 0 speaks (no line printed twice)


def test_other_torchrun_ranks_print_no_info_or_repeated_errors(tmp_path, monkeypatch, capsys):
    photo = _photo(tmp_path / "a.png")
    missing = str(tmp_path / "none.safetensors")
    monkeypatch.setenv("RANK", "1")
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "--model", missing]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "--model", missing]) == 2
    assert capsys.readouterr().err.count("error:") == 1


def test_ddp_launch_checks_the_run_folder_first_and_says_it_in_one_line(tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo(photos / "a.png", size=(64, 64))
    run = tmp_path / "runs" / "sr-x4"
    (run / "checkpoints").mkdir(parents=True)
    config = Path(__file__).resolve().parents[2] / "configs" / "sr-x4.toml"
    args = ["train", "--config", str(config), "--data", str(photos), "--out", str(run), "--nproc-per-node", "2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a training run" in err


# ------------------------------------------------ 3. a trained model carries its own name; shipped names reserved

TINY_TRAIN = [
    "model={arch='compact', scale=4, widths=[8, 8, 8], blocks=[1, 1, 1]}",
    "stages=[{crop=32, batch=2, epochs=1}]",
    "data.val_size=2",
    "data.crops_per_image=1",
    "train.threads=1",
]
RECIPE = Path(__file__).resolve().parents[2] / "configs" / "sr-x4.toml"


@pytest.fixture(scope="module")
def train_photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for seed in range(5):
        _photo(root / f"{seed}.png", seed, (48, 48))
    return root


def test_a_trained_model_is_named_after_its_run_never_as_a_shipped_one(train_photos, tmp_path, capsys):
    from decrappify.io.model_metadata import read_model_metadata

    base = ["-q", "train", "--config", str(RECIPE), "--data", str(train_photos)]
    run = tmp_path / "runs" / "sr-x4"  # the default run folder of the recipe: a shipped model's name
    assert main([*base, "--out", str(run), *TINY_TRAIN]) == 0
    assert read_model_metadata(run / "model.safetensors")[1]["name"] == "sr-x4-trained"
    mine = tmp_path / "runs" / "mine"
    assert main([*base, "--out", str(mine), *TINY_TRAIN, "train.model_name='holiday-sr'"]) == 0
    assert read_model_metadata(mine / "model.safetensors")[1]["name"] == "holiday-sr"
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "x"), *TINY_TRAIN, "train.model_name='sr-x4'"]) == 2
    assert "shipped model's name" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoints").exists()  # refused before any work

    # A file trained before names were reserved still says "sr-x4": it is shown by its folder and stem.
    from decrappify.weights import update_model_info

    update_model_info(run / "model.safetensors", {"name": "sr-x4"})
    photo = _photo(tmp_path / "a.png")
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "--model", str(run / "model.safetensors")]) == 0
    assert "model sr-x4/model:" in capsys.readouterr().err


# --------------------------------------------- 2. colorize refuses a colour photo unless --force; toned scans pass


def _colour_scene(size: int = 96) -> np.ndarray:
    """Quadrants of red, green, blue and yellow of equal-ish brightness, with a little texture."""
    rgb = np.zeros((size, size, 3), np.float32)
    half = size // 2
    rgb[:half, :half] = (0.8, 0.2, 0.2)
    rgb[:half, half:] = (0.2, 0.7, 0.2)
    rgb[half:, :half] = (0.2, 0.3, 0.9)
    rgb[half:, half:] = (0.8, 0.8, 0.2)
    return np.clip(rgb + np.random.default_rng(0).normal(0, 0.02, rgb.shape), 0, 1).astype(np.float32)


def test_colour_spread_separates_colour_photos_from_grey_and_sepia():
    from decrappify.inference.colour_check import COLOUR_PHOTO_SPREAD, colour_spread

    rgb = _colour_scene()
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    sepia = np.clip(rgb @ np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]]).T, 0, 1)
    warm = np.clip(luma[..., None] * np.array([1.0, 0.85, 0.65]), 0, 1)
    assert colour_spread(rgb) > 2 * COLOUR_PHOTO_SPREAD
    for toned in (np.repeat(luma[..., None], 3, 2), sepia, warm):
        assert colour_spread(toned) < COLOUR_PHOTO_SPREAD / 2


def test_colorize_refuses_a_colour_photo_unless_forced(tmp_path, capsys):
    colour = write_image(Picture(_colour_scene()), tmp_path / "colour.png")
    luma = _colour_scene() @ np.array([0.299, 0.587, 0.114], np.float32)
    toned = np.clip(luma[..., None] * np.array([1.0, 0.85, 0.65], np.float32), 0, 1)
    sepia = write_image(Picture(toned), tmp_path / "sep.png")
    out = tmp_path / "out"
    assert main(["restore", str(colour), str(sepia), "-o", str(out), "--model", "colorize"]) == 1
    err = capsys.readouterr().err
    assert "colour.png: already in colour" in err and "--force" in err
    assert (out / "sep.png").is_file() and not (out / "colour.png").exists()
    assert main(["restore", str(colour), "-o", str(out), "--model", "colorize", "--force"]) == 0
    assert "colourised anyway" in capsys.readouterr().err


# ------------------------------------------------ 4. validation shrinks on a small folder, and the split is said


def test_validation_is_a_share_of_a_small_folder_and_announced(tmp_path, capsys):
    from decrappify.data.pairs import validation_count

    assert validation_count(13, 8, 0.25) == 3  # not 8 of 13
    assert validation_count(400, 8, 0.25) == 8  # a real folder: as the recipe says
    assert validation_count(3, 16, 0.25) == 1 and validation_count(1, 8, 0.25) == 0
    photos = tmp_path / "photos"
    for seed in range(13):
        _photo(photos / f"{seed}.png", seed, (48, 48))
    overrides = [item for item in TINY_TRAIN if not item.startswith("data.val_size")]
    status = main(["train", "--config", str(RECIPE), "--data", str(photos), "--out", str(tmp_path / "run"),
                   *overrides])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 0
    assert "data: 10 training images" in err and "3 validation images held out" in err
    assert "data.val_fraction=0.25" in err


def test_recipes_are_found_by_name(train_photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the repository root, as the README's tour runs
    out = tmp_path / "run"
    assert main(["-q", "train", "--config", "sr-x4", "--data", str(train_photos), "--out", str(out), *TINY_TRAIN]) == 0
    assert (out / "model.safetensors").is_file()
    assert main(["train", "--config", "sr-x5", "--data", str(train_photos)]) == 2
    err = capsys.readouterr().err
    assert "no recipe sr-x5.toml" in err and "restore-x4-cpu" in err
    monkeypatch.chdir(tmp_path)  # elsewhere a name finds nothing: the code never looks for the checkout
    assert main(["train", "--config", "sr-x4", "--data", str(train_photos)]) == 2
    assert "no recipe sr-x4.toml in configs" in capsys.readouterr().err


# ------------------------------------------------------------- 7. one large picture shows progress by tiles


def test_one_large_picture_reports_its_tiles(model_file, tmp_path, monkeypatch):
    from decrappify.cli import restore as restore_cli
    from decrappify.inference.restorer import Restorer

    calls: list[tuple[int, int]] = []
    rgb = np.random.default_rng(0).random((40, 56, 3), dtype=np.float32)
    Restorer.from_pretrained(model_file, tile=16).restore_array(rgb, on_tile=lambda *a: calls.append(a))
    assert calls == [(i, 12) for i in range(1, 13)]  # 3 rows x 4 columns of 16-pixel tiles

    bars: list[tuple[int, int]] = []

    class FakeBar:
        def __init__(self, total, **kwargs):
            self.total, self.n = total, 0

        def update(self, step):
            self.n += step
            bars.append((self.n, self.total))

        def close(self):
            pass

    monkeypatch.setattr(restore_cli, "tqdm", FakeBar)
    photo = write_image(Picture(rgb), tmp_path / "big.png")
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "--model", str(model_file), "--tile", "16"]) == 0
    assert bars[-1] == (12, 12) and len(bars) == 12
