"""Does ONNX Runtime have a low-precision path on this CPU that beats torch bf16? Times int8 and fp16 graphs.

    python benchmarks/onnx_lowp.py --model sr-x4 --threads 2 [--calibration ../shared/data/bsds500/train]

Exports the model to ONNX (fp32), then makes two low-precision graphs:
- int8: static QDQ quantisation (onnxruntime.quantization.quantize_static, per-channel weights, activations
  calibrated on crops of the calibration photos, or on random pictures without them);
- fp16: the graph's weights and activations converted to fp16 (onnxconverter-common style, done with onnx's
  helpers here: ORT has fp16 kernels for few CPU operators, so this mostly measures the casts).
ORT has no bf16 convolution on the CPU, so there is no bf16 graph to time. Each is timed on one whole picture
(no ensemble, no tiling) against torch fp32 channels-last and torch bf16 autocast, and its output compared
with fp32 (PSNR). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from decrappify.inference.export import create_session, export_onnx
from decrappify.inference.runners import TorchRunner
from decrappify.inference.zoo import resolve_model
from decrappify.io.listing import walk_images
from decrappify.nn.models import size_multiple_of
from decrappify.weights import load_model


def _time(call, repeats: int) -> float:
    call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")


def _calibration_inputs(folder: str | None, side: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if not folder:
        return [rng.random((1, 3, side, side), dtype=np.float32) for _ in range(count)]
    inputs = []
    for path in walk_images(folder)[:count]:
        image = Image.open(path).convert("RGB")
        left, top = (image.width - side) // 2, (image.height - side) // 2
        crop = np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.float32) / 255.0
        inputs.append(crop.transpose(2, 0, 1)[None].copy())
    return inputs


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: one input dict at a time, then None."""

    def __init__(self, name: str, inputs: list[np.ndarray]):
        self._items = iter([{name: x} for x in inputs])

    def get_next(self):
        return next(self._items, None)


def _int8_graph(fp32_path: Path, out: Path, calibration: list[np.ndarray]) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name("prepared.onnx")
    # The quantiser writes scratch files into the working directory: keep them in the temporary folder.
    with contextlib.chdir(out.parent):
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        name = create_session(prepared).get_inputs()[0].name
        _quantize(prepared, out, name, calibration)
    return out


def _quantize(prepared: Path, out: Path, name: str, calibration: list[np.ndarray]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(prepared), str(out), _Reader(name, calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip


def _fp16_graph(fp32_path: Path, out: Path) -> Path | None:
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError:
        return None
    model = float16.convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sr-x4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="output side (default 512)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calibration", help="folder of photos for int8 calibration (default: random pictures)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, config, info = load_model(resolve_model(args.model))
    scale, multiple = int(model.scale), size_multiple_of(model)
    side = args.size // scale
    lq = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    rows = []
    reference = None
    for label, precision in (("torch fp32 channels-last", "fp32"), ("torch bf16 autocast", "bf16")):
        runner = TorchRunner(model, torch.device("cpu"), scale, multiple, precision=precision)
        out = runner(lq).numpy()
        reference = out if reference is None else reference
        rows.append((label, _time(lambda r=runner: r(lq), args.repeats), _psnr(out, reference)))
    with tempfile.TemporaryDirectory() as folder:
        fp32_path = Path(folder) / "fp32.onnx"
        export_onnx(model, fp32_path, config=config, info=info)
        graphs = {"onnx fp32 (ort-all)": fp32_path}
        graphs["onnx int8 static QDQ"] = _int8_graph(
            fp32_path, Path(folder) / "int8.onnx", _calibration_inputs(args.calibration, side, 16)
        )
        fp16 = _fp16_graph(fp32_path, Path(folder) / "fp16.onnx")
        if fp16 is not None:
            graphs["onnx fp16"] = fp16
        for label, path in graphs.items():
            session = create_session(path, threads=args.threads)
            name = session.get_inputs()[0].name
            x = lq.numpy()
            (out,) = session.run(None, {name: x})
            seconds = _time(lambda s=session, n=name, x=x: s.run(None, {n: x}), args.repeats)
            rows.append((label, seconds, _psnr(out, reference)))
    megapixels = args.size * args.size / 1e6
    print(f"{args.model} (no ensemble), {side}x{side} -> {args.size}x{args.size}, {args.threads} thread(s)\n")
    print("| path | ms/call | output MP/s | PSNR vs torch fp32 (dB) |\n| --- | ---: | ---: | ---: |")
    for label, seconds, psnr in rows:
        print(f"| {label} | {seconds * 1e3:.0f} | {megapixels / seconds:.2f} | {psnr:.1f} |")


if __name__ == "__main__":
    main()
