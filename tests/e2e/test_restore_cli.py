"""`decrappify restore` end to end: folders, corrupt files, alpha and 16-bit, inputs never touched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from decrappify.cli import main
from decrappify.io.images import Picture, read_image, write_image

TINY = {"arch": "compact", "scale": 2, "widths": [8, 12, 16], "blocks": [1, 1, 1]}


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """in/a.png (RGBA), in/deep/b.png (16-bit), in/deep/c.jpg, in/deep/bad.png (corrupt)."""
    root = tmp_path / "in"
    alpha = np.linspace(0, 1, 20 * 24, dtype=np.float32).reshape(20, 24)
    write_image(Picture(_rgb(20, 24, 0), alpha=alpha), root / "a.png")
    write_image(Picture(_rgb(18, 22, 1), bit_depth=16), root / "deep" / "b.png")
    write_image(Picture(_rgb(16, 16, 2)), root / "deep" / "c.jpg")
    (root / "deep" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    return root


def _hashes(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_folder_with_a_corrupt_file(model_file: Path, photos: Path, tmp_path: Path, capsys) -> None:
    before = _hashes(photos)
    out = tmp_path / "out"
    status = main(["restore", str(photos), "-o", str(out), "--model", str(model_file), "--tile", "8"])
    assert status == 1  # one input failed ...
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "a.png",
        "deep/b.png",
        "deep/c.jpg",
    ]  # ... and every other one is written, tree mirrored
    assert "bad.png" in capsys.readouterr().err
    assert _hashes(photos) == before  # no input modified

    a, b = read_image(out / "a.png"), read_image(out / "deep" / "b.png")
    assert a.size == (48, 40) and a.alpha is not None and a.alpha[0].mean() < a.alpha[-1].mean()
    assert abs(float(a.alpha.mean()) - 0.5) < 0.05  # alpha carried through, resized
    assert b.bit_depth == 16 and b.size == (44, 36)  # 16-bit kept


def test_existing_outputs_and_inputs_are_never_overwritten(
    model_file: Path, photos: Path, tmp_path: Path
) -> None:
    args = ["restore", str(photos / "a.png"), "--model", str(model_file)]
    before = _hashes(photos)
    assert main([*args, "-o", str(photos), "--overwrite"]) == 1  # the output would be the input itself
    assert _hashes(photos) == before
    out = tmp_path / "out"
    assert main([*args, "-o", str(out)]) == 0
    assert main([*args, "-o", str(out)]) == 1  # exists
    assert main([*args, "-o", str(out), "--overwrite"]) == 0


def test_format_and_glob(model_file: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pattern = str(photos / "deep" / "*.jpg")
    assert (
        main(["-q", "restore", pattern, "-o", str(out), "--model", str(model_file), "--format", "png"]) == 0
    )
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["c.png"]
    assert read_image(out / "c.png").size == (32, 32)


def test_onnx_backend(model_file: Path, photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    base = ["-q", "restore", str(photos / "deep" / "b.png"), "--model", str(model_file), "--tile", "12"]
    assert main([*base, "-o", str(torch_out), "--precision", "fp32"]) == 0  # the ONNX graph is fp32
    assert main([*base, "-o", str(onnx_out), "--backend", "onnx"]) == 0
    a, b = read_image(torch_out / "b.png"), read_image(onnx_out / "b.png")
    assert np.abs(a.rgb - b.rgb).max() <= 2 / 65535  # 16-bit rounding of values within 1e-4


def test_no_shipped_model_is_a_usage_error(photos: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("decrappify.inference.zoo.MODELS_DIR", tmp_path / "none")
    assert main(["restore", str(photos / "a.png"), "-o", str(tmp_path / "out")]) == 2
    assert "no shipped model is installed yet; pass --model PATH" in capsys.readouterr().err
    assert main(["models"]) == 0
    assert "No shipped model is installed yet" in capsys.readouterr().out


def test_threads_option(model_file: Path, photos: Path, tmp_path: Path, capsys) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        base = ["-q", "restore", str(photos / "deep" / "c.jpg"), "--model", str(model_file)]
        assert main([*base, "-o", str(tmp_path / "one"), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main([*base, "-o", str(tmp_path / "two"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        one, two = read_image(tmp_path / "one" / "c.jpg"), read_image(tmp_path / "two" / "c.jpg")
        assert np.abs(one.rgb - two.rgb).max() <= 1 / 255
        assert main([*base, "-o", str(tmp_path / "zero"), "--threads", "0"]) == 2  # a usage error
        assert "--threads: expected a whole number of at least 1, got '0'" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_ensemble_option_changes_the_picture_and_rejects_unknown_names(
    model_file: Path, photos: Path, tmp_path: Path, capsys
) -> None:
    base = ["-q", "restore", str(photos / "a.png"), "--model", str(model_file)]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert main([*base, "-o", str(tmp_path / "flip"), "--ensemble", "flip"]) == 0
    plain, flip = read_image(tmp_path / "plain" / "a.png"), read_image(tmp_path / "flip" / "a.png")
    assert plain.size == flip.size == (48, 40) and np.abs(plain.rgb - flip.rgb).max() > 1 / 255
    assert np.array_equal(plain.alpha, flip.alpha)  # alpha is resized, never ensembled
    assert main([*base, "-o", str(tmp_path / "x"), "--ensemble", "x8"]) == 2
    assert "invalid choice: 'x8'" in capsys.readouterr().err
