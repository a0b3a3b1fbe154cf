"""Is watermark text still there? An offline text detector run over whole pictures.

The detector is PP-OCRv4's text-detection network (a DB segmentation net) from the PyPI package
`rapidocr-onnxruntime` 1.4.4, run through ONNX Runtime with that package's settings (shorter side scaled up to
736 px, sides multiples of 32, probability threshold 0.3, box score 0.5, unclip ratio 1.6). Only the `.onnx` file
is read; the package's own code is not imported, since it would also need `opencv-python`, which would replace
the OpenCV contrib build `decrappify[bench]` installs. Its box-growing (polygon unclipping) is approximated by
growing each connected region's bounding rectangle by area x ratio / perimeter, the same distance, and its
box score is the mean probability over that rectangle (rapidocr's "fast" score over the rotated rectangle).
`benchmarks/text_detection_parity.py` compares the result with rapidocr's own pipeline (docs/benchmarks).

`share_of_boxes_with_text(rgb, boxes)`: the share of watermark boxes where the detector finds text, a detection
counting for a box when most of its area lies inside. Run on the whole picture at native size: on a tight crop
the detector upsamples ~13x and calls texture text.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from decrappify.errors import ConfigError

DETECTOR_PACKAGE = "rapidocr_onnxruntime"
DETECTOR_FILE = "models/ch_PP-OCRv4_det_infer.onnx"
INSTALL_HINT = "pip install --no-deps rapidocr-onnxruntime==1.4.4 (and onnxruntime: decrappify[bench])"
SHORT_SIDE, MAX_SIDE = 736, 2000
PIXEL_THRESHOLD, BOX_THRESHOLD, UNCLIP_RATIO, MIN_SIDE = 0.3, 0.5, 1.6, 3

Box = tuple[int, int, int, int]


def detector_path() -> Path:
    """The PP-OCRv4 detection model inside the installed package (the package is located, not imported)."""
    spec = importlib.util.find_spec(DETECTOR_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"text detection needs the PP-OCR models: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / DETECTOR_FILE
    if not path.is_file():
        raise ConfigError(f"text detection model {path} is missing: reinstall with {INSTALL_HINT}")
    return path


def available() -> bool:
    """Whether the detector (its model file and ONNX Runtime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in (DETECTOR_PACKAGE, "onnxruntime"))


@functools.lru_cache(maxsize=1)
def _session():
    try:
        import onnxruntime
    except ImportError as error:
        raise ConfigError("text detection needs onnxruntime: pip install decrappify[bench]") from error
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(detector_path()), options, providers=["CPUExecutionProvider"])


def _network_size(height: int, width: int) -> tuple[int, int]:
    """rapidocr's sizing: the shorter side up to 736, the longer one at most 2000, both multiples of 32."""
    ratio = max(SHORT_SIDE / min(height, width), 1.0)
    ratio = min(ratio, MAX_SIDE / max(height, width)) if max(height, width) * ratio > MAX_SIDE else ratio
    return (max(round(height * ratio / 32) * 32, 32), max(round(width * ratio / 32) * 32, 32))


def detect_text(rgb: np.ndarray) -> list[Box]:
    """Text regions in one H x W x 3 [0, 1] picture, as (left, top, right, bottom) boxes in its pixels."""
    height, width = rgb.shape[:2]
    net_h, net_w = _network_size(height, width)
    image = Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    resized = np.asarray(image.resize((net_w, net_h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    blob = ((resized[..., ::-1] - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()  # BGR, as the model was trained
    session = _session()
    probability = session.run(None, {session.get_inputs()[0].name: blob})[0][0, 0]
    mask = ndimage.binary_dilation(probability > PIXEL_THRESHOLD, structure=np.ones((2, 2), bool))
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    boxes = []
    for region in ndimage.find_objects(labels):
        if region is None:
            continue
        if probability[region].mean() < BOX_THRESHOLD:  # over the rectangle, as rapidocr's "fast" score
            continue
        top, bottom = region[0].start, region[0].stop
        left, right = region[1].start, region[1].stop
        box_h, box_w = bottom - top, right - left
        if min(box_h, box_w) < MIN_SIDE:
            continue
        grow = box_h * box_w * UNCLIP_RATIO / (2 * (box_h + box_w))
        sx, sy = width / net_w, height / net_h
        boxes.append((
            max(int((left - grow) * sx), 0), max(int((top - grow) * sy), 0),
            min(int(np.ceil((right + grow) * sx)), width), min(int(np.ceil((bottom + grow) * sy)), height),
        ))  # fmt: skip
    return boxes


def _mostly_inside(detection: Box, box: Box) -> bool:
    left, top = max(detection[0], box[0]), max(detection[1], box[1])
    right, bottom = min(detection[2], box[2]), min(detection[3], box[3])
    overlap = max(right - left, 0) * max(bottom - top, 0)
    area = (detection[2] - detection[0]) * (detection[3] - detection[1])
    return area > 0 and overlap > 0.5 * area


def share_of_boxes_with_text(rgb: np.ndarray, boxes: Sequence[Box]) -> float | None:
    """Share of `boxes` (in `rgb`'s pixels) holding most of some text detection; None without boxes."""
    if not boxes:
        return None
    detections = detect_text(rgb)
    found = sum(any(_mostly_inside(d, box) for d in detections) for box in boxes)
    return found / len(boxes)
