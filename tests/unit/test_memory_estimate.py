"""The memory a restoration needs, estimated before decoding, and the checks built on it."""

from __future__ import annotations

import pytest

from decrappify.errors import InputError
from decrappify.inference.memory import (
    available_memory_bytes,
    check_restorable,
    estimate_peak_bytes,
    meta_model,
    model_call_side,
)
from decrappify.inference.restorer import Restorer


def test_a_model_call_sees_at_most_a_tile_plus_its_context():
    assert model_call_side(9000, tile=512, overlap=32, multiple=4) == 576
    assert model_call_side(101, tile=512, overlap=32, multiple=4) == 104  # padded to the stride
    assert model_call_side(9000, tile=0, overlap=32, multiple=16) == 9008  # no tiling: the whole side


def test_the_output_dominates_and_grows_with_the_scale(model_file, x4_model_file):
    x2 = Restorer.from_pretrained(model_file, device="cpu", precision="fp32")
    x4 = Restorer.from_pretrained(x4_model_file, device="cpu", precision="fp32")
    assert x4.estimate_peak_bytes(1000, 1000) > 3 * x2.estimate_peak_bytes(1000, 1000) / 2
    assert x4.estimate_peak_bytes(2000, 2000) > 3 * x4.estimate_peak_bytes(1000, 1000)
    # A smaller tile lowers the model's share, never the result's.
    small_tiles = Restorer.from_pretrained(x4_model_file, device="cpu", precision="fp32", tile=64)
    assert x4.estimate_peak_bytes(1000, 1000) > small_tiles.estimate_peak_bytes(1000, 1000)
    assert small_tiles.estimate_peak_bytes(1000, 1000) > 16_000_000 * 12  # at least the float32 result


def test_checks_name_the_limit_and_the_option_that_raises_it():
    with pytest.raises(InputError, match=r"a.png: output too large.*--max-output-pixels"):
        check_restorable("a.png", (100, 100), scale=4, peak_bytes=1, max_output_pixels=10_000, max_memory_bytes=None)
    gigabyte = 1 << 30
    with pytest.raises(InputError, match=r"a.png: not enough memory.*2.0 GB.*1.0 GB \(--max-memory\)"):
        check_restorable("a.png", (10, 10), scale=1, peak_bytes=2 * gigabyte, max_output_pixels=None,
                         max_memory_bytes=gigabyte)  # fmt: skip
    check_restorable("a.png", (10, 10), scale=4, peak_bytes=1 << 20, max_output_pixels=1600, max_memory_bytes=gigabyte)


def test_the_available_memory_is_read_and_absurd_configs_build_nothing():
    available = available_memory_bytes()
    assert available is None or available > 0
    assert estimate_peak_bytes(input_pixels=1, output_pixels=1, colourise=False, call_pixels=0,
                               elements_per_pixel=0.0, batch=1) > 0  # fmt: skip
    assert meta_model({"arch": "compact", "widths": [200000] * 3}) is None  # refused by the bounds, not built
