"""Export a model to ONNX (any height and width) and run it with ONNX Runtime.

The ONNX file carries the same description as the `.safetensors` it came from (the `create_model` config, the
info dict) plus the scale and the stride grid the tiler needs, as ONNX metadata properties, so `restore
--backend onnx --model model.onnx` needs no other file. The legacy TorchScript exporter is used: it handles
dynamic spatial axes for our models and does not need the extra `onnxscript` package that the newer exporter
requires.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from decrappify.errors import ConfigError, WeightsError
from decrappify.io.atomic import atomic_write_bytes
from decrappify.nn.models import size_multiple_of

log = logging.getLogger(__name__)

METADATA_CONFIG = "decrappify.config"
METADATA_INFO = "decrappify.info"
METADATA_SCALE = "decrappify.scale"
METADATA_MULTIPLE = "decrappify.size_multiple"
DEFAULT_OPSET = 17
#: ONNX Runtime graph optimisation levels by the names the CLI takes.
OPT_LEVELS = ("disable", "basic", "extended", "all")
PARITY_TOLERANCE = 1e-4


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ConfigError(
            "ONNX support needs the packages onnx and onnxruntime: pip install 'decrappify[bench]'"
        ) from error
    return onnx, onnxruntime


def export_onnx(
    model: nn.Module,
    out: str | Path | None,
    *,
    config: Mapping[str, Any],
    info: Mapping[str, Any],
    opset: int = DEFAULT_OPSET,
) -> Path | bytes:
    """Write `model` as ONNX with dynamic batch, height and width; returns the path, or the bytes if `out` is None.

    The model is traced on the CPU in fp32 on a small input whose sides are not multiples of its stride.
    """
    onnx, _ = _onnx_modules()
    model = model.to("cpu").float().eval()
    multiple = size_multiple_of(model)
    # Off the stride grid on purpose: a model that pads only when needed (`if pad: F.pad(...)`) must be traced
    # through its padding branch, or the graph would only accept sizes that need none.
    side = max(32, 2 * multiple) + 3
    sample = torch.rand(1, 3, side, side + 2, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            model,
            (sample,),
            buffer,
            dynamo=False,
            input_names=["lq"],
            output_names=["pred"],
            dynamic_axes={"lq": {0: "batch", 2: "height", 3: "width"}, "pred": {0: "batch", 2: "H", 3: "W"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {
        METADATA_CONFIG: json.dumps(dict(config), sort_keys=True),
        METADATA_INFO: json.dumps(dict(info), sort_keys=True),
        METADATA_SCALE: str(int(getattr(model, "scale", 1))),
        METADATA_MULTIPLE: str(multiple),
    }
    for key, value in metadata.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    data = proto.SerializeToString()
    if out is None:
        return data
    return save_onnx(data, out)


def save_onnx(data: bytes, path: str | Path) -> Path:
    """Write ONNX bytes atomically (a temporary file beside it, then a rename); `OutputError` on failure."""
    return atomic_write_bytes(path, data)


def create_session(
    source: str | Path | bytes,
    *,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    opt_level: str = "all",
) -> Any:
    """An ONNX Runtime `InferenceSession` for a file or bytes, with the graph optimisation level asked for."""
    _, ort = _onnx_modules()
    if opt_level not in OPT_LEVELS:
        raise ConfigError(
            f"unknown ONNX optimisation level '{opt_level}'; choose one of: {', '.join(OPT_LEVELS)}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    model = source if isinstance(source, bytes) else str(source)
    try:
        return ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as error:  # ORT raises its own exception types for unreadable or invalid models
        where = "ONNX model" if isinstance(source, bytes) else str(source)
        raise WeightsError(f"{where}: ONNX Runtime cannot load it ({error})") from error


def parity(
    model: nn.Module, session: Any, sizes: Sequence[tuple[int, int]] = ((37, 53),), seed: int = 0
) -> float:
    """Largest absolute difference between PyTorch (CPU, fp32) and ONNX Runtime outputs over random inputs."""
    model = model.to("cpu").float().eval()
    generator = torch.Generator().manual_seed(seed)
    name = session.get_inputs()[0].name
    worst = 0.0
    for height, width in sizes:
        lq = torch.rand(1, 3, height, width, generator=generator)
        with torch.inference_mode():
            expected = model(lq).numpy()
        (got,) = session.run(None, {name: lq.numpy()})
        if got.shape != expected.shape:
            raise WeightsError(f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
