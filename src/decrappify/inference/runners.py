"""Runners: one model call on one CPU tile, whatever executes it (PyTorch on CPU/CUDA, or ONNX Runtime).

A runner is a callable `(N, 3, h, w) float32 CPU tensor -> (N, 3, h*s, w*s) float32 CPU tensor` plus what the
tiling needs to know (`scale`, `size_multiple`). Keeping the device transfer inside the runner is what lets the
tiler hold the whole picture on the CPU and send only one tile at a time to the accelerator.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from decrappify.allocator import keep_freed_memory
from decrappify.errors import ConfigError, WeightsError
from decrappify.inference.export import (
    METADATA_CONFIG,
    METADATA_INFO,
    METADATA_MULTIPLE,
    METADATA_SCALE,
    create_session,
    export_onnx,
)
from decrappify.inference.precision import autocast, check_precision, resolve_precision
from decrappify.io.model_metadata import is_onnx_file
from decrappify.nn.conv_fusion import fuse_conv_activations
from decrappify.nn.fold_bn import fold_batch_norms
from decrappify.nn.models import DEFAULT_SIZE_MULTIPLE, size_multiple_of
from decrappify.weights import load_model

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` is CUDA when this machine has it, else the CPU; asking for CUDA without it is a `ConfigError`."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{text}': CUDA is not available on this machine; use --device cpu")
    try:
        return torch.device(text)
    except RuntimeError as error:
        raise ConfigError(f"unknown device '{text}'; choose one of: {', '.join(DEVICES)}") from error


@dataclass
class TorchRunner:
    """A PyTorch model on `device`, by default in channels-last memory format, which oneDNN's CPU convolutions
    run much faster than the default layout (`decrappify benchmark` compares the two). `precision` is "fp32" or
    "bf16" (autocast around the network only: tiles go in and come out as fp32)."""

    model: nn.Module
    device: torch.device
    scale: int
    size_multiple: int
    channels_last: bool = True
    precision: str = "fp32"

    def __post_init__(self) -> None:
        keep_freed_memory()  # without it each call page-faults its activations back in (`decrappify.allocator`)
        self.model = fold_batch_norms(self.model.to(self.device).eval())  # a folded copy when it has any
        if self.device.type == "cpu":
            self.model = fuse_conv_activations(self.model)  # a copy with convolution + ReLU as one oneDNN call
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def __call__(self, lq: Tensor) -> Tensor:
        x = lq.to(self.device, dtype=torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.precision, self.device):
            pred = self.model(x)
        return pred.float().cpu()


@dataclass
class OnnxRunner:
    """An ONNX Runtime session; the same tile in, the same tile out as `TorchRunner`."""

    session: Any  # onnxruntime.InferenceSession (imported lazily: ONNX Runtime is an optional dependency)
    scale: int
    size_multiple: int
    input_name: str = field(init=False)
    precision: str = field(init=False, default="fp32")  # the graph is exported in fp32

    def __post_init__(self) -> None:
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, lq: Tensor) -> Tensor:
        x = np.ascontiguousarray(lq.detach().cpu().numpy(), dtype=np.float32)
        (pred,) = self.session.run(None, {self.input_name: x})
        return torch.from_numpy(pred)


Runner = TorchRunner | OnnxRunner


@dataclass(frozen=True)
class LoadedModel:
    """A runner and the model's own description (the `create_model` config and the info dict)."""

    runner: Runner
    config: dict[str, Any]
    info: dict[str, Any]


def load_runner(
    path: Path,
    *,
    backend: str = "torch",
    device: str = "auto",
    threads: int | None = None,
    opt_level: str = "all",
    precision: str = "fp32",
) -> LoadedModel:
    """Load a model file (safetensors, or ONNX from `decrappify export`) into a runner.

    The file's content says what it is, whatever its name: an ONNX file always runs on ONNX Runtime (the
    `backend` asked for is only a choice for safetensors files). `precision` ("auto", "fp32", "bf16"; see
    `decrappify.inference.precision`) applies to the torch backend;
    ONNX graphs run in fp32, so asking them for bf16 is a `ConfigError`.
    """
    onnx_file = is_onnx_file(path)
    check_backend(backend, precision, onnx=onnx_file)
    if onnx_file:
        return _load_onnx_file(path, resolve_device(device), threads, opt_level)
    model, config, info = load_model(path, device="cpu")
    return runner_for(model, config, info, backend=backend, device=device, threads=threads, opt_level=opt_level,
                      precision=precision)  # fmt: skip


def check_backend(backend: str, precision: str, *, onnx: bool = False) -> None:
    """`ConfigError` for an unknown backend, or bf16 asked of ONNX Runtime (its graphs run in fp32)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if check_precision(precision) == "bf16" and (backend == "onnx" or onnx):
        raise ConfigError("precision bf16 runs with the torch backend only; ONNX graphs run in fp32")


def runner_for(
    model: nn.Module,
    config: dict[str, Any],
    info: dict[str, Any],
    *,
    backend: str = "torch",
    device: str = "auto",
    threads: int | None = None,
    opt_level: str = "all",
    precision: str = "fp32",
) -> LoadedModel:
    """A loaded (CPU, fp32) model as a torch runner in the precision asked for, or exported to ONNX Runtime."""
    check_backend(backend, precision)
    torch_device = resolve_device(device)
    scale, multiple = int(getattr(model, "scale", 1)), size_multiple_of(model)
    if backend == "torch":
        resolved = resolve_precision(precision, torch_device, info)
        return LoadedModel(TorchRunner(model, torch_device, scale, multiple, precision=resolved), config, info)
    onnx_bytes = export_onnx(model, None, config=config, info=info)
    session = create_session(onnx_bytes, device=torch_device, threads=threads, opt_level=opt_level)
    return LoadedModel(OnnxRunner(session, scale, multiple), config, info)


def _load_onnx_file(path: Path, device: torch.device, threads: int | None, opt_level: str) -> LoadedModel:
    session = create_session(path, device=device, threads=threads, opt_level=opt_level)
    meta = session.get_modelmeta().custom_metadata_map
    try:
        config = json.loads(meta.get(METADATA_CONFIG, "{}"))
        info = json.loads(meta.get(METADATA_INFO, "{}"))
        scale = int(meta.get(METADATA_SCALE, 0))
        multiple = int(meta.get(METADATA_MULTIPLE, DEFAULT_SIZE_MULTIPLE))
    except (ValueError, TypeError, AttributeError) as error:
        raise WeightsError(f"{path}: corrupt decrappify metadata in the ONNX file ({error})") from error
    if scale <= 0:
        raise WeightsError(f"{path}: not exported by `decrappify export` (no scale in its metadata)")
    return LoadedModel(OnnxRunner(session, scale, multiple), config, info)
