"""`--strength S`: a restorer part way between two models, from fidelity (0) to the pair's look (1).

ESRGAN's network interpolation: two models fine-tuned from the same starting weights (an L1 model and its GAN
fine-tune) can be mixed weight by weight, theta = (1 - S) theta_0 + S theta_1, and the mix behaves as a model
in between, at one model's cost. That needs the same architecture and the same tensors; any other pair with the
same scale and task is mixed pixel by pixel instead, (1 - S) out_0 + S out_1, at both models' cost, and a
warning says so.

Which model a file pairs with: `blend_with` (`--blend-with NAME|PATH`), else the model file's info key
`strength_pair` (a shipped model's name, or a file name beside the model file), which
`update_model_info(path, {"strength_pair": "restore-x4-gan"})` sets on a shipped L1 model once its GAN
fine-tune ships. S = 0 is the model itself, S = 1 its pair.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decrappify.errors import ConfigError
from decrappify.inference.precision import describe_precision
from decrappify.inference.restorer import DEFAULT_TILE, Restorer
from decrappify.inference.runners import check_backend, resolve_device, runner_for
from decrappify.inference.zoo import display_name, resolve_model
from decrappify.io.model_metadata import is_onnx_file, read_model_metadata
from decrappify.nn.models import create_model, size_multiple_of
from decrappify.tasks import is_colour_task
from decrappify.weights import load_into, load_model

log = logging.getLogger(__name__)

STRENGTH_PAIR_KEY = "strength_pair"
MODES = ("interpolate", "blend")


def check_strength(value: float | None) -> float | None:
    """`value` as a float in [0, 1], or None; `ConfigError` otherwise."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"strength {value!r}: choose a number from 0 (the model) to 1 (its pair)")
    return number


def find_pair(model: str | Path, blend_with: str | Path | None = None) -> Path | None:
    """The model file that `model` is mixed with: `blend_with`, else the one its `strength_pair` names (a
    file beside it first, then a shipped model's name); None when it names none."""
    if blend_with is not None:
        return resolve_model(blend_with)
    path = resolve_model(model)
    if is_onnx_file(path):
        return None
    name = read_model_metadata(path)[1].get(STRENGTH_PAIR_KEY)
    if not name:
        return None
    beside = path.parent / str(name)
    for candidate in (beside, beside.with_suffix(".safetensors")):
        if candidate.is_file():
            return candidate
    try:
        return resolve_model(str(name))
    except ConfigError as error:
        raise ConfigError(f"{path}: its strength pair '{name}' is not installed ({error})") from None


class PixelBlend(nn.Module):
    """Two networks' outputs mixed: (1 - strength) first(x) + strength second(x); the fallback of `ModelPair`."""

    def __init__(self, first: nn.Module, second: nn.Module, strength: float):
        super().__init__()
        self.first, self.second, self.strength = first, second, float(strength)
        self.scale = int(getattr(first, "scale", 1))
        self.stride = math.lcm(size_multiple_of(first), size_multiple_of(second))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lerp(self.first(x), self.second(x), self.strength)


@dataclass(frozen=True)
class _Loaded:
    path: Path
    model: nn.Module
    config: dict[str, Any]
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return display_name(self.path, self.info)


class ModelPair:
    """Two model files loaded once (on the CPU); `model_at(S)` builds the mix for any strength.

    `mode` is "interpolate" (same architecture and tensors) or "blend" (`reason` says why not); a pair that
    cannot be mixed at all (another scale or task, an ONNX file) is a `ConfigError`.
    """

    def __init__(self, first: str | Path, second: str | Path):
        self.first, self.second = (_load(resolve_model(source)) for source in (first, second))
        _check_mixable(self.first, self.second)
        self.reason = interpolation_problem(self.first, self.second)
        self.mode = "interpolate" if self.reason is None else "blend"
        if self.reason is not None:
            log.warning(
                "%s and %s cannot be interpolated (%s): their outputs are blended pixel by pixel instead, which "
                "takes both models' time",
                self.first.name,
                self.second.name,
                self.reason,
            )

    def model_at(self, strength: float) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
        """(network, config, info) at `strength`: the first model at 0, the second at 1, a mix between."""
        strength = check_strength(strength)
        info = self.info_at(strength)
        if strength == 0.0:
            return self.first.model, self.first.config, info
        if strength == 1.0:
            return self.second.model, self.second.config, info
        if self.mode == "blend":
            return PixelBlend(self.first.model, self.second.model, strength).eval(), self.first.config, info
        model = create_model(self.first.config)
        load_into(model, interpolate_state(self.first.model.state_dict(), self.second.model.state_dict(),
                                           strength), what=f"{self.first.name} + {self.second.name}")  # fmt: skip
        return model.eval(), self.first.config, info

    def info_at(self, strength: float) -> dict[str, Any]:
        """The first model's info, with the mix recorded and fp32 pinned when either file pins it."""
        info = dict(self.first.info)
        info["strength"] = {"pair": self.second.name, "value": strength, "mode": self.mode}
        if "precision" in self.second.info:
            info["precision"] = self.second.info["precision"]
        return info

    def name_at(self, strength: float) -> str:
        return f"{self.first.name}+{self.second.name}@{strength:g}"

    def restorer_at(
        self,
        strength: float,
        *,
        device: str = "auto",
        backend: str = "torch",
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        threads: int | None = None,
        opt_level: str = "all",
        render_size: int | None = None,
        ensemble: str | None = None,
        precision: str = "fp32",
    ) -> Restorer:
        """A `Restorer` (the same options as `Restorer.from_pretrained`) running the mix at `strength`."""
        check_backend(backend, precision)
        model, config, info = self.model_at(strength)
        loaded = runner_for(model, config, info, backend=backend, device=device, threads=threads,
                            opt_level=opt_level, precision=precision)  # fmt: skip
        note = describe_precision(precision, resolve_device(device), info) if backend == "torch" else None
        return Restorer(loaded, name=self.name_at(strength), tile=tile, tile_overlap=tile_overlap,
                        render_size=render_size, ensemble=ensemble,
                        precision_note=note or "fp32 (ONNX Runtime)")  # fmt: skip


def _load(path: Path) -> _Loaded:
    if is_onnx_file(path):
        raise ConfigError(f"{path}: an ONNX file cannot be mixed; use its .safetensors model file with --strength")
    model, config, info = load_model(path, device="cpu")
    return _Loaded(path, model, dict(config), dict(info))


def _check_mixable(first: _Loaded, second: _Loaded) -> None:
    scales = (getattr(first.model, "scale", 1), getattr(second.model, "scale", 1))
    if scales[0] != scales[1]:
        raise ConfigError(f"cannot mix {first.name} (x{scales[0]}) with {second.name} (x{scales[1]}): scales differ")
    tasks = (str(first.info.get("task", "restore")), str(second.info.get("task", "restore")))
    if is_colour_task(tasks[0]) != is_colour_task(tasks[1]):
        raise ConfigError(f"cannot mix {first.name} ({tasks[0]}) with {second.name} ({tasks[1]}): tasks differ")


def interpolation_problem(first: _Loaded, second: _Loaded) -> str | None:
    """Why two models cannot be interpolated weight by weight, or None when they can."""
    if first.config != second.config:
        keys = sorted(k for k in {*first.config, *second.config} if first.config.get(k) != second.config.get(k))
        differences = (f"{key} {first.config.get(key)!r} vs {second.config.get(key)!r}" for key in keys[:3])
        return f"different architectures: {', '.join(differences)}"
    a, b = first.model.state_dict(), second.model.state_dict()
    if a.keys() != b.keys():
        return "different tensors"
    shapes = [key for key in a if a[key].shape != b[key].shape]
    return f"tensor {shapes[0]} differs in shape" if shapes else None


def interpolate_state(
    first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor], strength: float
) -> dict[str, torch.Tensor]:
    """(1 - strength) first + strength second, tensor by tensor; integer buffers (batch-norm counters) are the
    first's."""
    return {
        key: torch.lerp(value, second[key].to(value.dtype), strength) if value.is_floating_point() else value
        for key, value in first.items()
    }


def restorer_with_strength(
    model: str | Path,
    strength: float | None,
    *,
    blend_with: str | Path | None = None,
    **options: Any,
) -> Restorer:
    """`Restorer.from_pretrained(model, **options)`, mixed with its pair at `strength` when one is given.

    `ConfigError` when a strength is asked of a model that names no pair and no `blend_with` is given."""
    strength = check_strength(strength)
    if strength is None:
        if blend_with is not None:
            raise ConfigError("--blend-with needs --strength (0: the model, 1: the one it is blended with)")
        return Restorer.from_pretrained(model, **options)
    pair = find_pair(model, blend_with)
    if pair is None:
        raise ConfigError(
            f"--strength: {model} names no model to mix with (no '{STRENGTH_PAIR_KEY}' in its file); "
            "give one with --blend-with NAME|PATH"
        )
    return ModelPair(model, pair).restorer_at(strength, **options)
