"""What a model file says about itself, read from its safetensors header without loading torch or the weights.

A decrappify model file is a ``.safetensors`` file whose string metadata holds the ``create_model`` config
(``decrappify.config``) and an info dict (``decrappify.info``: name, task, scale, metrics, ...), both as JSON.
Listing the shipped models needs only this, so ``decrappify models`` stays fast and torch-free; building the
model from the file is :func:`decrappify.weights.load_model`'s job.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from decrappify.errors import WeightsError

CONFIG_KEY = "decrappify.config"
INFO_KEY = "decrappify.info"
FORMAT_KEY = "decrappify.format"
FORMAT_VERSION = "1"


def is_onnx_file(path: str | Path) -> bool:
    """Whether `path` holds an ONNX graph, judged by its first bytes, whatever its name.

    A safetensors file opens with its header's length (8 bytes, little-endian) and then `{`; an ONNX file is a
    protobuf `ModelProto`, whose first field every writer puts first: `ir_version` (field 1, varint: byte
    0x08). A file that is neither is left to the safetensors reader, which names the problem.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) == 9 and head[8:9] == b"{":
        return False
    return head[:1] == b"\x08"


def read_model_metadata(path: str | Path) -> tuple[dict, dict]:
    """The (config, info) stored in a model file; ``WeightsError`` naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors model file ({exc})") from exc
    if CONFIG_KEY not in meta:
        raise WeightsError(f"{path}: no '{CONFIG_KEY}' metadata: not a decrappify model file")
    version = meta.get(FORMAT_KEY, FORMAT_VERSION)  # every file we wrote has it; one without is read as 1
    if version != FORMAT_VERSION:
        raise WeightsError(
            f"{path}: model file format {version!r}, but this decrappify reads format {FORMAT_VERSION!r} only "
            "(a newer decrappify wrote it, or the file was altered)"
        )
    try:
        config = json.loads(meta[CONFIG_KEY])
        info = json.loads(meta.get(INFO_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: corrupt model metadata ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(info, dict):
        raise WeightsError(f"{path}: corrupt model metadata (config and info must be JSON objects)")
    _check_info_types(path, info)
    return config, info


#: The info entries the library reads, and what each must hold (the rest are descriptions, shown as they are).
_INFO_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "task": (str,),
    "ensemble": (str,),
    "precision": (str,),
    "render_size": (int,),
    "scale": (int,),
}


def _check_info_types(path: Path, info: dict) -> None:
    """`WeightsError` for an info entry of the wrong type, before anything converts it (`int("x")` would not
    make a one-line error)."""
    for key, types in _INFO_TYPES.items():
        value = info.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise WeightsError(f"{path}: corrupt model metadata ('{key}' is {value!r})")
    render_size = info.get("render_size")
    if render_size is not None and render_size < 0:
        raise WeightsError(f"{path}: corrupt model metadata ('render_size' is {render_size!r})")
