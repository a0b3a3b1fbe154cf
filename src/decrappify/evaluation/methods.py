"""The things `evaluate` scores: the bicubic (or identity) baseline, OpenCV peers, and our models.

A method is any object with `name`, `scale` and `__call__(rgb_lq) -> rgb_out` (H x W x 3 float32 in [0, 1]),
so tests and notebooks can pass their own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from decrappify.errors import ConfigError
from decrappify.evaluation.peers import load_peers
from decrappify.inference.ensemble import model_ensemble
from decrappify.inference.restorer import Restorer

BASELINE = "bicubic"

log = logging.getLogger(__name__)


class Method(Protocol):
    """Something that restores a degraded picture: the unit `evaluate` scores and times."""

    name: str
    scale: int

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray: ...


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with rounding (clipped first, so over/undershoot cannot wrap around)."""
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


class Bicubic:
    """The baseline: Pillow BICUBIC upscaling in 8 bits (the papers' and OpenCV's reference); identity at scale 1."""

    def __init__(self, scale: int):
        self.scale = scale
        self.name = BASELINE if scale > 1 else "input"

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray:
        if self.scale == 1:
            return np.asarray(rgb_lq, dtype=np.float32)
        image = Image.fromarray(to_uint8(rgb_lq))
        size = (image.width * self.scale, image.height * self.scale)
        return np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


class ModelMethod:
    """One of our models, through `inference.restorer.Restorer` (loaded once; each call is stateless)."""

    def __init__(
        self,
        name_or_path: str | Path,
        scale: int,
        label: str | None = None,
        ensemble: str | None = None,
        precision: str = "fp32",
    ):
        self.restorer = Restorer.from_pretrained(name_or_path, ensemble=ensemble, precision=precision)
        if self.restorer.scale != scale:
            raise ConfigError(
                f"model {name_or_path} upscales x{self.restorer.scale} but this task needs x{scale}"
            )
        self.name = label or self.restorer.name + ensemble_suffix(self.restorer)
        self.scale = scale
        log.info("%s: precision %s", self.name, self.restorer.precision_note)

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray:
        return self.restorer.restore_array(rgb_lq)


def ensemble_suffix(restorer) -> str:
    """How a row's ensemble differs from the model's own: " +dihedral" (EDSR's "+" names such rows),
    " (no ensemble)", or "" when it runs as its file says."""
    if restorer.ensemble == model_ensemble(restorer.info):
        return ""
    return " (no ensemble)" if restorer.ensemble == "none" else f" +{restorer.ensemble}"


def create_methods(
    specs: Sequence[str | Method],
    scale: int,
    peers_dir: str | Path | None = None,
    ensemble: str | None = None,
    precision: str = "fp32",
) -> list[Method]:
    """The baseline, then peers from `peers_dir`, then each spec (a name, a path, or a ready `Method`).

    `ensemble` applies to the models named by specs (see `decrappify.inference.ensemble`; None: each model's own).
    """
    methods: list[Method] = [Bicubic(scale)]
    if peers_dir is not None:
        methods += load_peers(peers_dir, scale)
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str):
            methods.append(spec)
        elif spec.lower() not in (BASELINE, "input") and spec not in seen:  # the baseline is there once
            seen.add(spec)
            label, target = split_label(spec)
            methods.append(ModelMethod(target, scale, label, ensemble, precision))
    return _unique_names(methods)


def split_label(spec: str) -> tuple[str | None, str]:
    """``"LABEL=PATH"`` -> ``(LABEL, PATH)``; a plain name or path (even one holding ``=``) -> ``(None, spec)``.

    Two runs of one recipe store the same model name; a label tells their rows apart in a table.
    """
    label, sep, target = spec.partition("=")
    if not sep or not label or not target or "/" in label or Path(spec).exists():
        return None, spec
    return label, target


def _unique_names(methods: list[Method]) -> list[Method]:
    """Two models with the same stored name would share a table row: suffix the later ones."""
    names: set[str] = set()
    for method in methods:
        base, n = method.name, 2
        while method.name in names:
            method.name, n = f"{base} ({n})", n + 1
        names.add(method.name)
    return methods
