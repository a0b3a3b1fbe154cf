"""Training events and the callbacks that observe them (progress bar, logs, TensorBoard).

fastai's idea of a small set of events (fit, stage, step, epoch), without its habit of letting callbacks reach
into the learner: the trainer hands each callback a plain, read-only record of what just happened, and callbacks
never change training. The trainer only calls callbacks on rank 0, so none of them needs to know about DDP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitInfo:
    """The start of `fit`: where the run lives and where it (re)starts."""

    run_dir: Path
    num_stages: int
    start_step: int  # > 0 when resuming
    resumed: bool


@dataclass(frozen=True)
class StageInfo:
    index: int
    crop: int
    batch: int  # per process
    world_size: int
    total_steps: int  # planned steps of the stage; 0: not known yet (time-budget mode, before its warm-up)
    start_step: int  # steps of this stage already done (resume)
    batches_per_epoch: int


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step. `loss` is the mean over processes; `terms` are the loss's parts (rank 0's), `notes`
    the step's text values (a NoGAN GAN step's `mode`: which side trained)."""

    stage: int
    epoch: int
    step: int  # global steps done, this one included
    stage_step: int
    stage_total: int
    lr: float
    loss: float
    crops: int  # training crops in this step, over all processes
    elapsed: float  # training seconds so far
    seconds: float  # this step's time, waiting for its batch included (validation, checkpoints not)
    terms: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochRecord:
    """The end of an epoch (or of a stage that stops mid-epoch): training loss and validation metrics."""

    stage: int
    epoch: int
    step: int
    lr: float
    train_loss: float  # mean over the epoch's steps
    crops_per_second: float  # over the epoch, validation excluded
    elapsed: float
    metrics: dict[str, float]  # val_psnr_y, val_ssim_y, val_loss (empty without validation)
    sample_path: Path | None = None


class Callback:
    """Override the events you need; every method is a no-op here."""

    def on_fit_start(self, info: FitInfo) -> None: ...

    def on_stage_start(self, info: StageInfo) -> None: ...

    def on_step(self, record: StepRecord) -> None: ...

    def on_stage_total(self, total_steps: int) -> None:
        """The stage's planned step count changed (time-budget re-estimation)."""

    def on_epoch_end(self, record: EpochRecord) -> None: ...

    def on_stage_end(self, info: StageInfo) -> None:
        """The stage finished (not called when it stops on an error or an interrupt: see `on_fit_end`)."""

    def on_fit_end(self) -> None:
        """Always called, also when training stops on an error or an interrupt (close files here)."""


class CallbackList(Callback):
    """Fan each event out to several callbacks, in order."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)

    def on_fit_start(self, info: FitInfo) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(info)

    def on_stage_start(self, info: StageInfo) -> None:
        for cb in self.callbacks:
            cb.on_stage_start(info)

    def on_step(self, record: StepRecord) -> None:
        for cb in self.callbacks:
            cb.on_step(record)

    def on_stage_total(self, total_steps: int) -> None:
        for cb in self.callbacks:
            cb.on_stage_total(total_steps)

    def on_epoch_end(self, record: EpochRecord) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(record)

    def on_stage_end(self, info: StageInfo) -> None:
        for cb in self.callbacks:
            cb.on_stage_end(info)

    def on_fit_end(self) -> None:
        for cb in self.callbacks:
            try:
                cb.on_fit_end()
            except Exception:
                log.exception("callback %s failed while closing", type(cb).__name__)


class ProgressBar(Callback):
    """A tqdm bar per stage on stderr: loss, learning rate, crops per second and the ETA of the stage."""

    def __init__(self, every: int = 1):
        self.every = max(1, every)
        self._bar = None
        self._pending = 0

    def on_stage_start(self, info: StageInfo) -> None:
        from tqdm import tqdm

        self._close()
        self._bar = tqdm(
            total=info.total_steps or None,
            initial=info.start_step,
            desc=f"stage {info.index + 1} ({info.crop}px x{info.batch * info.world_size})",
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )

    def on_stage_total(self, total_steps: int) -> None:
        if self._bar is not None:
            self._bar.total = total_steps
            self._bar.refresh()

    def on_step(self, record: StepRecord) -> None:
        if self._bar is None:
            return
        self._pending += 1
        if self._pending >= self.every or record.stage_step >= record.stage_total:
            rate = self._bar.format_dict.get("rate") or 0.0
            self._bar.set_postfix(
                loss=f"{record.loss:.4f}",
                lr=f"{record.lr:.2e}",
                crops_s=f"{rate * record.crops:.1f}",
                refresh=False,
            )
            self._bar.update(self._pending)
            self._pending = 0

    def on_epoch_end(self, record: EpochRecord) -> None:
        if self._bar is not None and record.metrics:
            text = ", ".join(f"{k} {v:.4f}" for k, v in record.metrics.items())
            self._bar.write(
                f"stage {record.stage + 1} epoch {record.epoch + 1}: train loss {record.train_loss:.4f}, {text}"
            )

    def on_stage_end(self, info: StageInfo) -> None:
        self._close()

    def on_fit_end(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            if self._pending:
                self._bar.update(self._pending)
                self._pending = 0
            self._bar.close()
            self._bar = None


class LogLines(Callback):
    """Without a progress bar: one log line per epoch."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        text = ", ".join(f"{k} {v:.4f}" for k, v in record.metrics.items())
        log.info(
            "stage %d epoch %d step %d: train loss %.4f, %.1f crops/s%s",
            record.stage + 1,
            record.epoch + 1,
            record.step,
            record.train_loss,
            record.crops_per_second,
            f", {text}" if text else "",
        )
