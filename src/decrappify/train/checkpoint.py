"""Training checkpoints: weights, position and optimizer state, written so that a crash never leaves half of one.

A checkpoint is a folder `RUN/checkpoints/last/` holding
  - `model.safetensors`: a `weights.save_model` file (config + info metadata), usable directly by `restore`;
  - `state.json`: the resolved training config and the position (stage, epoch, batch, step), metrics, timing;
  - `optim.pt`: the optimizer's state dict (tensors, numbers and strings only: loaded with `weights_only=True`).
It is written into a temporary folder that then replaces the old one with two renames (old -> `.last.old`,
new -> `last`), so a reader finds either the complete new checkpoint or the complete old one. Single files
(logs, sample grids, model files) go through `decrappify.io.atomic` like every file the project writes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from decrappify.errors import WeightsError
from decrappify.io.atomic import atomic_folder, atomic_write_bytes, previous_folder, remove_stale_temporaries
from decrappify.weights import check_finite, save_model

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE, STATE_FILE, OPTIM_FILE = "model.safetensors", "state.json", "optim.pt"


@dataclass
class TrainState:
    """Where training stands: enough to continue exactly where it stopped."""

    stage: int = 0  # index into config.stages
    epoch: int = 0  # epoch within the stage
    batch: int = 0  # next batch within the epoch
    step: int = 0  # optimizer steps done, over all stages
    stage_step: int = 0  # optimizer steps done in this stage
    stage_total: int = 0  # planned steps of this stage (the schedule's length)
    elapsed: float = 0.0  # training seconds so far, over all sessions
    stage_budget: float = 0.0  # time-budget mode: seconds this stage may use (0: not budgeted)
    stage_started: float = 0.0  # `elapsed` when this stage began
    epoch_steps: int = 0  # steps done in the current epoch (for its mean loss and speed)
    epoch_loss: float = 0.0  # sum of those steps' losses
    epoch_seconds: float = 0.0  # time spent in those steps (validation excluded)
    # the best validation score so far, by `validation.selection_for` (what best.safetensors holds)
    best_score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the last validation's metrics
    done: bool = False  # all stages finished

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state `to_dict` wrote (unknown keys ignored); `TypeError` naming the first value of the wrong type."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if "best_score" not in data:  # checkpoints before 2026-12 kept the best PSNR_Y as best_psnr
            values["best_score"] = data.get("best_psnr")
        for name, value in values.items():
            _check_state_value(name, value)
        return cls(**values)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: How a `TrainState` field's value is checked, by its annotation (a float field also takes a JSON integer).
_VALUE_CHECKS = {
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "float": _is_number,
    "bool": lambda value: isinstance(value, bool),
    "float | None": lambda value: value is None or _is_number(value),
    "dict[str, float]": lambda value: isinstance(value, dict)
    and all(isinstance(k, str) and _is_number(v) for k, v in value.items()),
}


def _check_state_value(name: str, value: object) -> None:
    """`TypeError` naming the field when `value` is not what its annotation says."""
    kind = next(str(f.type) for f in dataclasses.fields(TrainState) if f.name == name)
    if not _VALUE_CHECKS[kind](value):
        raise TypeError(f"{name} = {value!r} is not a valid {kind}")


@dataclass
class Checkpoint:
    """A checkpoint read back: the weights (a state dict), the run's config and position, the optimizer state."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    state: TrainState
    optimizer: dict[str, Any]
    info: dict[str, Any]


def save_checkpoint(
    folder: str | Path,
    *,
    model: torch.nn.Module,
    model_config: dict[str, Any],
    info: dict[str, Any],
    config: dict[str, Any],
    state: TrainState,
    optimizer: dict[str, Any],
    name: str = "last",
) -> Path:
    """Write checkpoint `folder/name/` atomically (see the module docstring); returns its path."""
    final = Path(folder) / name
    with atomic_folder(final) as tmp:
        save_model(model, tmp / MODEL_FILE, model_config, info)
        buffer = io.BytesIO()
        torch.save(optimizer, buffer)
        atomic_write_bytes(tmp / OPTIM_FILE, buffer.getvalue())
        payload = {"format": FORMAT_VERSION, "config": config, "state": state.to_dict(), "info": info}
        atomic_write_bytes(tmp / STATE_FILE, json.dumps(payload, indent=2).encode("utf-8"))
    return final


def remove_interrupted_writes(run_dir: str | Path) -> None:
    """Clear the temporaries that a killed run left in `run_dir` and its `checkpoints/` (the owner is starting)."""
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        remove_stale_temporaries(folder)


def find_checkpoint(folder: str | Path, name: str = "last") -> Path | None:
    """The complete checkpoint `folder/name`, or the previous one if a save was cut between its two renames."""
    final = Path(folder) / name
    for candidate in (final, previous_folder(final)):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder written by `save_checkpoint`; `WeightsError` naming the file on any problem.

    Every file is checked before use, since a run folder may be shared or copied: `state.json` must hold the
    layout `save_checkpoint` writes (types included), the weights must be finite, and `optim.pt` must hold only
    tensors, numbers and strings. A pickle holding anything else is refused without being run, and the message
    never suggests loading it unsafely.
    """
    path = Path(path)
    try:
        text = (path / STATE_FILE).read_text(encoding="utf-8")
        state_dict = load_file(path / MODEL_FILE)
    except FileNotFoundError as error:
        raise WeightsError(f"{path}: incomplete checkpoint, missing {Path(error.filename).name}") from None
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise WeightsError(f"{path}: cannot read checkpoint: {error}") from None
    config, state, info = _parse_state_file(path / STATE_FILE, text)
    check_finite(state_dict, what=str(path / MODEL_FILE))
    optimizer = _load_optimizer_state(path / OPTIM_FILE)
    return Checkpoint(path, state_dict, config, state, optimizer, info)


def _parse_state_file(file: Path, text: str) -> tuple[dict[str, Any], TrainState, dict[str, Any]]:
    """(config, state, info) from `state.json`, each checked for its type; `WeightsError` naming the file."""
    try:
        payload = json.loads(text)
    except ValueError as error:
        raise WeightsError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise WeightsError(f"{file}: expected a JSON object, got {type(payload).__name__}")
    if payload.get("format") != FORMAT_VERSION:
        raise WeightsError(f"{file}: checkpoint format {payload.get('format')!r}, expected {FORMAT_VERSION}")
    for key in ("config", "state"):
        if not isinstance(payload.get(key), dict):
            found = type(payload[key]).__name__ if key in payload else "nothing"
            raise WeightsError(f"{file}: '{key}' must be a JSON object, found {found}")
    info = payload.get("info", {})
    if not isinstance(info, dict):
        raise WeightsError(f"{file}: 'info' must be a JSON object, found {type(info).__name__}")
    try:
        state = TrainState.from_dict(payload["state"])
    except TypeError as error:
        raise WeightsError(f"{file}: 'state': {error}") from None
    return payload["config"], state, info


def _load_optimizer_state(file: Path) -> dict[str, Any]:
    """The optimizer state dict in `optim.pt`, read with `weights_only=True`; `WeightsError` naming the file.

    PyTorch's own messages are left out on purpose: for a refused object they advise `weights_only=False`,
    which would run whatever the file holds.
    """
    try:
        optimizer = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{file.parent}: incomplete checkpoint, missing {file.name}") from None
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{file}: holds Python objects other than tensors, numbers and strings; refused unread "
            "(an optimizer state never does: the file was replaced or damaged)"
        ) from None
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for a damaged file
        raise WeightsError(f"{file}: not a readable optimizer state ({type(error).__name__})") from None
    if not isinstance(optimizer, dict):
        raise WeightsError(f"{file}: expected an optimizer state dict, found {type(optimizer).__name__}")
    return optimizer
