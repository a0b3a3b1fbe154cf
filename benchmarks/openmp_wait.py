"""How OpenMP threads wait, measured: ms per call of a model under each setting, idle, beside a busy process, and
two runs side by side. The figures behind `decrappify.openmp_wait`'s choice.

    python benchmarks/openmp_wait.py --model text-mask

Each cell runs `decrappify benchmark --model M --backend torch --variant bf16 --threads 2` in a fresh process
(libgomp reads its settings when it loads) with the setting in its environment, which the CLI then leaves alone:
sleeping (`OMP_WAIT_POLICY=PASSIVE`), a short spin (`GOMP_SPINCOUNT`) and libgomp's own default (300000 spins).
"busy neighbour": a Python loop holds one core for the whole cell; "side by side": two such benchmarks at once
(the slower of the two is shown). The machine must otherwise be idle.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

SETTINGS = {
    "sleep (PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 1000": {"GOMP_SPINCOUNT": "1000"},
    "spin 10000": {"GOMP_SPINCOUNT": "10000"},
    "libgomp default (300000)": {"GOMP_SPINCOUNT": "300000"},
}
BUSY_LOOP = "import time\nend = time.time() + 600\nwhile time.time() < end: pass\n"


def command(model: str, repeats: int) -> list[str]:
    cli = str(Path(sys.executable).with_name("decrappify"))
    return [cli, "benchmark", "--model", model, "--backend", "torch", "--variant", "bf16", "--threads", "2",
            "--repeats", str(repeats), "--warmup", "3"]  # fmt: skip


def ms_per_call(output: str) -> float:
    """The ms/call column of the benchmark's one bf16 row."""
    match = re.search(r"\| torch \| bf16 \| 2 \| \S+ \| (\d+) \|", output)
    if not match:
        raise SystemExit(f"no bf16 row in the benchmark's output:\n{output}")
    return float(match.group(1))


def run(model: str, repeats: int, env: dict[str, str], copies: int = 1) -> float:
    environ = {**os.environ, **env}
    procs = [subprocess.Popen(command(model, repeats), env=environ, stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL) for _ in range(copies)]  # fmt: skip
    return max(ms_per_call(proc.communicate()[0]) for proc in procs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="text-mask")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"{args.model}, 512x512 bf16, 2 threads: ms per call (median of {args.repeats})\n")
    print("| setting | idle | busy neighbour | side by side |")
    print("| --- | ---: | ---: | ---: |")
    for label, env in SETTINGS.items():
        idle = run(args.model, args.repeats, env)
        neighbour = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        try:
            busy = run(args.model, args.repeats, env)
        finally:
            neighbour.kill()
        pair = run(args.model, args.repeats, env, copies=2)
        print(f"| {label} | {idle:.0f} | {busy:.0f} | {pair:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
