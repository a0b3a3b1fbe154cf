"""How torch's OpenMP threads wait between operations, chosen from how busy the machine is when the CLI starts.

Why it matters: between two operations of a network (a convolution, a ReLU) torch's worker threads wait for the
next parallel region. Spinning catches it at once; sleeping costs a wake-up per operation and thread, and a small
network runs hundreds of operations per call. When another process holds a core, spinning threads steal it from
the thread they wait for. `python benchmarks/openmp_wait.py` (text-mask, 512 x 512 bf16, 2 threads, ms per call on
the project's 2-core CPU; two runs, docs/benchmarks/text-mask.md):

| setting | idle | busy neighbour | two side by side |
| --- | ---: | ---: | ---: |
| sleep (``OMP_WAIT_POLICY=PASSIVE``) | 28-31 | 35 | 38-39 |
| spin 1000 (``GOMP_SPINCOUNT=1000``) | 24 | 42 | 42-45 |
| spin 10000 | 21 | 99-107 | 109-115 |
| libgomp's default (300000) | 21 | 41-46 | 54-78 |

So: when other processes are running as the CLI starts, and always in `decrappify serve`, threads sleep; on an
idle machine they spin briefly (1000 spins: most of the idle gain, and the least loss of the spinning settings
when a neighbour starts later). A choice the user made in the environment wins. libgomp reads these variables when
it loads, so they must be set before torch is imported; a program that embeds the library chooses for itself.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, MutableMapping

#: Variables by which a user has already chosen how OpenMP threads wait (libgomp's and Intel OpenMP's).
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
IDLE_SETTINGS = {"GOMP_SPINCOUNT": "1000"}
BUSY_SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE"}
LOADAVG = "/proc/loadavg"


def wait_settings(environ: Mapping[str, str], other_running: float | None, *, service: bool = False) -> dict[str, str]:
    """The variables to add: none if the user chose, the sleeping ones when others run (or nobody can tell) and
    for a ``service``, which runs for days beside whatever comes later, with several restorations at once when
    it has more than one worker."""
    if any(name in environ for name in USER_SETTINGS):
        return {}
    idle = not service and other_running is not None and other_running < 1
    return dict(IDLE_SETTINGS if idle else BUSY_SETTINGS)


def other_running_processes(samples: int = 5, interval_s: float = 0.005) -> float | None:
    """How many other threads are running right now: the median over a few samples of the kernel's count of
    runnable threads, less this one (None where there is no /proc/loadavg). The instantaneous count, not the
    load average: a script that runs the CLI once per photo would otherwise see its own earlier runs."""
    counts = []
    for index in range(samples):
        try:
            with open(LOADAVG, encoding="ascii") as file:
                running = file.read().split()[3].split("/")[0]
            counts.append(int(running) - 1)
        except (OSError, IndexError, ValueError):
            return None
        if index + 1 < samples:
            time.sleep(interval_s)
    return statistics.median(counts)


def choose_wait_policy(environ: MutableMapping[str, str] = os.environ, *, service: bool = False) -> dict[str, str]:
    """Set the waiting variables in ``environ`` (before torch loads); returns what was set."""
    if any(name in environ for name in USER_SETTINGS):  # checked first too: no 20 ms of sampling for nothing
        return {}
    settings = wait_settings(environ, None if service else other_running_processes(), service=service)
    environ.update(settings)
    return settings
