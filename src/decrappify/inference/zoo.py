"""The shipped models: which ones exist, what they do, and where their files are.

Shipped models live in the package folder `decrappify/models/`. Each is one `.safetensors` file whose metadata
already says what it is (task, scale, metrics: see `weights.save_model`); an optional `registry.json` there can
give a file a different name, a description, or override those fields:

    {"models": [{"name": "restore-x4", "file": "restore-x4.safetensors", "description": "..."}]}

Without a registry every `.safetensors` file is listed under its metadata name (or its file stem).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decrappify.errors import ConfigError, WeightsError
from decrappify.io.model_metadata import read_model_metadata

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"  # package data beside the subpackages
REGISTRY_FILE = "registry.json"
#: What `restore`, `benchmark` and the service run when no model is named: the perceptual model, since it met every
#: bar of issue 17 on BSD100 (docs/nogan.md). Its L1 twin is one `--model restore-x4` away.
DEFAULT_MODEL = "restore-x4-gan"
#: The faithful end of the default's strength dial: `--strength` without `--model` starts from this L1 model, whose
#: file names the default as its pair (S = 0 this model, S = 1 the default's look).
FIDELITY_MODEL = "restore-x4"
MODEL_SUFFIXES = (".safetensors", ".onnx")


@dataclass(frozen=True)
class ModelEntry:
    """One shipped model, as `decrappify models` lists it."""

    name: str
    task: str
    scale: int
    path: Path
    size_bytes: int
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    ensemble: str = "none"  # the self-ensemble it runs as by default (`decrappify.inference.ensemble`)
    precision: str | None = None  # the precision its file pins under `--precision auto` (None: bf16 where native)


def _entry_from_file(path: Path, overrides: dict[str, Any]) -> ModelEntry:
    """Fill an entry from the file's own metadata, with the registry's fields taking precedence."""
    config, info = read_model_metadata(path)
    merged = {**info, **overrides}
    return ModelEntry(
        name=str(merged.get("name") or path.stem),
        task=str(merged.get("task", "restore")),
        scale=int(merged.get("scale", config.get("scale", 1))),
        path=path,
        size_bytes=path.stat().st_size,
        metrics=dict(merged.get("metrics") or {}),
        description=str(merged.get("description", "")),
        ensemble=str(merged.get("ensemble") or "none"),
        precision=str(merged["precision"]) if merged.get("precision") else None,
    )


def _registry_rows(models_dir: Path) -> list[dict[str, Any]] | None:
    registry = models_dir / REGISTRY_FILE
    if not registry.is_file():
        return None
    try:
        rows = json.loads(registry.read_text(encoding="utf-8")).get("models", [])
    except (OSError, ValueError, AttributeError) as error:
        raise WeightsError(f"{registry}: not a readable model registry ({error})") from error
    if not isinstance(rows, list) or not all(isinstance(row, dict) and "file" in row for row in rows):
        raise WeightsError(f'{registry}: "models" must be a list of objects, each with a "file"')
    return rows


def list_models(models_dir: Path | None = None) -> list[ModelEntry]:
    """Every shipped model, sorted by name; [] when none is installed. Unreadable files are skipped with a warning."""
    models_dir = MODELS_DIR if models_dir is None else Path(models_dir)
    rows = _registry_rows(models_dir)
    if rows is None:
        rows = [{"file": path.name} for path in sorted(models_dir.glob("*.safetensors"))]
    entries = []
    for row in rows:
        path = models_dir / row["file"]
        try:
            entries.append(_entry_from_file(path, {k: v for k, v in row.items() if k != "file"}))
        except WeightsError as error:
            log.warning("skipping shipped model: %s", error)
    return sorted(entries, key=lambda entry: entry.name)


def shipped_names(models_dir: Path | None = None) -> set[str]:
    """The names of the shipped models: reserved, so that no other model file shows up under one of them."""
    return {entry.name for entry in list_models(models_dir)}


def display_name(path: Path, info: dict[str, Any], models_dir: Path | None = None) -> str:
    """The name a model file is shown under (banners, evaluate rows): its stored name, unless that is a shipped
    model's name and the file is not that shipped model, as for files trained before names were reserved; then
    its folder and stem, "sr-x4/model" for runs/sr-x4/model.safetensors."""
    name = str(info.get("name") or path.stem)
    shipped = MODELS_DIR if models_dir is None else Path(models_dir)
    if path.resolve().parent == shipped.resolve() or name not in shipped_names(models_dir):
        return name
    return f"{path.resolve().parent.name}/{path.stem}"


def _looks_like_path(text: str) -> bool:
    return text.endswith(MODEL_SUFFIXES) or "/" in text or "\\" in text


def resolve_model(name_or_path: str | Path, models_dir: Path | None = None) -> Path:
    """The model file for a shipped model's name or a path; `ConfigError` naming the choices when neither fits."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if _looks_like_path(text):
        raise ConfigError(f"{text}: model file not found")
    entries = list_models(models_dir)
    for entry in entries:
        if entry.name == text:
            return entry.path
    if not entries:
        raise ConfigError(
            f"model '{text}': no shipped model is installed yet; pass --model PATH to a .safetensors model file"
        )
    names = ", ".join(entry.name for entry in entries)
    raise ConfigError(
        f"unknown model '{text}'; choose one of: {names} (or pass a path to a .safetensors file)"
    )
