"""How fast a model restores pictures here, and how close that is to what this machine could do.

For each backend and variant (PyTorch fp32, channels-last, bf16 autocast on channels-last, `torch.compile`;
ONNX Runtime at each graph optimisation level) and thread count: output megapixels per second (median of timed
runs after warm-up), the model's cost in GFLOPs per output megapixel (torch's FLOP counter: convolutions and
matrix products), the GFLOP/s that makes, this machine's measured peak in the variant's number format (an fp32
or a bf16 matrix product), and the fraction of it. The library measures; the CLI prints
`BenchmarkResult.to_markdown()` and can write `BenchmarkResult.to_dict()` as JSON.

A model file that names a self-ensemble (`decrappify.inference.ensemble`) is timed as it runs by default, every view
included, and its GFLOPs per megapixel count every view: the speed a card states is the speed a user gets.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from decrappify.errors import ConfigError
from decrappify.inference.ensemble import check_ensemble, model_ensemble, self_ensemble, views_for
from decrappify.inference.export import create_session, export_onnx
from decrappify.inference.runners import OnnxRunner, TorchRunner
from decrappify.nn.models import gflops_per_output_megapixel, size_multiple_of

log = logging.getLogger(__name__)

TORCH_VARIANTS = ("fp32", "channels_last", "bf16", "compile")
ONNX_VARIANTS = ("ort-all", "ort-extended", "ort-basic", "ort-disable")
DEFAULT_VARIANTS = ("fp32", "channels_last", "bf16", "ort-all", "ort-disable")
#: Variants whose arithmetic is bf16: their fraction of peak is taken against the bf16 matrix product.
BF16_VARIANTS = frozenset({"bf16"})
PEAK_MATMUL_SIZE = 2048


@dataclass(frozen=True)
class BenchmarkRow:
    """One measured configuration."""

    backend: str
    variant: str
    threads: int
    output_size: tuple[int, int]  # (width, height)
    seconds: float  # median time of one call
    mp_per_s: float
    gflops_per_mp: float
    peak_gflops: float  # in the variant's number format

    def to_dict(self) -> dict[str, Any]:
        """One row of the JSON: the fields the benchmark's readers rely on."""
        width, height = self.output_size
        return {
            "backend": self.backend,
            "variant": self.variant,
            "threads": self.threads,
            "size": f"{width}x{height}",
            "megapixels_per_second": round(self.mp_per_s, 4),
            "gflops_per_megapixel": round(self.gflops_per_mp, 3),
            "peak_gflops": round(self.peak_gflops, 2),
        }

    @property
    def achieved_gflops(self) -> float:
        return self.gflops_per_mp * self.mp_per_s

    @property
    def fraction_of_peak(self) -> float:
        return self.achieved_gflops / self.peak_gflops if self.peak_gflops > 0 else float("nan")


@dataclass
class BenchmarkResult:
    """Every row, plus what was measured once (the model's cost, the peak per thread count, set-up times)."""

    model_name: str
    scale: int
    parameters: int
    gflops_per_mp: float
    peak_gflops: dict[int, float]
    peak_matmul_size: int = PEAK_MATMUL_SIZE
    rows: list[BenchmarkRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ensemble: str = "none"  # the self-ensemble timed; gflops_per_mp counts all its views
    peak_bf16_gflops: dict[int, float] = field(default_factory=dict)  # threads -> bf16 matmul peak

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the model, the peaks per thread count and number format, and every row."""
        return {
            "model": self.model_name,
            "scale": self.scale,
            "parameters": self.parameters,
            "ensemble": self.ensemble,
            "gflops_per_megapixel": round(self.gflops_per_mp, 3),
            "peak_gflops": {"fp32": _by_threads(self.peak_gflops), "bf16": _by_threads(self.peak_bf16_gflops)},
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_markdown(self) -> str:
        """A markdown table with a short header, ready to paste into docs."""
        views = len(views_for(self.ensemble))
        ensemble = f", as a {self.ensemble} self-ensemble of {views} views" if views > 1 else ""
        lines = [
            (
                f"model: {self.model_name} (x{self.scale}, {self.parameters / 1e6:.2f} M parameters, "
                f"{self.gflops_per_mp:.1f} GFLOPs per output megapixel{ensemble})"
            ),
            *(
                f"peak: {_peaks(peaks)} ({kind} {self.peak_matmul_size}x{self.peak_matmul_size} matmul)"
                for kind, peaks in (("fp32", self.peak_gflops), ("bf16", self.peak_bf16_gflops))
                if peaks
            ),
            "",
            "| backend | variant | threads | output | ms/call | output MP/s | GFLOPs/MP | GFLOP/s | peak GFLOP/s "
            "| of peak |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in self.rows:
            width, height = row.output_size
            lines.append(
                f"| {row.backend} | {row.variant} | {row.threads} | {width}x{height} | {row.seconds * 1e3:.0f} "
                f"| {row.mp_per_s:.2f} | {row.gflops_per_mp:.1f} | {row.achieved_gflops:.1f} "
                f"| {row.peak_gflops:.1f} | {row.fraction_of_peak:.0%} |"
            )
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with `threads` intra-op threads (None: leave as is); yields the count in force."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _peaks(peaks: dict[int, float]) -> str:
    return ", ".join(f"{gf:.1f} GFLOP/s with {t} thread(s)" for t, gf in sorted(peaks.items()))


def _by_threads(peaks: dict[int, float]) -> dict[str, float]:
    return {str(threads): round(gflops, 2) for threads, gflops in sorted(peaks.items())}


def measure_peak_gflops(
    size: int = PEAK_MATMUL_SIZE, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    """This machine's practical peak with the current thread setting: a square matrix product in `dtype`.

    The fastest of `repeats` runs, not the median: a peak is what the machine can do, and on a shared machine
    the slower runs measure the neighbours.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator).to(dtype)
    b = torch.rand(size, size, generator=generator).to(dtype)
    with torch.inference_mode():
        torch.mm(a, b)
        fastest = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            fastest = min(fastest, time.perf_counter() - start)
    return 2 * size**3 / fastest / 1e9


def parse_size(text: str) -> tuple[int, int]:
    """'512x384' -> (512, 384) (width x height); `ConfigError` otherwise."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise ConfigError(f"size '{text}': expected WIDTHxHEIGHT, such as 512x512") from error
    if width <= 0 or height <= 0:
        raise ConfigError(f"size '{text}': width and height must be positive")
    return width, height


def _check_variants(variants: Sequence[str], backends: Sequence[str]) -> list[tuple[str, str]]:
    known = {**dict.fromkeys(TORCH_VARIANTS, "torch"), **dict.fromkeys(ONNX_VARIANTS, "onnx")}
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from: {', '.join(known)}")
    bad_backends = [b for b in backends if b not in ("torch", "onnx")]
    if bad_backends:
        raise ConfigError(f"unknown backend(s) {', '.join(bad_backends)}; choose from: torch, onnx")
    return [(known[v], v) for v in variants if known[v] in backends]


class _RunnerFactory:
    """Builds one runner per variant; the ONNX graph is exported once and shared by the ONNX variants."""

    def __init__(self, model: nn.Module, config: dict, info: dict, notes: list[str]):
        self.model, self.config, self.info, self.notes = model, config, info, notes
        self.scale, self.multiple = int(getattr(model, "scale", 1)), size_multiple_of(model)
        self._onnx: bytes | None = None

    def preset_graph(self, graph: bytes | None) -> None:
        """Time this ONNX graph (a file's) rather than exporting the model."""
        self._onnx = graph

    def build(self, backend: str, variant: str, threads: int) -> TorchRunner | OnnxRunner:
        return self.onnx_runner(variant, threads) if backend == "onnx" else self.torch_runner(variant)

    def compile_now(self, runner: Callable[[Tensor], Tensor], lq: Tensor) -> None:
        """The first call of a compiled model compiles it: keep that out of the timed runs, but say how long."""
        start = time.perf_counter()
        runner(lq)
        self.notes.append(
            f"torch.compile: the first call (compiling) took {time.perf_counter() - start:.1f} s"
        )

    def torch_runner(self, variant: str) -> TorchRunner:
        model = copy.deepcopy(self.model)
        if variant == "compile":
            model = torch.compile(model)
        return TorchRunner(
            model,
            torch.device("cpu"),
            self.scale,
            self.multiple,
            channels_last=variant in ("channels_last", *BF16_VARIANTS),
            precision="bf16" if variant in BF16_VARIANTS else "fp32",
        )

    def onnx_runner(self, variant: str, threads: int) -> OnnxRunner:
        if self._onnx is None:
            start = time.perf_counter()
            self._onnx = export_onnx(self.model, None, config=self.config, info=self.info)
            self.notes.append(f"ONNX export took {time.perf_counter() - start:.1f} s (once)")
        level = variant.removeprefix("ort-")
        session = create_session(self._onnx, threads=threads, opt_level=level)
        return OnnxRunner(session, self.scale, self.multiple)


def benchmark(
    model: nn.Module,
    *,
    name: str = "model",
    config: dict | None = None,
    info: dict | None = None,
    sizes: Sequence[tuple[int, int]] = ((512, 512),),
    backends: Sequence[str] = ("torch", "onnx"),
    variants: Sequence[str] = DEFAULT_VARIANTS,
    threads: Sequence[int | None] = (None,),
    repeats: int = 3,
    warmup: int = 1,
    peak_matmul_size: int = PEAK_MATMUL_SIZE,
    ensemble: str | None = None,
    onnx_graph: bytes | None = None,
) -> BenchmarkResult:
    """Measure `model` (on the CPU) at each output size (width, height), backend, variant and thread count.

    Sizes are output sizes; the input is that divided by the model's scale. Each call is one whole picture
    (no tiling), so the numbers are the model's own speed. `ensemble`: time it as that self-ensemble (None:
    the one `info` names, else none). `onnx_graph`: the ONNX rows time this graph (an ONNX file's bytes)
    instead of one exported from `model`, which then gives only the architecture (FLOPs, torch rows).
    """
    plan = _check_variants(variants, backends)
    ensemble = model_ensemble(info or {}) if ensemble is None else check_ensemble(ensemble)
    views = len(views_for(ensemble))
    model = model.to("cpu").float().eval()
    scale = int(getattr(model, "scale", 1))
    inputs = [_input_for(size, scale) for size in sizes]
    gflops = views * gflops_per_output_megapixel(model, tuple(inputs[0].shape))
    parameters = sum(p.numel() for p in model.parameters())
    result = BenchmarkResult(name, scale, parameters, gflops, {}, peak_matmul_size, ensemble=ensemble)
    factory = _RunnerFactory(model, dict(config or {}), dict(info or {}), result.notes)
    factory.preset_graph(onnx_graph)
    for wanted in threads:
        with torch_threads(wanted) as count:
            result.peak_gflops[count] = measure_peak_gflops(peak_matmul_size)
            if any(variant in BF16_VARIANTS for _, variant in plan):
                result.peak_bf16_gflops[count] = measure_peak_gflops(peak_matmul_size, dtype=torch.bfloat16)
            runners = [
                (backend, variant, self_ensemble(factory.build(backend, variant, count), ensemble))
                for backend, variant in plan
            ]
            for lq in inputs:
                for _, variant, runner in runners:
                    if variant == "compile":
                        factory.compile_now(runner, lq)
                timings = time_interleaved([partial(runner, lq) for _, _, runner in runners], repeats, warmup)
                for (backend, variant, _), seconds in zip(runners, timings, strict=True):
                    result.rows.append(_row(result, backend, variant, count, lq, factory.scale, seconds))
    return result


def _input_for(size: tuple[int, int], scale: int) -> Tensor:
    width, height = size
    if width % scale or height % scale:
        raise ConfigError(f"output size {width}x{height} is not a multiple of the model's scale {scale}")
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, height // scale, width // scale, generator=generator)


def time_interleaved(calls: Sequence[Callable[[], Any]], repeats: int, warmup: int) -> list[float]:
    """Median time of each call, the calls taking turns: a machine shared with other work then slows every
    variant alike instead of whichever happened to run during a busy spell."""
    for call in calls:
        for _ in range(warmup):
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(max(1, repeats)):
        for call, samples in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


def _row(
    result: BenchmarkResult, backend: str, variant: str, threads: int, lq: Tensor, scale: int, seconds: float
) -> BenchmarkRow:
    height, width = (side * scale for side in lq.shape[-2:])
    row = BenchmarkRow(
        backend=backend,
        variant=variant,
        threads=threads,
        output_size=(width, height),
        seconds=seconds,
        mp_per_s=width * height / 1e6 / seconds,
        gflops_per_mp=result.gflops_per_mp,
        peak_gflops=(result.peak_bf16_gflops if variant in BF16_VARIANTS else result.peak_gflops)[threads],
    )
    log.info("%s %s, %d thread(s), %dx%d: %.2f MP/s", backend, variant, threads, width, height, row.mp_per_s)
    return row
