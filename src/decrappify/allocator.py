"""Keep freed tensor memory in the process instead of handing it back to the system after every model call.

Why: glibc's malloc serves blocks over its mmap threshold (128 KiB at start, raised only as large blocks are freed)
with fresh `mmap` pages and returns heap space above its trim threshold at every `free`. A network's activations
are megabytes each, allocated and freed on every call, so each call page-faults its whole working set back in:
the kernel zeroes every page again. Measured on the 2-core CPU this project is built on: the text-mask model took
45 ms per 512 x 512 bf16 call with glibc's defaults and 24 ms with the settings below (docs/benchmarks/text-mask.md).
PyTorch's CPU performance guide recommends jemalloc or tcmalloc for the same reason; glibc's own `mallopt` gets the
same effect without a preloaded library.

The settings: blocks up to `MMAP_THRESHOLD` (glibc's largest allowed, 32 MiB) come from the heap, and the heap
gives memory back only when more than `TRIM_THRESHOLD` lies free at its top, so a process keeps up to that much
above what it uses. A user who tunes malloc (the ``MALLOC_*_`` variables, ``GLIBC_TUNABLES``) or preloads another
allocator keeps their choice, and ``DECRAPPIFY_MALLOC=system`` leaves glibc's defaults. Elsewhere (macOS, Windows,
musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

#: `mallopt` parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024
#: Set to "system" to keep glibc's defaults.
OPT_OUT_VARIABLE = "DECRAPPIFY_MALLOC"
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")

_state: dict[str, bool] = {}


def user_tuned_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment already chose malloc settings or another allocator (then we leave it alone)."""
    return (
        environ.get(OPT_OUT_VARIABLE, "").lower() == "system"
        or any(name in environ for name in _USER_SETTINGS)
        or "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")
        or any(name in environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))
    )


def keep_freed_memory() -> bool:
    """Apply the settings above once per process; True when they are in force (this call or an earlier one)."""
    if "applied" not in _state:
        _state["applied"] = _apply()
    return _state["applied"]


def _apply() -> bool:
    if not sys.platform.startswith("linux") or user_tuned_malloc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("malloc: keep freed memory up to %d MiB: %s", TRIM_THRESHOLD >> 20, applied)
    return applied
