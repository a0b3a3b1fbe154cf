"""How torch's OpenMP threads wait between operations, chosen from how busy the machine is when the CLI starts.

Why it matters: between two operations of a network (a convolution, a ReLU) torch's worker threads wait for the
next parallel region. Spinning catches it at once; sleeping costs a wake-up (tens of microseconds) per operation
and thread. A small network runs hundreds of operations per call, so on an idle machine the text-mask model took
44 % longer sleeping (36 ms per 512 x 512 bf16 call against 25 ms). When another process holds a core,
spinning threads steal it from the thread they wait for: two 2-thread processes side by side on 2 cores took
48-200 ms per call each with libgomp's default spin, 39 ms each sleeping. Measured on the project's 2-core CPU;
docs/benchmarks/text-mask.md has the table and the commands.

So: when other processes are running as the CLI starts, threads sleep (``OMP_WAIT_POLICY=PASSIVE``); on an idle
machine they spin briefly (``GOMP_SPINCOUNT=1000``, a few microseconds, which was as fast as spinning for ever
when idle and 15-20 % slower than sleeping when a busy neighbour appeared later). A choice the user made in the
environment wins. libgomp reads these variables when it loads, so they must be set before torch is imported;
a program that embeds the library chooses for itself.
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


def wait_settings(environ: Mapping[str, str], other_running: float | None) -> dict[str, str]:
    """The variables to add: none if the user chose, the sleeping ones when others run (or nobody can tell)."""
    if any(name in environ for name in USER_SETTINGS):
        return {}
    return dict(IDLE_SETTINGS if other_running is not None and other_running < 1 else BUSY_SETTINGS)


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


def choose_wait_policy(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the waiting variables in ``environ`` (before torch loads); returns what was set."""
    if any(name in environ for name in USER_SETTINGS):
        return {}
    settings = wait_settings(environ, other_running_processes())
    environ.update(settings)
    return settings
