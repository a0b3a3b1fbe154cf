"""Learning-rate schedules (one-cycle, cosine, constant) and the LR range test ("LR finder").

The schedule is a pure function of (step, total steps): no hidden state but the total, so a resumed run lands on
exactly the LR it would have had, and a time-budgeted run can re-estimate its total step count at an epoch boundary
and still end its cycle exactly when the budget runs out. Each optimizer parameter group carries its own
`peak_lr` (discriminative LRs: a pretrained encoder at a fraction of the decoder's), which the schedule scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from decrappify.train.config import OptimConfig


def _cos_anneal(start: float, end: float, fraction: float) -> float:
    """Cosine interpolation from `start` (fraction 0) to `end` (fraction 1)."""
    return end + (start - end) * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0))) / 2.0


@dataclass
class Schedule:
    """LR multiplier (of each group's `peak_lr`) and beta1 for each step of a cycle of `total_steps` steps."""

    kind: str
    total_steps: int
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    moms: tuple[float, float] | None = (0.95, 0.85)  # None: leave beta1 alone

    @classmethod
    def from_config(cls, optim: OptimConfig, total_steps: int) -> Schedule:
        moms = optim.moms if optim.cycle_momentum and optim.schedule == "onecycle" else None
        return cls(
            optim.schedule,
            max(1, total_steps),
            optim.pct_start,
            optim.div_factor,
            optim.final_div_factor,
            moms,
        )

    def _fraction(self, step: int) -> float:
        return step / max(1, self.total_steps - 1)

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak LR at `step` (0-based)."""
        t = self._fraction(step)
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            return _cos_anneal(1.0, 1.0 / self.final_div_factor, t)
        low = 1.0 / self.div_factor
        if t < self.pct_start:
            return _cos_anneal(low, 1.0, t / self.pct_start)
        return _cos_anneal(1.0, low / self.final_div_factor, (t - self.pct_start) / (1.0 - self.pct_start))

    def beta1(self, step: int) -> float | None:
        """beta1 at `step` for one-cycle momentum cycling (high when the LR is low), else None."""
        if self.moms is None:
            return None
        t, (high, low) = self._fraction(step), self.moms
        if t < self.pct_start:
            return _cos_anneal(high, low, t / self.pct_start)
        return _cos_anneal(low, high, (t - self.pct_start) / (1.0 - self.pct_start))

    def apply(self, optimizer: torch.optim.Optimizer, step: int, peak_scale: float = 1.0) -> float:
        """Set every group's LR (and beta1) for `step`; returns the first group's LR."""
        factor, beta1 = self.lr_factor(step) * peak_scale, self.beta1(step)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
            if beta1 is not None and "betas" in group:
                group["betas"] = (beta1, group["betas"][1])
        return optimizer.param_groups[0]["lr"]


# ---------------------------------------------------------------------------------------------------------
# LR range test


@dataclass
class LRFindResult:
    """Losses along an exponential LR sweep, and two suggestions read from the smoothed curve."""

    lrs: list[float]
    losses: list[float]  # smoothed (exponential moving average, bias-corrected)
    steepest: float  # LR where the smoothed loss falls fastest (per log-LR)
    min_div10: float  # the LR of the minimum loss / 10 (fastai's rule of thumb)
    valley: float = 0.0  # fastai's "valley": in the longest stretch where the loss keeps falling (see `_valley`)

    #: How `suggested` is chosen, for the user. The steepest point of a noisy curve can sit in the flat start,
    #: and the minimum / 10 next to the divergence; the valley rule (fastai's default since 2.5) reads the
    #: whole falling stretch, so one bump of noise cannot move it far.
    RULE = "fastai's valley rule: half way into the longest stretch where the loss keeps falling"

    @property
    def suggested(self) -> float:
        """The one rate to use: `valley` (see `RULE`)."""
        return self.valley

    def to_csv(self) -> str:
        rows = ["lr,loss"] + [f"{lr:.6g},{loss:.6g}" for lr, loss in zip(self.lrs, self.losses, strict=True)]
        return "\n".join(rows) + "\n"


def lr_sweep(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """Exponentially spaced LRs from `start_lr` to `end_lr`."""
    ratio = (end_lr / start_lr) ** (1.0 / max(1, num_steps - 1))
    return [start_lr * ratio**i for i in range(num_steps)]


def lr_find(
    train_step: Callable[[float], float],
    lrs: Iterable[float],
    *,
    beta: float = 0.98,
    diverge: float = 4.0,
) -> LRFindResult:
    """Run `train_step(lr) -> loss` along `lrs`; stop once the smoothed loss exceeds `diverge` x its minimum.

    The caller owns the model: it must snapshot the weights and optimizer before and restore them after, because
    the sweep ends by blowing the model up on purpose.
    """
    seen_lrs: list[float] = []
    smoothed: list[float] = []
    average, best = 0.0, math.inf
    for i, lr in enumerate(lrs):
        loss = train_step(lr)
        if not math.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        value = average / (1 - beta ** (i + 1))
        seen_lrs.append(lr)
        smoothed.append(value)
        best = min(best, value)
        if i > 5 and value > diverge * best:
            break
    return _suggest(seen_lrs, smoothed)


def _suggest(lrs: list[float], losses: list[float]) -> LRFindResult:
    if len(lrs) < 3:
        fallback = lrs[0] if lrs else 1e-3
        return LRFindResult(lrs, losses, fallback, fallback, fallback)
    # ignore the tail after the minimum (divergence) when looking for the steepest descent
    stop = losses.index(min(losses)) + 1
    # skip the first tenth too: the moving average has barely started there
    first = max(1, len(lrs) // 10)
    candidates = range(first, stop - 1)
    slopes = [
        (losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1])) for i in candidates
    ]
    steepest = lrs[first + slopes.index(min(slopes))] if slopes else lrs[stop - 1] / 10
    return LRFindResult(lrs, losses, steepest, lrs[stop - 1] / 10, _valley(lrs, losses))


def _valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's `valley`: the longest run of points each lower than an earlier one in it (a longest decreasing
    subsequence), and the rate half way into it (`fastai.callback.schedule.valley`)."""
    count = len(losses)
    longest = [1] * count
    start = end = 0
    for i in range(1, count):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    return lrs[min(count - 1, start + int(third) + int(third / 2))]
