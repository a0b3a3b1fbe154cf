"""Published peer super-resolution models, run through OpenCV's `dnn_superres`, as comparison rows in `evaluate`.

The files are the TensorFlow graphs OpenCV documents (`FSRCNN_x4.pb`, `FSRCNN-small_x3.pb`, `ESPCN_x2.pb`,
`LapSRN_x8.pb`, `EDSR_x4.pb`): the name before `_x` picks the network (`FSRCNN-small` is a smaller FSRCNN), the
number after it the scale. OpenCV is optional (`pip install 'decrappify[bench]'`), so it is imported only here.
OpenCV works on BGR uint8: the degraded input is already 8-bit, so converting RGB float -> BGR uint8 and back is
exact.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decrappify.errors import ConfigError, InputError

log = logging.getLogger(__name__)

# dnn_superres's `setModel` names, keyed by the lower-cased file prefix before any "-variant".
ALGORITHMS: tuple[str, ...] = ("edsr", "espcn", "fsrcnn", "lapsrn")
_PEER_FILE = re.compile(r"^(?P<name>[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)_x(?P<scale>[0-9]+)\.pb$")
INSTALL_HINT = "install the optional extra: pip install 'decrappify[bench]' (opencv-contrib-python-headless)"


@dataclass(frozen=True)
class PeerModel:
    """One `.pb` file: `name` as in the file ("FSRCNN-small"), OpenCV's `algorithm` ("fsrcnn"), its `scale`."""

    name: str
    algorithm: str
    scale: int
    path: Path


def find_peer_models(peers_dir: str | Path, scale: int | None = None) -> list[PeerModel]:
    """The peer files in `peers_dir` (at `scale` if given), sorted by name; files of unknown networks skipped."""
    root = Path(peers_dir)
    if not root.is_dir():
        raise InputError(root, "peers folder not found")
    found = []
    for path in sorted(root.glob("*.pb")):
        match = _PEER_FILE.match(path.name)
        algorithm = match["name"].split("-")[0].lower() if match else ""
        if algorithm not in ALGORITHMS:
            log.warning("%s: not a dnn_superres model name (expected e.g. FSRCNN_x4.pb); skipped", path)
            continue
        if scale is None or int(match["scale"]) == scale:
            found.append(PeerModel(match["name"], algorithm, int(match["scale"]), path))
    return found


def _dnn_superres():
    """OpenCV's dnn_superres module, or a ConfigError saying how to get it."""
    try:
        import cv2
    except ImportError as error:
        raise ConfigError(f"--peers needs OpenCV: {INSTALL_HINT}") from error
    if not hasattr(cv2, "dnn_superres"):
        raise ConfigError(f"this OpenCV build has no dnn_superres module: {INSTALL_HINT}")
    return cv2.dnn_superres


class PeerMethod:
    """A peer model as an `evaluate` method: named like `FSRCNN (opencv)`; RGB float in, RGB float out."""

    def __init__(self, model: PeerModel):
        self.model = model
        self.name = f"{model.name} (opencv)"
        self.scale = model.scale
        self._net = _dnn_superres().DnnSuperResImpl_create()
        try:
            self._net.readModel(str(model.path))
        except Exception as error:  # cv2.error: a corrupt or foreign file
            raise InputError(model.path, f"OpenCV cannot read this model: {error}") from error
        self._net.setModel(model.algorithm, model.scale)

    def __call__(self, rgb_lq: np.ndarray) -> np.ndarray:
        bgr = np.rint(np.clip(rgb_lq, 0.0, 1.0) * 255.0).astype(np.uint8)[:, :, ::-1]
        out = self._net.upsample(np.ascontiguousarray(bgr))
        return np.ascontiguousarray(out[:, :, ::-1], dtype=np.float32) / 255.0


def load_peers(peers_dir: str | Path, scale: int) -> list[PeerMethod]:
    """A method per peer file at `scale` (none, with a warning, when the folder has none at that scale)."""
    models = find_peer_models(peers_dir, scale)
    if not models:
        log.warning("%s: no peer models for x%d (files like FSRCNN_x%d.pb)", peers_dir, scale, scale)
        return []
    _dnn_superres()  # fail with the install hint before anything else
    return [PeerMethod(model) for model in models]
