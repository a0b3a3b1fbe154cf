"""Cost and CPU speed of the generators: parameters, GFLOPs per output megapixel, output megapixels per second.

Usage (from the repository root):

    python benchmarks/bench_generators.py                       # the compact x4 default, 128x128 -> 512x512
    python benchmarks/bench_generators.py --config '{"arch": "unet", "scale": 4}' --runs 3
    python benchmarks/bench_generators.py --preset all --runs 3  # compact, unet lr and unet hr at x4

Speed is fp32 torch on ``--threads`` threads (default 2), after warm-up, the median of ``--runs`` timed calls;
the whole measurement is repeated ``--repeats`` times and the best median kept, since other processes may share
the cores. The physical ceiling is the machine's FLOP/s divided by the GFLOPs per output megapixel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from decrappify.nn.models import count_flops, create_model

PRESETS = {
    "compact": {"arch": "compact", "scale": 4},
    "unet-lr": {"arch": "unet", "encoder": "resnet34", "scale": 4, "sr_mode": "lr"},
    "unet-hr": {"arch": "unet", "encoder": "resnet34", "scale": 4, "sr_mode": "hr"},
}


def measure(config: dict, size: int, runs: int, repeats: int, threads: int) -> dict:
    """Parameters, FLOPs and best-of-repeats median speed of one config on a ``size`` x ``size`` input."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(config).eval()
    x = torch.rand(1, 3, size, size)
    flops = count_flops(model, tuple(x.shape))
    out_mp = size * size * model.scale**2 / 1e6
    medians, fastest = [], float("inf")
    with torch.inference_mode():
        for _ in range(3):  # warm-up: allocator, oneDNN primitive caches (one call is not enough)
            model(x)
        for _ in range(repeats):
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
            medians.append(statistics.median(times))
            fastest = min(fastest, *times)
    best = min(medians)
    return {
        "config": config,
        "input": f"{size}x{size}",
        "output": f"{size * model.scale}x{size * model.scale}",
        "params": sum(p.numel() for p in model.parameters()),
        "gflops_per_output_mp": round(flops / 1e9 / out_mp, 1),
        "seconds_per_image": round(best, 4),
        "output_mp_per_s": round(out_mp / best, 3),
        "output_mp_per_s_fastest_run": round(out_mp / fastest, 3),
        "effective_gflop_per_s": round(flops / 1e9 / best, 1),
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a create_model config as JSON (default: the compact x4 model)")
    parser.add_argument("--preset", choices=[*PRESETS, "all"], default="compact")
    parser.add_argument("--size", type=int, default=128, help="input side in pixels")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.config:
        configs = [json.loads(args.config)]
    else:
        configs = list(PRESETS.values()) if args.preset == "all" else [PRESETS[args.preset]]
    for config in configs:
        print(json.dumps(measure(config, args.size, args.runs, args.repeats, args.threads)), flush=True)


if __name__ == "__main__":
    main()
