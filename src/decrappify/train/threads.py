"""`train.threads = 0`: choose torch's CPU thread count by timing real training steps, and check again later.

On a small machine that other programs share, the "obvious" setting (one thread per core) can be the worst one:
torch's OpenMP threads spin while they wait for each other, so when another process holds one of the cores, every
parallel operation waits for a thread that is not running. On an idle machine the same setting is the fastest.
Which case holds can change while a run lasts, so the choice is made by timing real steps (a few with each
candidate) and made again every few minutes. The steps of a trial are ordinary training steps: nothing is wasted
but the difference in speed.
"""

from __future__ import annotations

import logging
import statistics
import time

import torch

log = logging.getLogger(__name__)


class ThreadTuner:
    """Cycles through `candidates` thread counts for `trial_steps` steps each, then keeps the fastest."""

    def __init__(
        self, candidates: list[int], *, every_seconds: float = 300.0, trial_steps: int = 3, skip: int = 2
    ):
        self.candidates = sorted(set(candidates), reverse=True)
        self.every_seconds = every_seconds
        self.trial_steps = trial_steps
        self._skip = skip  # steps to let pass first (allocations make the first steps slow)
        self._times: dict[int, list[float]] = {}
        self._chosen: int | None = None
        self._chosen_at = 0.0

    @property
    def enabled(self) -> bool:
        return len(self.candidates) > 1

    def _current_trial(self) -> int | None:
        """The thread count under trial, or None when no trial is running."""
        for threads in self.candidates:
            if len(self._times.get(threads, [])) < self.trial_steps:
                return threads
        return None

    def before_step(self) -> None:
        """Set the thread count for the coming step."""
        if not self.enabled or self._skip > 0:
            return
        trial = self._current_trial()
        if trial is None and time.monotonic() - self._chosen_at >= self.every_seconds:
            self._times = {}  # time for a new trial
            trial = self._current_trial()
        threads = trial if trial is not None else self._chosen
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    def after_step(self, seconds: float) -> None:
        """Record the step that just ran (its time includes waiting for its batch)."""
        if not self.enabled:
            return
        if self._skip > 0:
            self._skip -= 1
            return
        trial = self._current_trial()
        if trial is None:
            return
        self._times.setdefault(trial, []).append(seconds)
        if self._current_trial() is None:
            self._choose()

    def _choose(self) -> None:
        medians = {threads: statistics.median(times) for threads, times in self._times.items()}
        best = min(medians, key=medians.get)
        if best != self._chosen:
            text = ", ".join(f"{t} thread(s) {s * 1000:.0f} ms" for t, s in medians.items())
            log.info("CPU threads: %s per step: using %d", text, best)
        self._chosen, self._chosen_at = best, time.monotonic()
        torch.set_num_threads(best)
