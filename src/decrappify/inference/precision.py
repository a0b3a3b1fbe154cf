"""Which number format a network runs in: fp32, or bf16 autocast where the hardware does bf16 natively.

CPUs with AVX512-BF16 or AMX-BF16 (current Intel Xeons, AMD Zen 4 and later) multiply bf16 in hardware, and
oneDNN runs convolutions on those units several times faster than in fp32. Elsewhere oneDNN emulates bf16 and it
is slower than fp32, so "auto" asks both oneDNN (is bf16 supported at all) and the CPU (are the native
instructions there) before choosing it. Only the networks run under autocast: inputs and outputs stay fp32, and
so do losses, metrics and optimiser state in training.

A model can opt out of bf16 under "auto": its info dict's ``"precision"`` entry names the precision it must run
in when bf16 was measured to change its results (see ``docs/models/``). An explicit "bf16" still runs it in bf16.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from decrappify.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: Info-dict key a model file uses to pin its precision under "auto" (value "fp32").
MODEL_PRECISION_KEY = "precision"
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_CPUINFO = Path("/proc/cpuinfo")


def check_precision(precision: str) -> str:
    """The precision name, or `ConfigError` listing the valid ones."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    return precision


@functools.lru_cache(maxsize=1)
def cpu_runs_bf16_natively() -> bool:
    """Whether oneDNN supports bf16 here and the CPU has the instructions that make it fast, not emulated."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    return bool(_NATIVE_BF16_FLAGS & _cpu_flags())


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel lists them (empty where there is no /proc/cpuinfo)."""
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def resolve_precision(
    precision: str, device: torch.device | str, info: Mapping[str, Any] | None = None
) -> str:
    """The precision a network actually runs in: "fp32" or "bf16".

    "auto" is bf16 on a CPU that runs it natively, unless the model's info pins fp32; fp32 elsewhere (CUDA
    included: training there has its own autocast). An explicit "bf16" is honoured on any device.
    """
    check_precision(precision)
    if precision != "auto":
        return precision
    pinned = (info or {}).get(MODEL_PRECISION_KEY)
    if pinned is not None and check_precision(str(pinned)) != "auto":
        return str(pinned)
    return "bf16" if torch.device(device).type == "cpu" and cpu_runs_bf16_natively() else "fp32"


def describe_precision(precision: str, device: torch.device | str, info: Mapping[str, Any] | None = None) -> str:
    """What `resolve_precision` chooses, with the reason when "auto" chose it: one line for the user."""
    resolved = resolve_precision(precision, device, info)
    if precision != "auto":
        return resolved
    if (info or {}).get(MODEL_PRECISION_KEY) is not None:
        reason = "the model file asks for it"
    elif torch.device(device).type != "cpu":
        reason = f"bf16 is chosen automatically only on CPUs, this is {torch.device(device).type}"
    else:
        reason = "this CPU runs bf16 natively" if resolved == "bf16" else "this CPU has no native bf16"
    return f"{resolved} (auto: {reason})"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """bf16 autocast on `device` for "bf16"; nothing for "fp32"."""
    if precision == "bf16":
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            yield
    else:
        yield
