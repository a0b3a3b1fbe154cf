"""The hostile-input probes of issue 19 that run fast, as `docs/reliability.md` lists them: each case fails in one
line that names the file and the reason, before any work is spent on it. (The slow-body flood is in
`test_serve_flood.py`; stale temporaries of a killed run in `unit/test_atomic.py` and `unit/test_nogan.py`.)"""

from __future__ import annotations

import datetime
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from decrappify.cli import main
from decrappify.errors import WeightsError
from decrappify.nn import create_model
from decrappify.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from decrappify.weights import load_model

X4 = {"arch": "compact", "scale": 4, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


def one_line_error(capsys, *words: str) -> str:
    """The command's stderr, which must be one line holding every word (and no traceback)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims width x height but holds almost no pixel data: decoding it would fail, so a check that
    refuses it must have run on the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def save_png(path: Path, seed: int = 0, size: tuple[int, int] = (16, 12)) -> Path:
    values = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(values).save(path)
    return path


def altered_model(source: Path, target: Path, *, tensors: dict | None = None, **metadata: str) -> Path:
    """A copy of a model file with some tensors or metadata entries replaced."""
    with safe_open(str(source), framework="pt") as file:
        header = dict(file.metadata())
    save_file(tensors if tensors is not None else load_file(source), target, metadata={**header, **metadata})
    return target


# ----------------------------------------------------------------------------------------- 1. output size, memory


def test_an_x4_output_over_the_limit_is_refused_from_the_header(x4_model_file, tmp_path, capsys):
    big = tmp_path / "big.png"
    big.write_bytes(header_only_png(9000, 9000))  # 81 MP, under the 100 MP input limit; x4: 1.3 GP
    out = tmp_path / "out"
    assert main(["restore", str(big), "-o", str(out), "--model", str(x4_model_file)]) == 1
    one_line_error(capsys, "big.png: output too large", "36000 x 36000", "--max-output-pixels")
    assert not out.exists() or not any(out.iterdir())


def test_a_restoration_over_the_memory_limit_is_refused_from_the_header(x4_model_file, tmp_path, capsys):
    picture = tmp_path / "photo.png"
    picture.write_bytes(header_only_png(3000, 2000))  # 96 MP of x4 output: several GB
    argv = ["restore", str(picture), "-o", str(tmp_path / "out"), "--model", str(x4_model_file), "--max-memory", "1"]
    assert main(argv) == 1
    one_line_error(capsys, "photo.png: not enough memory", "GB", "--max-memory", "--tile")


def test_small_pictures_pass_the_checks(x4_model_file, tmp_path):
    source = save_png(tmp_path / "small.png")
    out = tmp_path / "out"
    assert main(["restore", str(source), "-o", str(out), "--model", str(x4_model_file), "--max-memory", "1"]) == 0
    assert Image.open(out / "small.png").size == (64, 48)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_service_counts_output_pixels(x4_model_file):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from decrappify.serve import ServeSettings, create_app

    settings = ServeSettings(models=(str(x4_model_file),), device="cpu", max_output_pixels=100_000)
    client = TestClient(create_app(settings))
    buffer = io.BytesIO()
    Image.new("RGB", (100, 80)).save(buffer, "PNG")  # 8000 input pixels, 128000 output pixels
    response = client.post("/v1/restore", files={"image": ("a.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 413
    assert "400x320" in response.json()["error"] and "100000" in response.json()["error"]
    assert client.get("/v1/models").json()["limits"]["max_output_pixels"] == 100_000


# ---------------------------------------------------------------------------------------- 2. output collisions


def test_two_inputs_with_one_output_name_never_overwrite_each_other(model_file, tmp_path, capsys):
    first, second = save_png(tmp_path / "a.png", 1), tmp_path / "a.jpg"
    Image.open(save_png(tmp_path / "b.png", 2)).save(second)
    out = tmp_path / "out"
    argv = ["restore", str(first), str(second), "-o", str(out), "--model", str(model_file)]
    assert main([*argv, "--format", "png", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "a.jpg: same output file" in err and "a.png" in err and "1 done, 1 failed" in err
    assert sorted(path.name for path in out.iterdir()) == ["a.png"]
    assert main([*argv, "--format", "keep", "--overwrite"]) == 0  # distinct names: both written
    assert sorted(path.name for path in out.iterdir()) == ["a.jpg", "a.png"]


# ------------------------------------------------------------------------ 3, 4. run files and model files checked


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A run folder whose checkpoint is complete and valid (the tests then damage one file)."""
    run = tmp_path / "run"
    torch.manual_seed(0)
    model = create_model(X4)
    save_checkpoint(
        run / "checkpoints", model=model, model_config=X4, info={}, config={}, state=TrainState(), optimizer={}
    )
    return run


def test_a_pickled_object_in_optim_pt_is_refused_unread(run_dir, capsys):
    torch.save({"when": datetime.date(2026, 1, 1)}, run_dir / "checkpoints" / "last" / "optim.pt")
    assert main(["train", "--resume", "-o", str(run_dir)]) == 1
    err = one_line_error(capsys, "optim.pt: holds Python objects", "refused unread")
    assert "weights_only=False" not in err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"format": 1}', ("state.json", "'config' must be a JSON object")),
        ("[1, 2]", ("state.json", "expected a JSON object, got list")),
        ('{"format": 1, "config": {}, "state": {"step": "many"}}', ("state.json", "step = 'many'")),
        ('{"format": 7, "config": {}, "state": {}}', ("state.json", "checkpoint format 7")),
        ("{not json", ("state.json", "not valid JSON")),
    ],
)
def test_a_damaged_state_json_is_one_line(run_dir, capsys, content, words):
    (run_dir / "checkpoints" / "last" / "state.json").write_text(content)
    assert main(["train", "--resume", "-o", str(run_dir)]) == 1
    one_line_error(capsys, *words)


def test_a_checkpoint_with_non_finite_weights_is_refused(run_dir):
    folder = run_dir / "checkpoints" / "last"
    tensors = {key: value.clone() for key, value in load_file(folder / "model.safetensors").items()}
    next(iter(tensors.values())).view(-1)[0] = float("inf")
    altered_model(folder / "model.safetensors", folder / "model.safetensors", tensors=tensors)
    with pytest.raises(WeightsError, match="NaN or infinity"):
        load_checkpoint(folder)


def test_absurd_architecture_sizes_are_refused_before_allocating(x4_model_file, tmp_path, capsys, monkeypatch):
    config = json.dumps({**X4, "widths": [200000] * 3})  # 1.4 TB of weights, were it built
    huge = altered_model(x4_model_file, tmp_path / "huge.safetensors", **{"decrappify.config": config})
    source = save_png(tmp_path / "a.png")
    assert main(["restore", str(source), "-o", str(tmp_path / "out"), "--model", str(huge)]) == 1
    one_line_error(capsys, "huge.safetensors: stored config cannot build a model", "widths", "200000")
    pytest.importorskip("fastapi")
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: pytest.fail("served a model it should refuse"))
    assert main(["serve", "--models", str(huge), "--device", "cpu"]) == 1
    one_line_error(capsys, "huge.safetensors: stored config cannot build a model")


def test_non_finite_weights_are_refused_when_a_model_loads(x4_model_file, tmp_path, capsys):
    tensors = {key: value.clone() for key, value in load_file(x4_model_file).items()}
    key = next(key for key, value in tensors.items() if value.is_floating_point())
    tensors[key].view(-1)[0] = float("nan")
    broken = altered_model(x4_model_file, tmp_path / "nan.safetensors", tensors=tensors)
    with pytest.raises(WeightsError, match=f"'{key}' holds NaN or infinity"):
        load_model(broken)
    source = save_png(tmp_path / "a.png")
    assert main(["restore", str(source), "-o", str(tmp_path / "out"), "--model", str(broken)]) == 1
    one_line_error(capsys, "nan.safetensors", "NaN or infinity")


def test_an_unknown_model_file_format_is_refused(x4_model_file, tmp_path):
    future = altered_model(x4_model_file, tmp_path / "future.safetensors", **{"decrappify.format": "99"})
    with pytest.raises(WeightsError, match="model file format '99'"):
        load_model(future)


def test_model_info_of_the_wrong_type_is_one_line(x4_model_file, tmp_path):
    info = json.dumps({"name": "odd", "task": "sr-x4", "render_size": "big"})
    odd = altered_model(x4_model_file, tmp_path / "odd.safetensors", **{"decrappify.info": info})
    with pytest.raises(WeightsError, match="'render_size' is 'big'"):
        load_model(odd)


# ------------------------------------------------------------------- 7. animations, broken links, stray warnings


def test_an_animated_gif_is_refused_not_cut_to_its_first_frame(model_file, tmp_path, capsys):
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "green", "blue")]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = tmp_path / "out"
    assert main(["restore", str(gif), "-o", str(out), "--model", str(model_file)]) == 1
    assert "anim.gif: animated GIF (3 frames)" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_a_still_gif_is_still_read(model_file, tmp_path):
    gif = tmp_path / "still.gif"
    Image.new("P", (16, 16), 3).save(gif)
    assert main(["restore", str(gif), "-o", str(tmp_path / "out"), "--model", str(model_file)]) == 0


def test_dangling_and_looping_links_in_a_folder_are_failed_inputs(model_file, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    save_png(folder / "ok.png")
    (folder / "dangling.png").symlink_to(folder / "missing.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    out = tmp_path / "out"
    assert main(["restore", str(folder), "-o", str(out), "--model", str(model_file)]) == 1
    err = capsys.readouterr().err
    assert "dangling.png: broken symbolic link" in err and "loop.png: symbolic link loop" in err
    assert "1 done, 2 failed" in err
    assert sorted(path.name for path in out.iterdir()) == ["ok.png"]


def test_third_party_warnings_show_with_debug_only(model_file, tmp_path, capsys):
    deep = (np.random.default_rng(0).random((8, 8, 3)) * 65535).astype(np.uint16)
    odd = tmp_path / "odd.tif"  # ImageJ metadata tags that do not parse: tifffile logs a warning reading it
    imagej_tags = [(50838, 4, 1, (100,), False), (50839, 1, 4, b"abcd", False)]
    tifffile.imwrite(odd, deep, photometric="rgb", extratags=imagej_tags)
    argv = ["restore", str(odd), "-o", str(tmp_path / "out"), "--model", str(model_file), "--overwrite"]
    assert main(argv) == 0
    assert "tifffile" not in capsys.readouterr().err
    assert main(["--debug", *argv]) == 0
    assert "tifffile: " in capsys.readouterr().err

