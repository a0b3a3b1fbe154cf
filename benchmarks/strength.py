"""The strength curve: PSNR_Y and NIQE of a model mixed with its pair at strength 0, 0.25, 0.5, 0.75 and 1.

    python benchmarks/strength.py --model restore-x4 [--pair restore-x4-gan] [--data DIR] [--images 100]
                                  [--plot docs/benchmarks/strength.png]

`--pair` defaults to the pair the model file names (`strength_pair`). Every strength is one row of `decrappify
evaluate` on the first `--images` photos of `--data` (BSD100: the validation half of BSDS500), degraded with the
model's task preset (seed 0): PSNR_Y (fidelity, higher is better) and NIQE (naturalness without a reference,
lower is better), with the truth's NIQE for reference. The plot (a PNG drawn with Pillow: no matplotlib needed)
has PSNR_Y on the left axis and NIQE on the right, against strength. For docs/benchmarks/strength.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from decrappify.evaluation.evaluate import evaluate
from decrappify.inference.restorer import Restorer
from decrappify.inference.strength import ModelPair, find_pair
from decrappify.io.listing import images_in_folder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "val"


class Mixed:
    """`evaluate`'s method protocol around a restorer at one strength."""

    def __init__(self, restorer: Restorer, strength: float):
        self.restorer, self.scale, self.name = restorer, restorer.scale, f"strength {strength:g}"

    def __call__(self, rgb_lq):
        return self.restorer.restore_array(rgb_lq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pair", default=None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--plot", type=Path, default=None, help="write the curve to this PNG")
    args = parser.parse_args()
    pair = ModelPair(args.model, args.pair or find_pair(args.model))
    methods = [Mixed(pair.restorer_at(s, device="cpu", precision=args.precision), s) for s in args.strengths]
    task = str(pair.first.info.get("task", "restore-x4"))
    with tempfile.TemporaryDirectory(prefix="decrappify-strength-") as folder:
        for path, relative in images_in_folder(args.data)[: args.images]:
            link = Path(folder) / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
        result = evaluate(folder, task, methods, perceptual=False, text_detection=False, progress=True)
    rows = {row["method"]: row for row in result.to_dict()["results"]}
    truth_niqe = result.to_dict().get("truth", {}).get("niqe")
    print(f"{pair.first.name} -> {pair.second.name} ({pair.mode}), task {task}, {len(result.images)} images; "
          f"truth NIQE {truth_niqe:.2f}" if truth_niqe else "")
    print("| strength | PSNR_Y | NIQE |\n| --- | --- | --- |")
    curve = []
    for method in methods:
        row = rows[method.name]
        curve.append((float(method.name.split()[-1]), row["psnr_y"], row["niqe"]))
        print(f"| {curve[-1][0]:g} | {row['psnr_y']:.2f} | {row['niqe']:.3f} |")
    baseline = next(iter(rows.values()))
    print(f"| {baseline['method']} | {baseline['psnr_y']:.2f} | {baseline['niqe']:.3f} |")
    if args.plot:
        plot(curve, args.plot, f"{pair.first.name} -> {pair.second.name}: strength ({pair.mode})", truth_niqe)
        print(f"wrote {args.plot}")


def plot(curve: list[tuple[float, float, float]], path: Path, title: str, truth_niqe: float | None) -> None:
    """PSNR_Y (blue, left axis) and NIQE (orange, right axis) against strength, drawn with Pillow."""
    width, height, left, right, top, bottom = 640, 400, 70, 70, 40, 50
    image = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=13)
    draw.text((width // 2 - draw.textlength(title, font=font) // 2, 4), title, fill="black", font=font)
    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    xs = [point[0] for point in curve]
    series = [([p[1] for p in curve], "#1f5fbf", "PSNR_Y (dB)", left - 62), ([p[2] for p in curve], "#d9731a",
              "NIQE", width - right + 8)]  # fmt: skip
    for values, colour, label, label_x in series:
        extra = [truth_niqe] if label == "NIQE" and truth_niqe else []
        low, high = min(values + extra), max(values + extra)
        pad = (high - low) * 0.1 or 0.5
        low, high = low - pad, high + pad

        def to_xy(x: float, y: float, low: float = low, high: float = high) -> tuple[float, float]:
            span_x = (max(xs) - min(xs)) or 1.0
            return (left + (x - min(xs)) / span_x * (width - left - right),
                    height - bottom - (y - low) / (high - low) * (height - top - bottom))  # fmt: skip

        points = [to_xy(x, y) for x, y in zip(xs, values, strict=True)]
        draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        for fraction in (0.0, 0.5, 1.0):
            value = low + fraction * (high - low)
            y = to_xy(xs[0], value)[1]
            draw.text((label_x, y - 7), f"{value:.2f}", fill=colour, font=font)
        draw.text((label_x, top - 17), label, fill=colour, font=font)
        if extra:
            y = to_xy(xs[0], truth_niqe)[1]
            draw.line((left, y, width - right, y), fill=colour, width=1)
            draw.text((left + 6, y - 16), "truth NIQE", fill=colour, font=font)
    for x in xs:
        px = to_xy(x, 0)[0]
        draw.text((px - 10, height - bottom + 8), f"{x:g}", fill="black", font=font)
    draw.text((width // 2 - 30, height - 22), "strength", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


if __name__ == "__main__":
    main()
