"""Time-budget mode (`train.time_budget_minutes`): fit every stage's LR cycle into its share of the wall clock.

A one-cycle or cosine schedule needs its length in advance, but the speed of a step is only known once steps
run. So a stage starts with a provisional length (its LR then stays at the cycle's start), times a short warm-up,
and sets its length from the measured speed; at every epoch end it measures again, now with validation and
checkpoints included, and adjusts. The stage also stops when its share runs out, whatever the estimate said.
Rank 0's clock decides everything (its numbers are broadcast), so all DDP processes agree on every step.
"""

from __future__ import annotations

import logging

from decrappify.train import distributed
from decrappify.train.checkpoint import TrainState

log = logging.getLogger(__name__)

WARMUP_START = (
    8  # steps left untimed: the first are slow (allocations), then `threads.ThreadTuner` tries counts
)
WARMUP_STEPS = 12  # steps timed before a stage's length is estimated
PROVISIONAL_STEPS = 10**6  # a stage's planned length until the estimate exists


class TimeBudget:
    """Shares `minutes` among the stages (in proportion to their `epochs`) and plans each stage's steps."""

    def __init__(self, minutes: float, ctx: distributed.DistContext):
        self.seconds = minutes * 60.0
        self.ctx = ctx
        self._mark: tuple[int, float] | None = None  # (stage step, elapsed) where the warm-up timing began

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def start_stage(self, state: TrainState, weights: list[float]) -> None:
        """A fresh stage: its share of what is left of the budget (`weights`: this and the later stages)."""
        share = max(1.0, self.seconds - state.elapsed) * weights[0] / sum(weights)
        state.stage_budget = float(distributed.broadcast_object(self.ctx, share))
        state.stage_started = state.elapsed
        state.stage_total = PROVISIONAL_STEPS
        self._mark = None

    def resume_stage(self, state: TrainState, weights: list[float]) -> None:
        """A stage resumed mid-way: its share, from where it started, of the budget as configured *now*.

        The same share `start_stage` gave it when the budget is unchanged; a `--resume` with another
        `train.time_budget_minutes` moves the stage's end (and, at the next epoch, its planned length). Without a
        budget now, the stage keeps the length it was planned at and no longer stops on time.
        """
        share = max(1.0, self.seconds - state.stage_started) * weights[0] / sum(weights) if self.enabled else 0.0
        state.stage_budget = float(distributed.broadcast_object(self.ctx, share))
        self._mark = None

    def over(self, state: TrainState, elapsed: float) -> bool:
        """Rank 0's verdict: this stage has used its share."""
        return bool(
            self.ctx.is_main
            and state.stage_budget > 0
            and elapsed - state.stage_started >= state.stage_budget
        )

    def after_step(self, state: TrainState) -> int | None:
        """The stage's length once the warm-up has been timed (None: no change)."""
        if state.stage_budget <= 0 or state.stage_total != PROVISIONAL_STEPS:
            return None
        if self._mark is None:
            if state.stage_step >= WARMUP_START:
                self._mark = (state.stage_step, state.elapsed)
            return None
        steps = state.stage_step - self._mark[0]
        if steps < WARMUP_STEPS:
            return None
        return self._plan(state, (state.elapsed - self._mark[1]) / steps)

    def after_epoch(self, state: TrainState) -> int | None:
        """The stage's length re-estimated from its whole history (validation and checkpoints included)."""
        if state.stage_budget <= 0 or state.stage_total == PROVISIONAL_STEPS or state.stage_step == 0:
            return None
        return self._plan(state, (state.elapsed - state.stage_started) / state.stage_step)

    def _plan(self, state: TrainState, per_step: float) -> int | None:
        left = state.stage_budget - (state.elapsed - state.stage_started)
        total = state.stage_step + max(1, int(left / max(per_step, 1e-6)))
        total = int(distributed.broadcast_object(self.ctx, total))
        if total == state.stage_total:
            return None
        log.debug("time budget: stage %d planned at %d steps (%.3f s/step)", state.stage + 1, total, per_step)
        return total
