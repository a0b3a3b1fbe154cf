"""How much memory restoring a picture will take, estimated from its header before it is decoded, and how much
this process may use.

The reader's `--max-pixels` limits the *input*, but what a restoration holds is set by its *output*: an x4 model
makes 16 output pixels of each input pixel, so a 9000 x 9000 grey PNG of 97 KB (81 MP, under the input limit)
asks for a 36000 x 36000 float32 result, 15.5 GB, which tiling cannot shrink. Refusing it up front, with the
limit and the option that raises it, beats the allocator's failure (or the OOM killer) minutes later.

The estimate has three parts, each an upper bound of what it stands for:

* the decoded picture and its tensor copy: `INPUT_BYTES_PER_PIXEL` per input pixel;
* the result: the float32 output, its copy as an array, the clipped copy and the quantised values (plus alpha):
  `OUTPUT_BYTES_PER_PIXEL` per output pixel; colourisation also keeps float64 luma and colour planes at full
  size, hence `COLOUR_OUTPUT_BYTES_PER_PIXEL`;
* one model call, on a CPU runner (a GPU's own memory is the tiler's business: it halves the tile when a call
  does not fit): `ACTIVATION_PEAK_FACTOR` times the network's largest activation per pixel, times the pixels of
  the largest tile and the views an ensemble batches. The largest activation is found once, by running the
  network on a small input (`activation_elements_per_pixel`).

The constants sit above the peaks measured for the shipped models and for U-Nets; docs/reliability.md has the
measurements and the command that made them.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from decrappify.errors import ConfigError, InputError
from decrappify.nn.models import create_model

try:
    import resource
except ImportError:  # Windows: no address-space limit to read
    resource = None

#: The largest output (in pixels) restored unless a larger one is asked for: 20000 x 20000, about 5 GB of float32
#: result; past it the result no longer fits most formats (WebP stops at 16383 a side) or viewers.
DEFAULT_MAX_OUTPUT_PIXELS = 400_000_000
INPUT_BYTES_PER_PIXEL = 32
OUTPUT_BYTES_PER_PIXEL = 72  # an RGBA picture's: alpha adds its own planes to an RGB one's
COLOUR_OUTPUT_BYTES_PER_PIXEL = 176
ACTIVATION_PEAK_FACTOR = 6
#: The side of the square input the network is probed with (rounded up to its stride).
PROBE_SIDE = 64
_GB = 1024**3


def activation_elements_per_pixel(model: torch.nn.Module, multiple: int, device: torch.device | str) -> float:
    """The largest activation (elements, batch of one) `model` makes per input pixel, from one forward pass on a
    small input on `device` (a meta-device model: shapes only, nothing allocated, whatever its config asks for).

    Per pixel, a convolutional network's largest activation does not depend on the input's size, so a small
    probe tells what a full tile costs; self-attention grows faster, which `ACTIVATION_PEAK_FACTOR` absorbs at
    the tile sizes in use.
    """
    side = math.ceil(PROBE_SIDE / max(1, multiple)) * max(1, multiple)
    largest = 0

    def record(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        nonlocal largest
        # Batch-first activations only: weight-norm parametrisations also return tensors (the weights).
        if isinstance(output, torch.Tensor) and output.dim() >= 3 and output.shape[0] == 1:
            largest = max(largest, output.numel())

    hooks = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, side, side, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return largest / (side * side)


def meta_model(config: Mapping) -> torch.nn.Module | None:
    """The model `config` builds, on the meta device (for a runner without a torch model); None if it builds
    none (the file's own loading reports a bad config)."""
    try:
        with torch.device("meta"):
            return create_model(config).eval()
    except ConfigError:
        return None


def model_call_side(length: int, tile: int, overlap: int, multiple: int) -> int:
    """The longest side (input pixels, padded to the model's stride) one model call sees along an axis of
    `length`, as `tiling.split_axis` cuts it: a core of at most `tile` plus `overlap` on each side."""
    multiple = max(1, multiple)
    if tile > 0:
        tile = max(multiple, tile // multiple * multiple)
        overlap = math.ceil(max(0, overlap) / multiple) * multiple
        length = min(length, tile + 2 * overlap)
    return math.ceil(length / multiple) * multiple


def estimate_peak_bytes(
    *,
    input_pixels: int,
    output_pixels: int,
    colourise: bool,
    call_pixels: int,
    elements_per_pixel: float,
    batch: int,
) -> int:
    """Peak bytes of one restoration: the picture, its result, and one model call (see the module docstring)."""
    per_output_pixel = COLOUR_OUTPUT_BYTES_PER_PIXEL if colourise else OUTPUT_BYTES_PER_PIXEL
    model_call = ACTIVATION_PEAK_FACTOR * 4 * batch * elements_per_pixel * call_pixels  # float32 activations
    return int(input_pixels * INPUT_BYTES_PER_PIXEL + output_pixels * per_output_pixel + model_call)


def available_memory_bytes() -> int | None:
    """Memory this process can still take: the least of the system's available memory, the room under its
    cgroup's limit and under its address-space limit (`ulimit -v`); None where none of them can be read."""
    candidates = [_meminfo_available(), _cgroup_room(), _address_space_room()]
    known = [value for value in candidates if value is not None]
    return max(0, min(known)) if known else None


def check_restorable(
    path: str | Path | None,
    size: tuple[int, int],
    *,
    scale: int,
    peak_bytes: int,
    max_output_pixels: int | None,
    max_memory_bytes: int | None,
) -> None:
    """`InputError` naming the picture when its output is over `max_output_pixels` (None: no limit) or its
    estimated peak is over `max_memory_bytes` (None: what `available_memory_bytes` finds); each message names
    the option that raises the limit."""
    width, height = size
    out_width, out_height = width * scale, height * scale
    output = f"{width} x {height} -> {out_width} x {out_height}"
    if max_output_pixels is not None and out_width * out_height > max_output_pixels:
        raise InputError(
            path,
            f"output too large ({output} = {out_width * out_height:,} pixels, limit {max_output_pixels:,}); "
            "raise --max-output-pixels if this machine has the memory",
        )
    limit = available_memory_bytes() if max_memory_bytes is None else max_memory_bytes
    if limit is not None and peak_bytes > limit:
        source = "--max-memory" if max_memory_bytes is not None else "available now; --max-memory overrides"
        raise InputError(
            path,
            f"not enough memory: restoring it ({output}) needs about {peak_bytes / _GB:.1f} GB, "
            f"more than {limit / _GB:.1f} GB ({source}); a smaller --tile lowers the model's share",
        )


def _meminfo_available() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1); None when there is no limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:  # v1 writes "no limit" as a huge number
                return None
            return int(limit) - int(Path(usage_file).read_text().strip())
    return None


def _address_space_room() -> int | None:
    """`ulimit -v` minus the address space already mapped; None when unlimited."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                mapped = int(line.split()[1]) * 1024
    return soft - mapped
