"""Does a model score the same in bf16 as in fp32? Evaluates each shipped model both ways and, with --pin, makes
a model that fails run in fp32 under `--precision auto` (its file's info gets "precision": "fp32").

    python tools/bf16_parity.py                    # every shipped model: print the table
    python tools/bf16_parity.py --pin              # ... and pin the ones that fail to fp32
    python tools/bf16_parity.py --model sr-x4      # one model

The bars: PSNR_Y within 0.02 dB of fp32 on BSD100 (and Set5 for sr-x4), and the PSNR inside the watermark
boxes within 0.05 dB. Each model runs as it does by default (its own self-ensemble), seed 0, like `evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decrappify.evaluation.evaluate import evaluate
from decrappify.inference.zoo import list_models, resolve_model
from decrappify.io.model_metadata import read_model_metadata
from decrappify.weights import update_model_info

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PSNR_BAR, BOX_BAR = 0.02, 0.05
#: Sets per task: (label, folder below the data root).
SETS = {
    "sr-x4": [("BSD100", "data/bsds500/val"), ("Set5", "data/benchmarks/Set5")],
    "restore-x4": [("BSD100", "data/bsds500/val")],
    "restore-x1": [("BSD100", "data/bsds500/val")],
    "colorize": [("BSD100", "data/bsds500/val")],
}


def _scores(folder: Path, task: str, model: Path, precision: str) -> tuple[float, float | None, float | None]:
    result = evaluate(folder, task, [str(model)], keep_crops=False, perceptual=False, precision=precision)
    row = result.summaries()[-1]
    return row.psnr_y, row.psnr_watermark, row.ab_error


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="a shipped name or model file (default: every shipped)")
    parser.add_argument("--data", type=Path, default=SHARED, help=f"folder holding data/ (default {SHARED})")
    parser.add_argument("--pin", action="store_true", help="pin a model that fails to fp32 in its file")
    args = parser.parse_args()
    models = args.model or [entry.name for entry in list_models()]
    print("| model | set | PSNR_Y fp32 | PSNR_Y bf16 | diff | boxes fp32 | boxes bf16 | diff | a*b* fp32 | "
          "a*b* bf16 | meets the bars |\n" + "| --- " * 11 + "|")  # fmt: skip
    for name in models:
        path = resolve_model(name)
        _, info = read_model_metadata(path)
        task = str(info.get("task"))
        passed = True
        for label, folder in SETS[task]:
            y32, box32, ab32 = _scores(args.data / folder, task, path, "fp32")
            y16, box16, ab16 = _scores(args.data / folder, task, path, "bf16")
            ok = abs(y16 - y32) <= PSNR_BAR and (box32 is None or abs(box16 - box32) <= BOX_BAR)
            passed &= ok
            box_diff = None if box32 is None else box16 - box32
            print(f"| {name} | {label} | {y32:.3f} | {y16:.3f} | {y16 - y32:+.4f} | {_fmt(box32)} | {_fmt(box16)} "
                  f"| {'-' if box_diff is None else f'{box_diff:+.4f}'} | {_fmt(ab32)} | {_fmt(ab16)} "
                  f"| {'yes' if ok else 'no'} |", flush=True)  # fmt: skip
        wanted = None if passed else "fp32"
        if args.pin and info.get("precision") != wanted:
            update_model_info(path, {"precision": wanted})
            print(f"  {path.name}: " + ("runs bf16 under auto" if passed else "pinned to fp32 under auto"))


if __name__ == "__main__":
    main()
