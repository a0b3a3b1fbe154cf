"""ONNX export: dynamic height/width, parity with PyTorch within 1e-4, metadata, the ONNX backend of Restorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from decrappify.cli import main
from decrappify.errors import ConfigError, WeightsError
from decrappify.inference.benchmark import benchmark, parse_size
from decrappify.inference.export import OPT_LEVELS, create_session, export_onnx, parity
from decrappify.inference.restorer import Restorer
from decrappify.nn import create_model
from decrappify.weights import load_model

pytest.importorskip("onnxruntime")

TINY = {"arch": "compact", "scale": 2, "widths": [8, 12, 16], "blocks": [1, 1, 1]}
TINY_UNET = {"arch": "unet", "encoder": "resnet18", "encoder_width": 8, "scale": 2}
ODD_SIZES = ((37, 53), (5, 3), (64, 48))


@pytest.mark.parametrize("config", [TINY, TINY_UNET], ids=["compact", "unet"])
def test_onnx_matches_pytorch_at_any_size(config: dict) -> None:
    """The U-Net pads to a multiple of 32 inside: the export must keep that dynamic, not bake in one size."""
    torch.manual_seed(0)
    model = create_model(config).eval()
    session = create_session(export_onnx(model, None, config=config, info={}))
    assert parity(model, session, ODD_SIZES[: 3 if config is TINY else 2]) < 1e-4


def test_export_cli_writes_a_self_describing_file(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(model_file), "--onnx", str(out)]) == 0
    meta = create_session(out).get_modelmeta().custom_metadata_map
    assert meta["decrappify.scale"] == "2" and '"name": "tiny"' in meta["decrappify.info"]
    assert main(["export", str(model_file), "--onnx", str(out)]) == 1  # exists: not replaced silently
    assert main(["export", str(model_file), "--onnx", str(out), "--overwrite"]) == 0


def test_onnx_backend_restores_like_torch(model_file: Path, tmp_path: Path) -> None:
    """Same tiling path for both backends: results within 1e-4, from the .safetensors or an exported .onnx."""
    onnx_file = tmp_path / "tiny.onnx"
    model, config, info = load_model(model_file)
    export_onnx(model, onnx_file, config=config, info=info)
    rgb = np.random.default_rng(0).random((29, 41, 3), dtype=np.float32)
    reference = Restorer.from_pretrained(model_file, device="cpu", tile=16).restore_array(rgb)
    for source in (model_file, onnx_file):
        for level in ("all", "disable"):
            restorer = Restorer.from_pretrained(source, backend="onnx", tile=16, opt_level=level)
            assert restorer.backend == "onnx" and restorer.scale == 2
            assert np.abs(restorer.restore_array(rgb) - reference).max() < 1e-4
    # Known by its content, whatever its name or the backend asked for: no `--backend onnx` needed.
    renamed = onnx_file.rename(tmp_path / "tiny.model")
    restorer = Restorer.from_pretrained(renamed, backend="torch", tile=16)
    assert restorer.backend == "onnx" and np.abs(restorer.restore_array(rgb) - reference).max() < 1e-4
    with pytest.raises(ConfigError, match="bf16"):
        Restorer.from_pretrained(renamed, precision="bf16")


def test_bad_onnx_inputs_are_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="broken.onnx"):
        Restorer.from_pretrained(broken, backend="onnx")
    with pytest.raises(ConfigError, match="choose one of: disable, basic"):
        create_session(b"", opt_level="max")
    assert set(OPT_LEVELS) == {"disable", "basic", "extended", "all"}


def test_benchmark_measures_every_backend() -> None:
    torch.manual_seed(0)
    result = benchmark(
        create_model(TINY),
        name="tiny",
        config=TINY,
        sizes=[parse_size("32x24")],
        repeats=1,
        warmup=0,
        peak_matmul_size=256,
    )
    assert [(row.backend, row.variant) for row in result.rows] == [
        ("torch", "fp32"),
        ("torch", "channels_last"),
        ("torch", "bf16"),
        ("onnx", "ort-all"),
        ("onnx", "ort-disable"),
    ]
    row = result.rows[0]
    assert row.output_size == (32, 24) and row.mp_per_s > 0 and result.gflops_per_mp > 0
    assert row.fraction_of_peak > 0 and row.achieved_gflops == pytest.approx(row.gflops_per_mp * row.mp_per_s)
    table = result.to_markdown()
    assert "| onnx | ort-all |" in table and "GFLOPs per output megapixel" in table
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("512")
