"""Tune the annealed-mean temperature of an a*b* classifier (`ab-unet`) on held-out photos, without retraining.

T is the one knob between the distribution's mean (T = 1: safe, greyish) and its mode (T -> 0: vivid, patchy);
Zhang et al. chose 0.38 by eye. This scores a model file at several temperatures with `evaluate`'s colour columns
(colourfulness, a*b* error, hue agreement) on a folder it never trained on, and with --write saves a copy whose
config holds the chosen T (the temperature is a constructor argument, so the file carries it like any option).

    python tools/colorize_temperature.py runs/colorize-effnet/best.safetensors HELD-OUT
    python tools/colorize_temperature.py MODEL HELD-OUT --temperatures 0.12,0.15 --write OUT.safetensors --pick 0.15

HELD-OUT: photos the model never trained on and that are not the benchmark either; the shipped colorize used the 16
its run held out of its training folders (docs/nogan.md). Tuning on BSD100 (bsds500/val) and reporting on it
would be choosing on the test set.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from decrappify.evaluation.evaluate import evaluate
from decrappify.evaluation.methods import ModelMethod
from decrappify.nn.models import arch_options
from decrappify.weights import load_model, save_model


def _with_temperature(path: Path, temperature: float, out: Path) -> Path:
    model, config, info = load_model(path)
    if "temperature" not in arch_options(config["arch"]):
        raise SystemExit(f"{path}: arch {config.get('arch')!r} has no temperature (an 'ab-unet' model has)")
    config = {**config, "temperature": temperature}
    model.temperature = temperature
    return save_model(model, out, config, {**info, "name": f"{info.get('name', path.stem)} T={temperature:g}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="an ab-unet model file")
    parser.add_argument("data", type=Path, help="a folder of held-out colour photos")
    parser.add_argument("--temperatures", default="0.2,0.3,0.38,0.5,0.7,1.0", help="comma-separated values of T")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    parser.add_argument("--write", type=Path, help="save a copy of the model with --pick as its temperature")
    parser.add_argument("--pick", type=float, help="the temperature --write stores")
    args = parser.parse_args()
    if args.write and args.pick is None:
        parser.error("--write needs --pick T")
    temperatures = [float(t) for t in args.temperatures.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        methods = [
            ModelMethod(_with_temperature(args.model, t, Path(scratch) / f"t{i}.safetensors"), 1, label=f"T={t:g}",
                        precision=args.precision)
            for i, t in enumerate(temperatures)
        ]  # fmt: skip
        result = evaluate(args.data, "colorize", methods, keep_crops=False, perceptual=False, no_reference=False)
    print(result.to_markdown())
    if args.write:
        print(f"wrote {_with_temperature(args.model, args.pick, args.write)}")


if __name__ == "__main__":
    main()
