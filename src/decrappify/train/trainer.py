"""The training loop: stages of one-cycle training, validation every epoch, checkpoints that resume exactly.

One `Trainer` per run. Its position (stage, epoch, batch, step) is the only state that matters between steps:
batches are a pure function of that position (`data.EpochPlan`), the LR a pure function of the step
(`schedule.Schedule`), so a run restored from a checkpoint continues with the same batches and LRs as if it had
never stopped. Every step ends with one small all-reduce that carries the loss, a non-finite flag, an interrupt
flag and rank 0's time-budget verdict, so all DDP processes stop together, at the same step, for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from decrappify.data.pairs import EpochPlan, iterate_batches
from decrappify.errors import OutputError, TrainingError
from decrappify.io.atomic import atomic_write_text
from decrappify.train import build, distributed
from decrappify.train.budget import PROVISIONAL_STEPS, TimeBudget
from decrappify.train.checkpoint import (
    Checkpoint,
    TrainState,
    find_checkpoint,
    load_checkpoint,
    remove_interrupted_writes,
    save_checkpoint,
)
from decrappify.train.config import Config
from decrappify.train.events import Callback, CallbackList, EpochRecord, FitInfo, StageInfo, StepRecord
from decrappify.train.interrupts import deferred_interrupts
from decrappify.train.logs import default_callbacks
from decrappify.train.schedule import LRFindResult, Schedule, lr_find, lr_sweep
from decrappify.train.threads import ThreadTuner
from decrappify.train.validation import COLOUR_SELECTION, Selection, selection_for, validate_with_samples

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced (paths are None on ranks other than 0)."""

    run_dir: Path
    model_path: Path | None
    best_path: Path | None
    state: TrainState
    losses: list[float] = field(default_factory=list)  # per-step training loss of this session


class Trainer:
    """Trains `config` into `run_dir`; `fit()` runs (or resumes) all stages, `find_lr()` runs the LR range test.

    Set the torch thread count before (`train()` does); only rank 0 calls callbacks and writes files.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        ctx: distributed.DistContext | None = None,
        resume: bool = False,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
        command: str = "",
    ):
        self.ctx = ctx or distributed.DistContext()
        self.run_dir = Path(run_dir)
        self.command = command
        self.state = TrainState()
        self.budget = TimeBudget(config.train.time_budget_minutes, self.ctx)
        self._interrupt = threading.Event()
        self._last_saved: tuple[int, float] | None = None  # (step, clock) of the last checkpoint
        self._clock = (time.monotonic(), 0.0)  # (session start, elapsed before this session)
        self._losses: list[float] = []
        found = find_checkpoint(self.run_dir / "checkpoints")
        if resume and found is None:
            raise OutputError(self.run_dir, "nothing to resume: no checkpoint in its checkpoints/ folder")
        if not resume and found is not None and self.ctx.is_main:
            raise OutputError(
                self.run_dir, "already holds a training run; pass --resume to continue it or another --out"
            )
        checkpoint = load_checkpoint(found) if resume else None
        self._setup(config, checkpoint)
        self.callbacks = CallbackList([])  # only rank 0 observes (and writes): the others stay silent
        if self.ctx.is_main:
            resume_step = checkpoint.state.step if checkpoint else None
            logs = default_callbacks(self.config, self.run_dir, progress=progress, resume_step=resume_step)
            self.callbacks = CallbackList(logs + list(callbacks))

    def _setup(self, config: Config, checkpoint: Checkpoint | None) -> None:
        self.data = build.build_data(config, with_validation=self.ctx.is_main)
        self.model = build.build_model(config, self.data.scale).to(self.ctx.device)
        self.use_cuda = self.ctx.device.type == "cuda"
        if self.use_cuda:
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick its fastest kernels once
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn, self.config = build.build_loss(config, self.data.dataset, self.data.scale)
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn = self.loss_fn.to(self.ctx.device)
        self.optimizer = build.build_optimizer(self.model, self.config)
        self.ddp: torch.nn.Module = self.model
        if checkpoint is not None:
            self._restore(checkpoint)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(
            "model: %s, %.2fM parameters, %s x%d",
            config.model,
            n_params / 1e6,
            self.ctx.device,
            self.ctx.world_size,
        )

    def _restore(self, checkpoint: Checkpoint) -> None:
        from decrappify.weights import load_into

        load_into(self.model, checkpoint.state_dict, what=str(checkpoint.path))
        try:
            self.optimizer.load_state_dict(checkpoint.optimizer)
        except (ValueError, KeyError) as error:
            raise TrainingError(
                f"{checkpoint.path}: optimizer state does not fit this config: {error}"
            ) from None
        self.state = checkpoint.state
        self._last_saved = (self.state.step, time.monotonic())
        where = f"stage {self.state.stage + 1}, epoch {self.state.epoch + 1}, step {self.state.step}"
        log.info("%s: %s", checkpoint.path, "finished already" if self.state.done else f"resuming at {where}")

    # ------------------------------------------------------------------------------------------------ fit

    def fit(self) -> TrainResult:
        """Train every remaining stage; checkpoint on the way; write `model.safetensors` at the end."""
        self._clock = (time.monotonic(), self.state.elapsed)
        self._losses = []
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_interrupted_writes(self.run_dir)
            atomic_write_text(self.run_dir / "config.json", self.config.to_json() + "\n")
        start = FitInfo(self.run_dir, len(self.config.stages), self.state.step, self.state.step > 0)
        self.callbacks.on_fit_start(start)
        try:
            with deferred_interrupts(self._interrupt):
                while self.state.stage < len(self.config.stages):
                    self._run_stage(self.state.stage)
                self.state.done = True
                return self._finish()
        finally:
            self.callbacks.on_fit_end()

    def _elapsed(self) -> float:
        return self._clock[1] + time.monotonic() - self._clock[0]

    def _enter_stage(self, index: int) -> tuple[EpochPlan, StageInfo]:
        """Set LRs, freezing, DDP and (for a fresh stage) its planned length; the stage's batches."""
        spec, state = self.config.stages[index], self.state
        plan = build.stage_plan(
            self.config, self.data.dataset, index, rank=self.ctx.rank, world_size=self.ctx.world_size
        )
        for group in self.optimizer.param_groups:
            group["peak_lr"] = (spec.lr or self.config.optim.lr) * group["lr_mult"]
        if spec.freeze_encoder and hasattr(self.model, "freeze_encoder"):
            self.model.freeze_encoder()
        elif hasattr(self.model, "unfreeze"):
            self.model.unfreeze()
        self._wrap_ddp()
        if state.stage_total == 0:  # a fresh stage, not a resumed one
            if self.budget.enabled:
                self.budget.start_stage(state, [s.epochs for s in self.config.stages[index:]])
            else:
                state.stage_total = build.planned_steps(self.config, index, plan.batches_per_epoch)
        else:
            self.budget.resume_stage(state, [s.epochs for s in self.config.stages[index:]])
        self.schedule = Schedule.from_config(self.config.optim, state.stage_total)
        total = 0 if state.stage_total == PROVISIONAL_STEPS else state.stage_total  # 0: not known yet
        info = StageInfo(
            index, spec.crop, spec.batch, self.ctx.world_size, total, state.stage_step, plan.batches_per_epoch
        )
        return plan, info

    def _wrap_ddp(self) -> None:
        """DDP is rebuilt per stage: which parameters take gradients (freezing) is fixed when it is built."""
        if not self.ctx.enabled:
            self.ddp = self.model
            return
        from torch.nn.parallel import DistributedDataParallel

        self.ddp = DistributedDataParallel(
            self.model, device_ids=[self.ctx.device] if self.use_cuda else None
        )

    def _batches(self, plan: EpochPlan, epoch: int, batch: int):
        data = self.config.data
        keys = plan.keys_from(epoch, batch)
        return iterate_batches(self.data.dataset, keys, workers=data.workers, prefetch=data.prefetch)

    def _run_stage(self, index: int) -> None:
        plan, info = self._enter_stage(index)
        state = self.state
        self.callbacks.on_stage_start(info)
        batches = self._batches(plan, state.epoch, state.batch)
        tuner = self._thread_tuner()
        try:
            while state.stage_step < state.stage_total:
                tuner.before_step()
                started = time.monotonic()
                loss, terms, lr, flags = self._train_step(*next(batches))
                seconds = time.monotonic() - started
                tuner.after_step(seconds)
                self._after_step(plan, loss, terms, lr, seconds)
                if flags["interrupt"]:
                    self._save_checkpoint()
                    log.warning(
                        "stopped at step %d; checkpoint in %s: continue with --resume",
                        state.step,
                        self.run_dir,
                    )
                    raise KeyboardInterrupt
                if flags["over_budget"]:
                    state.stage_total = state.stage_step
            if state.epoch_steps:  # the stage ended within an epoch
                self._end_epoch(plan)
        finally:
            if hasattr(batches, "close"):
                batches.close()
        self.callbacks.on_stage_end(info)
        state.stage, state.epoch, state.batch, state.stage_step, state.stage_total = index + 1, 0, 0, 0, 0
        state.stage_budget = 0.0
        self._save_checkpoint()

    def _thread_tuner(self) -> ThreadTuner:
        """`train.threads = 0` on a CPU: all this process's cores or 1, whichever trains faster (see threads.py)."""
        cores = distributed.default_threads(self.ctx)
        auto = self.config.train.threads == 0 and not self.use_cuda and cores > 1
        return ThreadTuner([cores, 1] if auto else [], every_seconds=300.0)

    def find_lr(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100) -> LRFindResult:
        """LR range test on stage 0's batches; writes `lr_find.csv`. The model is left diverged: do not fit after."""
        plan, _ = self._enter_stage(0)
        batches = self._batches(plan, 0, 0)

        def step(lr: float) -> float:
            return self._train_step(*next(batches), fixed_lr=lr)[0]

        try:
            result = lr_find(step, lr_sweep(start_lr, end_lr, num_steps))
        finally:
            if hasattr(batches, "close"):
                batches.close()
        if self.ctx.is_main:
            atomic_write_text(self.run_dir / "lr_find.csv", result.to_csv())
        return result

    # ------------------------------------------------------------------------------------------------ one step

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W (channels-last in memory, as `data.collate_pairs` makes it) -> float in [0, 1]."""
        batch = batch.to(self.ctx.device, non_blocking=True).float().div_(255.0)
        layout = torch.channels_last if self.config.train.channels_last else torch.contiguous_format
        return batch.contiguous(memory_format=layout)

    def _autocast(self):
        if self.use_cuda and self.config.train.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _set_lr(self, fixed_lr: float | None) -> float:
        if fixed_lr is None:
            return self.schedule.apply(self.optimizer, self.state.stage_step)
        for group in self.optimizer.param_groups:
            group["lr"] = fixed_lr * group["lr_mult"]
        return fixed_lr

    def _train_step(
        self,
        lq: torch.Tensor,
        hq: torch.Tensor,
        box_mask: torch.Tensor | None = None,
        fixed_lr: float | None = None,
    ) -> tuple[float, dict[str, float], float, dict[str, bool]]:
        """Forward, backward, clip, step; returns (mean loss over processes, loss terms, lr, agreed flags).

        `box_mask` (the dataset's, when `loss.watermark_weight` != 1) weights the pixels in watermark boxes.
        `fixed_lr` (the LR finder): that LR times each group's `lr_mult` instead of the schedule, and a
        non-finite loss skips the update and returns `inf` instead of stopping the run.
        """
        lq, hq = self._to_device(lq), self._to_device(hq)
        lr = self._set_lr(fixed_lr)
        with self._autocast():
            pred = self.ddp(lq)
        if box_mask is None:
            loss, terms = self.loss_fn(pred.float(), hq)
        else:
            extra = self.config.loss.watermark_weight - 1.0
            weight = 1.0 + extra * box_mask.to(self.ctx.device, non_blocking=True).float()
            loss, terms = self.loss_fn(pred.float(), hq, weight)
        if self.config.train.debug_nan_step == self.state.step + 1:
            loss = loss * float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        clip = self.config.optim.grad_clip
        norm = torch.nn.utils.get_total_norm(grads)
        if clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), clip, norm)
        flags = [self._interrupt.is_set(), self.budget.over(self.state, self._elapsed())]
        stats = torch.cat(
            [
                loss.detach().float().view(1),
                (~torch.isfinite(loss.detach() + norm)).float().view(1),
                torch.tensor(flags, dtype=torch.float32, device=loss.device),
            ]
        )
        values = distributed.all_reduce_sum(self.ctx, stats).tolist()
        if values[1] > 0:
            if fixed_lr is not None:
                return float("inf"), {}, lr, {}
            self._stop_non_finite(loss.item())
        self.optimizer.step()
        terms = {k: float(v.detach()) for k, v in terms.items()}
        return (
            values[0] / self.ctx.world_size,
            terms,
            lr,
            {"interrupt": values[2] > 0, "over_budget": values[3] > 0},
        )

    def _stop_non_finite(self, local_loss: float) -> None:
        where = f"step {self.state.step + 1} (stage {self.state.stage + 1}, epoch {self.state.epoch + 1})"
        kept = "no checkpoint was written yet"
        if self._last_saved:
            kept = (
                f"the last good checkpoint (step {self._last_saved[0]}) is in {self.run_dir / 'checkpoints'}"
            )
        peak = self.optimizer.param_groups[0]["peak_lr"]
        raise TrainingError(
            f"non-finite loss or gradient at {where} (loss {local_loss}); training stopped and {kept}. "
            f"Try a lower optim.lr (peak now {peak:.3g}) or optim.grad_clip, then --resume"
        )

    def _after_step(self, plan: EpochPlan, loss: float, terms: dict, lr: float, seconds: float) -> None:
        state = self.state
        state.step, state.stage_step, state.batch = state.step + 1, state.stage_step + 1, state.batch + 1
        state.epoch_steps, state.epoch_loss = state.epoch_steps + 1, state.epoch_loss + loss
        state.epoch_seconds += seconds
        state.elapsed = self._elapsed()
        self._losses.append(loss)
        record = StepRecord(
            stage=state.stage, epoch=state.epoch, step=state.step, stage_step=state.stage_step,
            stage_total=state.stage_total, lr=lr, loss=loss, crops=plan.batch * self.ctx.world_size,
            elapsed=state.elapsed, seconds=seconds, terms=terms,
        )  # fmt: skip
        self.callbacks.on_step(record)
        self._set_total(self.budget.after_step(state))
        if state.batch >= plan.batches_per_epoch:
            self._end_epoch(plan)
        elif self._checkpoint_due():
            self._save_checkpoint()

    def _set_total(self, total: int | None) -> None:
        """A new planned length for this stage (time-budget re-estimation)."""
        if total is not None:
            self.state.stage_total = self.schedule.total_steps = total
            self.callbacks.on_stage_total(total)

    # ------------------------------------------------------------------------------------------------ epochs

    def _end_epoch(self, plan: EpochPlan) -> None:
        state = self.state
        metrics, sample_path = self._validate()
        state.metrics = metrics
        record = EpochRecord(
            stage=state.stage, epoch=state.epoch, step=state.step, lr=self.optimizer.param_groups[0]["lr"],
            train_loss=state.epoch_loss / max(1, state.epoch_steps),
            crops_per_second=state.epoch_steps * plan.batch * self.ctx.world_size / max(state.epoch_seconds, 1e-9),
            elapsed=self._elapsed(), metrics=metrics, sample_path=sample_path,
        )  # fmt: skip
        self.callbacks.on_epoch_end(record)
        metric = self.selection.metric
        if (
            self.ctx.is_main
            and metric in metrics
            and self.selection.better(metrics[metric], state.best_score)
        ):
            state.best_score = metrics[metric]
            self._save_model(self.run_dir / "best.safetensors")
        if state.batch >= plan.batches_per_epoch:
            state.epoch, state.batch = state.epoch + 1, 0
        state.epoch_steps, state.epoch_loss, state.epoch_seconds = 0, 0.0, 0.0
        state.elapsed = self._elapsed()
        self._set_total(self.budget.after_epoch(state))
        self._save_checkpoint()

    def _validate(self) -> tuple[dict[str, float], Path | None]:
        """Rank 0: metrics on the validation pairs and this epoch's sample grid."""
        if not self.ctx.is_main or self.data.valset is None:
            return {}, None
        name = f"stage{self.state.stage + 1}_epoch{self.state.epoch + 1:03d}.png"
        train = self.config.train
        return validate_with_samples(
            self.model, self.data.valset, self.ctx.device, amp=train.amp, samples=train.samples,
            grid_path=self.run_dir / "samples" / name, colour=self.selection is COLOUR_SELECTION,
        )  # fmt: skip

    @property
    def selection(self) -> Selection:
        """What picks `best.safetensors`: PSNR_Y, or the a*b* error for colourisation."""
        return selection_for(self.config.data.preset)

    # ------------------------------------------------------------------------------------------------ files

    def _checkpoint_due(self) -> bool:
        train = self.config.train
        last_step, last_time = self._last_saved or (0, self._clock[0])
        if train.checkpoint_steps and self.state.step - last_step >= train.checkpoint_steps:
            return True
        return (
            bool(train.checkpoint_minutes) and time.monotonic() - last_time >= train.checkpoint_minutes * 60
        )

    def _info(self) -> dict:
        state, paths = self.state, list(self.config.data.paths)
        return build.model_info(
            self.config,
            command=self.command,
            seconds=state.elapsed,
            step=state.step,
            metrics=state.metrics,
            data=paths,
        )

    def _save_model(self, path: Path) -> Path:
        from decrappify.weights import save_model

        return save_model(self.model, path, self.config.model, self._info())

    def _save_checkpoint(self) -> None:
        """Rank 0 writes `checkpoints/last` (the others only note the step, for error messages)."""
        self.state.elapsed = self._elapsed()
        if self.ctx.is_main:
            save_checkpoint(
                self.run_dir / "checkpoints",
                model=self.model,
                model_config=self.config.model,
                info=self._info(),
                config=self.config.to_dict(),
                state=self.state,
                optimizer=self.optimizer.state_dict(),
            )
        self._last_saved = (self.state.step, time.monotonic())

    def _finish(self) -> TrainResult:
        model_path = best_path = None
        if self.ctx.is_main:
            model_path = self._save_model(self.run_dir / "model.safetensors")
            best = self.run_dir / "best.safetensors"
            best_path = best if best.is_file() else None
            score = self.state.best_score
            note = (
                f" (best validation {self.selection.describe(score)}: {best_path})"
                if best_path and score is not None
                else ""
            )
            log.info(
                "trained %d steps in %.0f s: %s%s", self.state.step, self.state.elapsed, model_path, note
            )
        self._save_checkpoint()
        return TrainResult(self.run_dir, model_path, best_path, self.state, self._losses)
