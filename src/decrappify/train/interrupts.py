"""Ctrl-C (SIGINT) and SIGTERM during training: finish the step, save a checkpoint, then stop.

An interrupt in the middle of a step would leave weights and position out of step with each other, so the first
signal only sets a flag that the loop reads between steps (and shares with the other DDP processes, so all stop
at the same step). A second signal interrupts at once, for when saving itself hangs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def deferred_interrupts(flag: threading.Event) -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into `flag`; the previous handlers come back on exit.

    Signal handlers can only be installed from the main thread: elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        log.warning(
            "interrupt: finishing this step and saving a checkpoint (interrupt again to stop at once)"
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
