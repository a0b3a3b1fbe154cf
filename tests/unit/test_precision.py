"""bf16 where the CPU runs it natively: how "auto" chooses, that bf16 runs close to fp32, and that users are told."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decrappify.cli import main
from decrappify.errors import ConfigError
from decrappify.inference import precision as precision_module
from decrappify.inference.benchmark import benchmark
from decrappify.inference.precision import describe_precision, resolve_precision
from decrappify.inference.restorer import Restorer
from decrappify.nn.models import create_model

TINY = {"arch": "compact", "scale": 2, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch):
    """Pretend the CPU does (True) or does not (False) run bf16 natively."""

    def pretend(value: bool) -> None:
        monkeypatch.setattr(precision_module, "cpu_runs_bf16_natively", lambda: value)

    return pretend


def test_auto_is_bf16_only_on_a_cpu_that_runs_it_natively(native_bf16) -> None:
    native_bf16(True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert describe_precision("auto", "cpu") == "bf16 (auto: this CPU runs bf16 natively)"
    native_bf16(False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for explicitly: honoured
    assert describe_precision("auto", "cpu") == "fp32 (auto: this CPU has no native bf16)"


def test_a_model_file_can_pin_fp32_under_auto(native_bf16) -> None:
    native_bf16(True)
    info = {"precision": "fp32"}
    assert resolve_precision("auto", "cpu", info) == "fp32"
    assert resolve_precision("bf16", "cpu", info) == "bf16"
    assert "model file" in describe_precision("auto", "cpu", info)
    with pytest.raises(ConfigError, match="choose one of: auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")


def test_the_native_check_asks_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    precision_module.cpu_runs_bf16_natively.cache_clear()
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision_module, "_CPUINFO", cpuinfo)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    try:
        cpuinfo.write_text("processor : 0\nflags : fpu sse avx512f avx512bw\n")
        assert precision_module.cpu_runs_bf16_natively() is False  # oneDNN would emulate: slower than fp32
        precision_module.cpu_runs_bf16_natively.cache_clear()
        cpuinfo.write_text("processor : 0\nflags : fpu avx512f avx512_bf16 amx_tile\n")
        assert precision_module.cpu_runs_bf16_natively() is True
    finally:
        precision_module.cpu_runs_bf16_natively.cache_clear()


def test_bf16_output_stays_close_to_fp32(model_file: Path) -> None:
    rgb = np.random.default_rng(0).random((24, 20, 3)).astype(np.float32)
    fp32 = Restorer.from_pretrained(model_file, precision="fp32").restore_array(rgb)
    bf16 = Restorer.from_pretrained(model_file, precision="bf16")
    assert bf16.precision == "bf16"
    out = bf16.restore_array(rgb)
    assert out.dtype == np.float32 and out.shape == fp32.shape
    psnr = 10 * np.log10(1.0 / float(np.mean((out - fp32) ** 2)))
    assert 35 < psnr < 200  # close, but really computed in another format


def test_onnx_cannot_run_bf16(model_file: Path) -> None:
    with pytest.raises(ConfigError, match="torch backend only"):
        Restorer.from_pretrained(model_file, backend="onnx", precision="bf16")


def test_benchmark_times_bf16_against_a_bf16_peak_and_writes_json() -> None:
    torch.manual_seed(0)
    result = benchmark(create_model(TINY), name="tiny", config=TINY, sizes=[(32, 24)], backends=["torch"],
                       variants=["channels_last", "bf16"], repeats=1, warmup=0, peak_matmul_size=128)  # fmt: skip
    fp32_row, bf16_row = result.rows
    assert bf16_row.variant == "bf16" and bf16_row.peak_gflops == result.peak_bf16_gflops[bf16_row.threads]
    assert fp32_row.peak_gflops == result.peak_gflops[fp32_row.threads]
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data["rows"][1]) == {"backend", "variant", "threads", "size", "megapixels_per_second",
                                    "gflops_per_megapixel", "peak_gflops"}  # fmt: skip
    assert data["rows"][1]["size"] == "32x24" and set(data["peak_gflops"]) == {"fp32", "bf16"}


def test_restore_says_which_precision_it_used(model_file: Path, tmp_path: Path, capsys) -> None:
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "a.png")
    code = main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model_file),
                 "--precision", "bf16"])  # fmt: skip
    assert code == 0
    assert "precision bf16" in capsys.readouterr().err
