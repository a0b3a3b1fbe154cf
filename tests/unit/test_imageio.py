"""imageio: every mode round-trips with its alpha and bit depth; metadata survives; bad files fail clearly."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from decrappify.errors import InputError, OutputError
from decrappify.io import images as imageformats
from decrappify.io.images import (
    DEFAULT_MAX_PIXELS,
    Picture,
    is_image_path,
    picture_from_pil,
    picture_to_pil,
    read_image,
    write_image,
)

H, W = 6, 5  # not square, so a rotation shows in the shape


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _u8(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, (H, W, *shape), dtype=np.uint8)


def _u16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 65536, (H, W, *shape), dtype=np.uint16)


def _expect(
    picture: Picture, values: np.ndarray, top: int, *, grey: bool, alpha: bool, bit_depth: int
) -> None:
    """The picture holds `values` (H x W x C integers up to `top`) with the right alpha, depth and grey-ness."""
    values = values.reshape(H, W, -1).astype(np.float64) / top
    colour = np.repeat(values[..., :1], 3, axis=2) if grey else values[..., :3]
    assert picture.rgb.dtype == np.float32 and picture.rgb.shape == (H, W, 3)
    np.testing.assert_allclose(picture.rgb, colour, atol=1e-6)
    assert (picture.alpha is not None) == alpha
    if alpha:
        np.testing.assert_allclose(picture.alpha, values[..., -1], atol=1e-6)
    assert picture.bit_depth == bit_depth
    assert picture.grayscale == grey


def _assert_same(a: Picture, b: Picture) -> None:
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert (a.alpha is None) == (b.alpha is None)
    if a.alpha is not None:
        np.testing.assert_array_equal(a.alpha, b.alpha)
    assert (a.bit_depth, a.grayscale) == (b.bit_depth, b.grayscale)


# ----------------------------------------------------------------------------------------- modes and round trips


def _palette_image(rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    index = rng.integers(0, 4, (H, W), dtype=np.uint8)
    image = Image.frombytes("P", (W, H), index.tobytes())
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 99, 199]], dtype=np.uint8)
    image.putpalette(palette.ravel().tolist())
    return image, np.concatenate([palette[index], np.zeros((H, W, 1), np.uint8)], axis=2)


def _make_source(kind: str, tmp_path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray, int, dict]:
    """A file of the given kind, the values it holds, their maximum, and what read_image should report."""
    colour = {"grey": False, "bit_depth": 8}
    if kind == "1":
        values = (rng.random((H, W)) > 0.5).astype(np.uint8)
        Image.fromarray(values * 255).convert("1").save(path := tmp_path / "one.png")
        return path, values, 1, {"grey": True, "alpha": False, "bit_depth": 8}
    if kind in ("L", "LA", "RGB", "RGBA"):
        values = _u8(rng, len(kind))
        Image.fromarray(values[..., 0] if kind == "L" else values).save(path := tmp_path / f"{kind}.png")
        return path, values, 255, {"grey": kind.startswith("L"), "alpha": kind.endswith("A"), "bit_depth": 8}
    if kind == "P-tRNS":  # palette with an alpha per entry
        image, values = _palette_image(rng)
        alphas = [0, 128, 255, 7]
        values[..., 3] = np.array(alphas, np.uint8)[np.asarray(image)]
        image.save(path := tmp_path / "p.png", transparency=bytes(alphas))
        return path, values, 255, {**colour, "alpha": True}
    if kind == "P-index":  # a single transparent index, as GIF does
        image, values = _palette_image(rng)
        values[..., 3] = np.where(np.asarray(image) == 2, 0, 255)
        image.save(path := tmp_path / "p.gif", transparency=2)
        return path, values, 255, {**colour, "alpha": True}
    if kind in ("RGB-tRNS", "RGB16-tRNS"):  # one colour marked transparent (PNG tRNS on a truecolour image)
        deep = kind.startswith("RGB16")
        values = _u16(rng, 4) if deep else _u8(rng, 4)
        values[0, :] = values[0, 0]  # the first row is all the key colour
        key = tuple(int(v) for v in values[0, 0, :3])
        values[..., 3] = np.where((values[..., :3] == key).all(axis=2), 0, 65535 if deep else 255)
        path = tmp_path / f"{kind}.png"
        if deep:
            with open(path, "wb") as file:
                png.Writer(W, H, greyscale=False, bitdepth=16, transparent=key).write(
                    file, values[..., :3].reshape(H, W * 3)
                )
        else:
            Image.fromarray(values[..., :3]).save(path, transparency=key)
        return (
            path,
            values,
            65535 if deep else 255,
            {"grey": False, "alpha": True, "bit_depth": 16 if deep else 8},
        )
    if kind == "CMYK":
        cmyk = _u8(rng, 4)
        image = Image.frombytes("CMYK", (W, H), cmyk.tobytes())
        image.save(path := tmp_path / "cmyk.tif")
        return path, np.asarray(image.convert("RGB")), 255, {**colour, "alpha": False}
    if kind in ("I;16", "I;16B"):
        values = _u16(rng)
        image = Image.fromarray(values)
        if kind == "I;16B":
            image = Image.frombytes("I;16B", (W, H), values.astype(">u2").tobytes())
        image.save(path := tmp_path / f"grey16{'b' if kind.endswith('B') else ''}.tif")
        return path, values, 65535, {"grey": True, "alpha": False, "bit_depth": 16}
    if kind == "I;16-png":
        Image.fromarray(values := _u16(rng)).save(path := tmp_path / "grey16.png")
        return path, values, 65535, {"grey": True, "alpha": False, "bit_depth": 16}
    channels = {"LA16": 2, "RGB16": 3, "RGBA16": 4}[kind[:-4]]  # e.g. "RGB16-png"
    values = _u16(rng, channels)
    expected = {"grey": channels == 2, "alpha": channels in (2, 4), "bit_depth": 16}
    if kind.endswith("png"):  # written with pypng directly, independently of our writer
        writer = png.Writer(W, H, greyscale=channels == 2, alpha=channels != 3, bitdepth=16)
        with open(path := tmp_path / f"{kind}.png", "wb") as file:
            writer.write(file, values.reshape(H, W * channels))
    else:
        extra = ("unassalpha",) if channels != 3 else None
        photometric = "minisblack" if channels == 2 else "rgb"
        tifffile.imwrite(
            path := tmp_path / f"{kind}.tif", values, photometric=photometric, extrasamples=extra
        )
    return path, values, 65535, expected


SOURCE_KINDS = [
    "1",
    "L",
    "LA",
    "P-tRNS",
    "P-index",
    "RGB",
    "RGBA",
    "RGB-tRNS",
    "RGB16-tRNS",
    "CMYK",
    "I;16",
    "I;16B",
    "I;16-png",
] + [f"{k}-{f}" for k in ("LA16", "RGB16", "RGBA16") for f in ("png", "tif")]


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_mode_reads_exactly_and_round_trips(
    kind: str, tmp_path: Path, rng: np.random.Generator
) -> None:
    path, values, top, expected = _make_source(kind, tmp_path, rng)
    picture = read_image(path)
    _expect(picture, values, top, **expected)
    for suffix in (".png", ".tif"):
        out = write_image(picture, tmp_path / "out" / f"copy{suffix}")
        _assert_same(read_image(out), picture)


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("grey", [False, True])
@pytest.mark.parametrize("alpha", [False, True])
def test_pictures_round_trip_through_png_and_tiff(
    tmp_path: Path, bit_depth: int, grey: bool, alpha: bool
) -> None:
    rng = np.random.default_rng(bit_depth + 2 * grey + 4 * alpha)
    top = 2**bit_depth - 1
    values = rng.integers(0, top + 1, (H, W, (1 if grey else 3) + alpha)) / top
    colour = np.repeat(values[..., :1], 3, axis=2) if grey else values[..., :3]
    picture = Picture(
        colour.astype(np.float32), values[..., -1].astype(np.float32) if alpha else None, bit_depth, grey
    )
    for suffix in (".png", ".tif", ".tiff", ".PNG"):
        _assert_same(read_image(write_image(picture, tmp_path / f"x{suffix}", overwrite=True)), picture)


def test_lossless_webp_and_bmp_keep_8_bit_values(tmp_path: Path, rng: np.random.Generator) -> None:
    picture = Picture(_u8(rng, 3).astype(np.float32) / 255, _u8(rng).astype(np.float32) / 255)
    webp = read_image(write_image(picture, tmp_path / "x.webp", quality=100))
    _assert_same(webp, picture)
    bmp = read_image(write_image(dataclasses.replace(picture, alpha=None), tmp_path / "x.bmp"))
    np.testing.assert_array_equal(bmp.rgb, picture.rgb)


def test_16_bit_becomes_8_bit_in_jpeg_and_alpha_is_composited_on_white(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rgb = np.full((H, W, 3), 0.2, np.float32)
    alpha = np.ones((H, W), np.float32)
    alpha[:, :2] = 0.0  # left columns fully transparent
    with caplog.at_level(logging.WARNING, logger="decrappify"):
        out = write_image(Picture(rgb, alpha, 16, False), tmp_path / "x.jpg", quality=95)
    assert "composited on white" in caplog.text
    picture = read_image(out)
    assert picture.bit_depth == 8 and picture.alpha is None
    assert picture.rgb[:, 0].min() > 0.97  # transparent became white
    assert abs(float(picture.rgb[:, -1].mean()) - 0.2) < 0.02


def test_grey_picture_is_written_grey(tmp_path: Path) -> None:
    picture = Picture(np.full((H, W, 3), 0.5, np.float32), grayscale=True)
    write_image(picture, tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode == "L"


# ---------------------------------------------------------------------------------------------- orientation


def _exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "decrappify-test"
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow_and_reset(
    orientation: int, tmp_path: Path, rng: np.random.Generator
) -> None:
    image = Image.fromarray(_u8(rng, 3))
    image.save(path := tmp_path / "o.png", exif=_exif_with(orientation))
    picture = read_image(path)
    with Image.open(path) as reference:
        expected = np.asarray(ImageOps.exif_transpose(reference), dtype=np.float32) / 255
    np.testing.assert_array_equal(picture.rgb, expected)
    kept = Image.Exif()
    kept.load(picture.exif)
    assert kept.get(0x0112) == 1 and kept.get(0x010F) == "decrappify-test"


def test_orientation_6_rotates_a_jpeg_clockwise_and_the_written_file_is_upright(tmp_path: Path) -> None:
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[0, :] = 255  # a white top row ...
    Image.fromarray(pixels).save(path := tmp_path / "o6.jpg", exif=_exif_with(6), quality=100)
    picture = read_image(path)
    assert picture.size == (H, W)  # width and height swapped
    assert picture.rgb[:, -1].mean() > 0.9 and picture.rgb[:, 0].mean() < 0.1  # ... is now the right column
    out = write_image(picture, tmp_path / "upright.jpg")
    with Image.open(out) as written:
        assert written.getexif().get(0x0112) == 1
        assert written.size == (H, W)


def test_orientation_applies_to_16_bit_colour_too(tmp_path: Path, rng: np.random.Generator) -> None:
    picture = Picture(_u16(rng, 3).astype(np.float32) / 65535, bit_depth=16, exif=_exif_with(8).tobytes())
    out = write_image(picture, tmp_path / "deep.png")
    again = read_image(out)
    np.testing.assert_array_equal(again.rgb, np.rot90(picture.rgb, 1))
    assert again.bit_depth == 16


# ------------------------------------------------------------------------------------------------- metadata


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _metadata_of(path: Path) -> tuple[bytes | None, Image.Exif]:
    with Image.open(path) as image:
        exif = image.getexif()
        exif.get_ifd(0x8769)  # read the Exif IFD while the file is open (TIFF reads it lazily)
        return image.info.get("icc_profile"), exif


@pytest.mark.parametrize(
    ("suffix", "bit_depth"), [(".png", 8), (".jpg", 8), (".webp", 8), (".tif", 8), (".png", 16), (".tif", 16)]
)
def test_icc_and_exif_survive_read_then_write(
    suffix: str, bit_depth: int, tmp_path: Path, srgb_icc: bytes, rng: np.random.Generator
) -> None:
    exif = _exif_with(1)
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"  # DateTimeOriginal, in the Exif sub-IFD
    source = tmp_path / f"source{suffix}"
    if bit_depth == 16:
        picture = Picture(_u16(rng, 3).astype(np.float32) / 65535, bit_depth=16, icc_profile=srgb_icc)
        write_image(dataclasses.replace(picture, exif=exif.tobytes()), source)
    elif suffix == ".tif":  # Pillow's `exif=` drops the Exif IFD of a TIFF; `tiffinfo` keeps it
        tiffinfo = {0x010F: "decrappify-test", 0x8769: dict(exif.get_ifd(0x8769))}
        Image.fromarray(_u8(rng, 3)).save(source, icc_profile=srgb_icc, tiffinfo=tiffinfo)
    else:
        Image.fromarray(_u8(rng, 3)).save(source, icc_profile=srgb_icc, exif=exif)
    picture = read_image(source)
    assert picture.icc_profile == srgb_icc and picture.exif
    kept = Image.Exif()
    kept.load(picture.exif[6:] if picture.exif.startswith(b"Exif") else picture.exif)
    assert 273 not in kept and 256 not in kept  # a TIFF's layout tags (strip offsets, width) are not EXIF
    icc, written_exif = _metadata_of(write_image(picture, tmp_path / f"copy{suffix}"))
    assert icc == srgb_icc
    assert written_exif.get(0x010F) == "decrappify-test"  # Make
    if not (bit_depth == 16 and suffix == ".tif"):  # tifffile writes plain TIFF tags, no Exif sub-IFD
        assert written_exif.get_ifd(0x8769).get(0x9003) == "2020:01:02 03:04:05"


def test_exif_pixel_dimensions_follow_an_upscale(tmp_path: Path, rng: np.random.Generator) -> None:
    exif = _exif_with(1)
    exif.get_ifd(0x8769).update({0xA002: W, 0xA003: H})
    picture = Picture(_u8(rng, 3).astype(np.float32) / 255, exif=exif.tobytes())
    bigger = picture.with_rgb(np.repeat(np.repeat(picture.rgb, 2, axis=0), 2, axis=1))
    _, written = _metadata_of(write_image(bigger, tmp_path / "x2.jpg"))
    assert (written.get_ifd(0x8769)[0xA002], written.get_ifd(0x8769)[0xA003]) == (2 * W, 2 * H)


def test_a_profile_for_another_colour_space_is_not_written(tmp_path: Path, srgb_icc: bytes) -> None:
    grey = Picture(np.full((H, W, 3), 0.5, np.float32), grayscale=True, icc_profile=srgb_icc)
    icc, _ = _metadata_of(write_image(grey, tmp_path / "g.png"))
    assert icc is None  # an RGB profile on grey pixels would be invalid


# ----------------------------------------------------------------------------------------------- bad inputs


def _png_bytes(width: int = W, height: int = H) -> bytes:
    """A small valid PNG whose header claims `width` x `height` (CRC fixed), for zero-sized and bomb files."""
    buffer = io.BytesIO()
    Image.new("RGB", (W, H), (10, 20, 30)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    good = _png_bytes()
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    files = {
        "corrupt.png": good[:40] + bytes(range(256)) * 2,
        "truncated.png": good[: len(good) // 2],
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "empty.png": b"",
        "zero-sized.png": _png_bytes(0, 4),
        "notes.png": b"this is a text file, not a picture\n",
        "notes.txt": b"plain text\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.png").mkdir()
    return {name: tmp_path / name for name in [*files, "folder.png", "missing.png"]}


BAD_NAMES = ["corrupt.png", "truncated.png", "truncated.jpg", "empty.png", "zero-sized.png", "notes.png",
             "notes.txt", "folder.png", "missing.png"]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_inputs_raise_input_error_naming_the_file(name: str, tmp_path: Path) -> None:
    path = _bad_inputs(tmp_path)[name]
    with pytest.raises(InputError) as caught:
        read_image(path)
    assert name in str(caught.value)
    assert caught.value.path == path
    assert "\n" not in str(caught.value)


def test_each_bad_input_says_why(tmp_path: Path) -> None:
    paths = _bad_inputs(tmp_path)
    reasons = {}
    for name in ("empty.png", "zero-sized.png", "notes.txt", "folder.png", "missing.png", "truncated.png"):
        with pytest.raises(InputError) as caught:
            read_image(paths[name])
        reasons[name] = caught.value.reason
    assert "empty" in reasons["empty.png"]
    assert "corrupt or truncated PNG" in reasons["zero-sized.png"]  # Pillow refuses a 0-wide header itself
    assert "not an image" in reasons["notes.txt"]
    assert "folder" in reasons["folder.png"]
    assert "no such file" in reasons["missing.png"]
    assert "truncated" in reasons["truncated.png"]


@pytest.mark.parametrize(
    "max_pixels", [W * H - 1, W * H // 2 - 1, 1]
)  # ours, Pillow's warning, Pillow's error
def test_pictures_over_the_pixel_limit_are_refused_before_decoding(max_pixels: int, tmp_path: Path) -> None:
    (path := tmp_path / "bomb.png").write_bytes(_png_bytes())
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match="too large") as caught:
        read_image(path, max_pixels=max_pixels)
    assert "bomb.png" in str(caught.value) and "--max-pixels" in str(caught.value)
    assert saved == Image.MAX_IMAGE_PIXELS  # Pillow's global limit is left as it was
    assert read_image(path, max_pixels=W * H).size == (W, H)
    assert read_image(path, max_pixels=None).size == (W, H)


def test_a_huge_header_is_refused_without_decoding(tmp_path: Path) -> None:
    (path := tmp_path / "huge.png").write_bytes(
        _png_bytes(100_000, 100_000)
    )  # claims 10 GP; decoding would fail
    with pytest.raises(InputError, match="too large"):
        read_image(path)
    assert DEFAULT_MAX_PIXELS < 100_000 * 100_000


# ---------------------------------------------------------------------------------------------------- writing


def _small_picture() -> Picture:
    return Picture(np.full((H, W, 3), 0.25, np.float32))


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_encoder(file: io.BufferedWriter, encoding: object) -> None:
        file.write(b"half a picture")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(imageformats.ENCODERS, "PNG", failing_encoder)
    with pytest.raises(OutputError, match="No space left"):
        write_image(_small_picture(), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []

    def buggy_encoder(file: io.BufferedWriter, encoding: object) -> None:
        file.write(b"half")
        raise RuntimeError("bug")

    monkeypatch.setitem(imageformats.ENCODERS, "PNG", buggy_encoder)
    with pytest.raises(RuntimeError):
        write_image(_small_picture(), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    out = write_image(_small_picture(), tmp_path / "x.png")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_an_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    (target := tmp_path / "x.png").write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        write_image(_small_picture(), target)
    assert target.read_bytes() == b"precious"
    write_image(_small_picture(), target, overwrite=True)
    assert read_image(target).size == (W, H)


def test_an_input_is_never_overwritten(tmp_path: Path) -> None:
    source = write_image(_small_picture(), tmp_path / "in.png")
    before = source.read_bytes()
    os.link(source, tmp_path / "hardlink.png")
    for target in (source, tmp_path / "sub" / ".." / "in.png", tmp_path / "hardlink.png"):
        with pytest.raises(OutputError, match="input"):
            write_image(_small_picture(), target, overwrite=True, protect=[str(source)])
    assert source.read_bytes() == before


def test_parent_folders_are_created_and_unknown_suffixes_refused(tmp_path: Path) -> None:
    out = write_image(_small_picture(), tmp_path / "a" / "b" / "x.jpeg")
    assert out.is_file()
    with pytest.raises(OutputError) as caught:
        write_image(_small_picture(), tmp_path / "x.gif")
    assert "x.gif" in str(caught.value) and ".png" in str(caught.value) and ".tiff" in str(caught.value)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match="folder"):
        write_image(_small_picture(), tmp_path / "dir.png", overwrite=True)


# ------------------------------------------------------------------------------------------- Picture helpers


def test_with_rgb_resizes_alpha_and_clips(rng: np.random.Generator) -> None:
    height, width = 4, 16
    alpha = np.zeros((height, width), np.float32)
    alpha[:, width // 2 :] = 1.0  # a hard edge makes Lanczos ring past [0, 1]
    picture = Picture(np.zeros((height, width, 3), np.float32), alpha)
    big = picture.with_rgb(np.full((4 * height, 4 * width, 3), 2.0, np.float32))
    assert big.alpha is not None and big.alpha.shape == (4 * height, 4 * width)
    assert big.alpha.min() >= 0.0 and big.alpha.max() <= 1.0
    assert big.alpha[:, 0].max() < 0.01 and big.alpha[:, -1].min() > 0.99
    assert np.unique(big.alpha).size > 2  # resampled, not nearest-neighbour
    assert big.rgb.max() == 1.0  # colour clipped too
    same = picture.with_rgb(np.ones((height, width, 3), np.float32))
    assert same.alpha is alpha


def test_picture_checks_its_arrays() -> None:
    with pytest.raises(ValueError):
        Picture(np.zeros((H, W, 3), np.float64))
    with pytest.raises(ValueError):
        Picture(np.zeros((H, W, 3), np.float32), np.zeros((H + 1, W), np.float32))
    with pytest.raises(ValueError):
        Picture(np.zeros((H, W, 3), np.float32), bit_depth=12)


def test_pil_views_keep_the_metadata_of_like(rng: np.random.Generator, srgb_icc: bytes) -> None:
    alpha = rng.random((H, W)).astype(np.float32)
    picture = Picture(_u8(rng, 3).astype(np.float32) / 255, alpha, 16, False, srgb_icc, None, "PNG")
    view = picture_to_pil(picture)
    assert view.mode == "RGB" and view.size == picture.size
    back = picture_from_pil(view.resize((2 * W, 2 * H)), like=picture)
    assert back.size == (2 * W, 2 * H) and back.alpha is not None and back.alpha.shape == (2 * H, 2 * W)
    assert (back.bit_depth, back.icc_profile, back.source_format) == (16, srgb_icc, "PNG")
    np.testing.assert_array_equal(picture_from_pil(view, like=picture).rgb, picture.rgb)
    plain = picture_from_pil(Image.new("LA", (3, 2), (100, 50)))
    assert plain.grayscale and plain.alpha is not None and plain.size == (3, 2)


def test_is_image_path_goes_by_extension() -> None:
    assert (
        is_image_path("a/b.png")
        and is_image_path("B.JPG")
        and is_image_path("c.tiff")
        and is_image_path("d.webp")
    )
    assert (
        not is_image_path("notes.txt") and not is_image_path("model.safetensors") and not is_image_path("x")
    )
