"""`Picture`, the in-memory image every reader returns, and its conversions to and from values and Pillow.

Models only see `Picture.rgb` (float32, H x W x 3, in [0, 1]); alpha, bit depth, grey-ness and metadata ride
along so a writer can put the picture back as it came. Every reader ends the same way, with H x W x C values in
[0, 1] (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) that `picture_from_decoded` orients and splits; Pillow's many
modes become such values in `values_from_pillow`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from decrappify.io.exif import orient, read_exif

log = logging.getLogger(__name__)

_GREY_MODES = {"1", "L", "LA", "La"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_INT16_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


@dataclass(frozen=True, eq=False)
class Picture:
    """Colour data for the models plus everything needed to write the picture back as it came."""

    rgb: np.ndarray  # float32, H x W x 3, values in [0, 1] (grey sources are replicated to 3 channels)
    alpha: np.ndarray | None = None  # float32, H x W in [0, 1], or None
    bit_depth: int = 8  # 8 or 16: what the source stored, and what we write back
    grayscale: bool = False  # source had one colour channel: written back as grey
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation already applied and reset to 1
    source_format: str | None = None  # Pillow format name of the source ("PNG", "JPEG", ...)

    def __post_init__(self) -> None:
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.float32:
            raise ValueError(f"Picture.rgb must be float32 H x W x 3, got {rgb.dtype} {rgb.shape}")
        if self.alpha is not None and (self.alpha.shape != rgb.shape[:2] or self.alpha.dtype != np.float32):
            raise ValueError(
                f"Picture.alpha must be float32 {rgb.shape[:2]}, got {self.alpha.dtype} {self.alpha.shape}"
            )
        if self.bit_depth not in (8, 16):
            raise ValueError(f"Picture.bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow counts."""
        return self.width, self.height

    def with_rgb(self, rgb: np.ndarray) -> Picture:
        """New colour data (clipped to [0, 1]) with the same metadata, alpha resized if the size changes."""
        rgb = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"with_rgb needs an H x W x 3 array, got {rgb.shape}")
        alpha = self.alpha
        if alpha is not None and alpha.shape != rgb.shape[:2]:
            alpha = resize_plane(alpha, rgb.shape[1], rgb.shape[0])
        return dataclasses.replace(self, rgb=rgb, alpha=alpha)


def resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a float plane (alpha) with Lanczos, clipped to [0, 1] because Lanczos rings past the edges."""
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def icc_space(icc: bytes) -> bytes:
    """The data colour space of an ICC profile (b"RGB ", b"GRAY", b"CMYK", ...): header bytes 16-19."""
    return bytes(icc[16:20])


def quantize(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """[0, 1] floats to uint8 / uint16 by rounding (so 8-bit and 16-bit values round-trip exactly)."""
    top = 255.0 if bit_depth == 8 else 65535.0
    scaled = np.clip(values, 0.0, 1.0) * np.float32(top)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8 if bit_depth == 8 else np.uint16)


# ----------------------------------------------------------------------------------------- values to pictures


def picture_from_values(
    values: np.ndarray, bit_depth: int, icc: bytes | None, exif: bytes | None, fmt: str | None
) -> Picture:
    """Split H x W x C values (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) into colour and alpha."""
    channels = values.shape[2]
    colour = values[..., : 1 if channels < 3 else 3]
    alpha = np.ascontiguousarray(values[..., -1]) if channels in (2, 4) else None
    grayscale = channels < 3
    rgb = np.ascontiguousarray(np.repeat(colour, 3, axis=2) if grayscale else colour)
    if icc is not None and icc_space(icc) not in ((b"GRAY", b"RGB ") if grayscale else (b"RGB ",)):
        log.debug("ICC profile for %r dropped: it does not fit the pixels", icc_space(icc))
        icc = None
    return Picture(rgb, alpha, bit_depth, grayscale, icc, exif, fmt)


def picture_from_decoded(
    image: Image.Image, values: np.ndarray, bit_depth: int, icc: bytes | None, path: Path | None = None
) -> Picture:
    """A picture from the decoded values of an opened image, its EXIF orientation applied to them.

    The EXIF is read after the pixels were decoded, so a broken file fails with the decoder's reason, not a
    metadata one.
    """
    exif, orientation = read_exif(path, image)
    return picture_from_values(orient(values, orientation), bit_depth, icc, exif, image.format)


def values_from_pillow(image: Image.Image) -> tuple[np.ndarray, int, bytes | None]:
    """Values in [0, 1] (H x W x C float32), bit depth and ICC profile of an image Pillow can hold."""
    icc = image.info.get("icc_profile") or None
    mode = image.mode
    if mode in _INT16_MODES or mode == "F":  # 16-bit grey ("I" is how some plugins hand it over), float grey
        raw = np.asarray(image)
        grey = np.clip(raw.astype(np.float32) / (1.0 if mode == "F" else 65535.0), 0.0, 1.0)[..., None]
        transparent = image.info.get("transparency")
        if isinstance(transparent, int) and mode != "F":
            grey = np.concatenate([grey, (raw != transparent).astype(np.float32)[..., None]], axis=2)
        return grey, 16, icc
    if mode == "CMYK":
        image, icc = _cmyk_to_rgb(image, icc)
        mode = "RGB"
    has_alpha = mode in _ALPHA_MODES or "transparency" in image.info  # tRNS, GIF index: Pillow converts both
    target = ("LA" if has_alpha else "L") if mode in _GREY_MODES else ("RGBA" if has_alpha else "RGB")
    converted = image if image.mode == target else image.convert(target)
    values = np.array(converted, dtype=np.float32)
    values /= 255.0
    return (values[..., None] if values.ndim == 2 else values), 8, icc


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """CMYK through its own ICC profile to sRGB if it has one (the naive formula is far off for print CMYK)."""
    if icc is not None and icc_space(icc) == b"CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(image, source, _srgb_profile(), outputMode="RGB")
            return rgb, _srgb_profile().tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.warning("CMYK ICC profile unusable (%s); converting without it", exc)
    return image.convert("RGB"), None


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# ------------------------------------------------------------------------------------ in-memory Pillow images


def picture_from_pil(image: Image.Image, like: Picture | None = None) -> Picture:
    """A `Picture` from an in-memory Pillow image (8-bit colour at most; `read_image` is the lossless path).

    With `like`, the metadata (bit depth, grey-ness, ICC, EXIF, format) come from it, and so does alpha when
    the image has none (resized to the image's size). Without it, EXIF orientation is applied as `read_image`
    does.
    """
    values, bit_depth, icc = values_from_pillow(image)
    if like is None:
        return picture_from_decoded(image, values, bit_depth, icc)
    picture = picture_from_values(values, like.bit_depth, like.icc_profile, like.exif, like.source_format)
    alpha = picture.alpha
    if alpha is None and like.alpha is not None:
        same_size = like.alpha.shape == picture.rgb.shape[:2]
        alpha = like.alpha if same_size else resize_plane(like.alpha, *picture.size)
    return dataclasses.replace(picture, alpha=alpha, grayscale=like.grayscale)


def picture_to_pil(picture: Picture) -> Image.Image:
    """An 8-bit RGB view of the colour data (degradations work on these)."""
    return Image.fromarray(quantize(picture.rgb, 8))
