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
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from decrappify.config import Config
from decrappify.data import EpochPlan, iterate_batches
from decrappify.errors import OutputError, TrainingError
from decrappify.train import build, distributed
from decrappify.train.checkpoint import (
    TrainState,
    atomic_write_text,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from decrappify.train.events import (
    Callback,
    CallbackList,
    EpochRecord,
    FitInfo,
    ProgressBar,
    StageInfo,
    StepRecord,
)
from decrappify.train.logs import CsvLogger, TensorBoardLogger
from decrappify.train.schedule import LRFindResult, Schedule, lr_find, lr_sweep
from decrappify.train.validation import sample_grid, save_png, validate

log = logging.getLogger(__name__)

WARMUP_STEPS = 12  # time-budget mode: steps timed (after the first two) before the stage length is estimated
PROVISIONAL_STEPS = (
    10**6
)  # time-budget mode: the schedule's length until the estimate exists (LR ~ its start)


@dataclass
class TrainResult:
    """What a finished run produced (paths are None on ranks other than 0)."""

    run_dir: Path
    model_path: Path | None
    best_path: Path | None
    state: TrainState
    losses: list[float] = field(default_factory=list)  # per-step training loss of this session


@contextlib.contextmanager
def _deferred_interrupts(flag: threading.Event) -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into `flag` (checked between steps); a second one interrupts at once."""
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


class Trainer:
    """Trains `config` into `run_dir`; `fit()` runs (or resumes) all stages, `find_lr()` runs the LR range test."""

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
        self._interrupt = threading.Event()
        self._last_saved: tuple[int, float] | None = None  # (step, time) of the last checkpoint
        checkpoint = self._find_resume() if resume else None
        if checkpoint is None and resume:
            raise OutputError(self.run_dir, "nothing to resume: no checkpoint in its checkpoints/ folder")
        if checkpoint is None and self.ctx.is_main and find_checkpoint(self.run_dir / "checkpoints"):
            raise OutputError(
                self.run_dir, "already holds a training run; pass --resume to continue it or another --out"
            )
        self._setup(config, checkpoint)
        self.callbacks = CallbackList(self._default_callbacks(config, progress, checkpoint) + list(callbacks))

    # ------------------------------------------------------------------------------------------------ set-up

    def _find_resume(self):
        path = find_checkpoint(self.run_dir / "checkpoints")
        return None if path is None else load_checkpoint(path)

    def _setup(self, config: Config, checkpoint) -> None:
        self.data = build.build_data(config, with_validation=self.ctx.is_main)
        self.model = build.build_model(config, self.data.scale).to(self.ctx.device)
        self.use_cuda = self.ctx.device.type == "cuda"
        if self.use_cuda and config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn, self.config = build.build_loss(config, self.data.dataset, self.data.scale)
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn = self.loss_fn.to(self.ctx.device)
        self.optimizer = build.build_optimizer(self.model, self.config)
        if checkpoint is not None:
            self._restore(checkpoint)
        self.ddp: torch.nn.Module = self.model
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model: %s, %.2fM parameters, on %s x%d", self.config.model, n_params / 1e6, self.ctx.device,
                 self.ctx.world_size)  # fmt: skip

    def _restore(self, checkpoint) -> None:
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
        if self.state.done:
            log.info("%s: this run already finished (step %d); nothing left to train", checkpoint.path, self.state.step)
            return
        log.info("resuming %s at stage %d, epoch %d, step %d", checkpoint.path, self.state.stage + 1,
                 self.state.epoch + 1, self.state.step)  # fmt: skip

    def _default_callbacks(self, config: Config, progress: bool, checkpoint) -> list[Callback]:
        if not self.ctx.is_main:
            return []
        resume_step = None if checkpoint is None else checkpoint.state.step
        terms = [] if config.loss.kind != "feature" else ["pixel"] + [
            f"{kind}_{i}" for kind in ("feat", "gram") for i in range(len(config.loss.layer_ids))
        ]  # fmt: skip
        callbacks: list[Callback] = [CsvLogger(self.run_dir, log_every=config.train.log_every,
                                               resume_step=resume_step, terms=terms)]  # fmt: skip
        if progress:
            callbacks.append(ProgressBar(every=max(1, config.train.log_every // 5)))
        else:
            callbacks.append(_LogLines())
        if config.train.tensorboard:
            callbacks.append(TensorBoardLogger(self.run_dir))
        return callbacks

    # ------------------------------------------------------------------------------------------------ fit

    def fit(self) -> TrainResult:
        """Train every remaining stage; checkpoint on the way; write `model.safetensors` at the end."""
        self._session_start, self._elapsed_base = time.monotonic(), self.state.elapsed
        self._losses: list[float] = []
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.json", self.config.to_json() + "\n")
        self.callbacks.on_fit_start(FitInfo(self.run_dir, len(self.config.stages), self.state.step,
                                            self.state.step > 0))  # fmt: skip
        try:
            with _deferred_interrupts(self._interrupt):
                while self.state.stage < len(self.config.stages):
                    self._run_stage(self.state.stage)
                self.state.done = True
                return self._finish()
        finally:
            self.callbacks.on_fit_end()

    def _elapsed(self) -> float:
        return self._elapsed_base + time.monotonic() - self._session_start

    def _enter_stage(self, index: int) -> tuple[EpochPlan, StageInfo]:
        spec, state = self.config.stages[index], self.state
        plan = build.stage_plan(self.config, self.data.dataset, index, rank=self.ctx.rank,
                                world_size=self.ctx.world_size)  # fmt: skip
        peak = spec.lr or self.config.optim.lr
        for group in self.optimizer.param_groups:
            group["peak_lr"] = peak * group["lr_mult"]
        if spec.freeze_encoder and hasattr(self.model, "freeze_encoder"):
            self.model.freeze_encoder()
        elif hasattr(self.model, "unfreeze"):
            self.model.unfreeze()
        self._wrap_ddp()
        if state.stage_total == 0:  # a fresh stage (not a resumed one)
            state.stage_started = state.elapsed
            budget = self.config.train.time_budget_minutes * 60.0
            if budget > 0:
                weights = [s.epochs for s in self.config.stages[index:]]
                share = max(1.0, budget - state.elapsed) * weights[0] / sum(weights)
                state.stage_budget = float(distributed.broadcast_object(self.ctx, share))  # rank 0's clock
                state.stage_total = PROVISIONAL_STEPS
            else:
                state.stage_total = build.planned_steps(self.config, index, plan.batches_per_epoch)
        self.schedule = Schedule.from_config(self.config.optim, state.stage_total)
        info = StageInfo(index, spec.crop, spec.batch, self.ctx.world_size, state.stage_total, state.stage_step,
                         plan.batches_per_epoch)  # fmt: skip
        return plan, info

    def _wrap_ddp(self) -> None:
        """DDP is rebuilt per stage: which parameters take gradients (freezing) is fixed when it is built."""
        if not self.ctx.enabled:
            self.ddp = self.model
            return
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.ctx.device] if self.use_cuda else None
        self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)

    def _run_stage(self, index: int) -> None:
        plan, info = self._enter_stage(index)
        state, spec = self.state, self.config.stages[index]
        self.callbacks.on_stage_start(info)
        self._warmup_mark: tuple[int, float] | None = None
        batches = iterate_batches(self.data.dataset, plan.keys_from(state.epoch, state.batch),
                                  workers=self.config.data.workers, prefetch=self.config.data.prefetch)  # fmt: skip
        try:
            while state.stage_step < state.stage_total:
                started = time.monotonic()
                lq, hq = next(batches)
                loss, terms, lr, flags = self._train_step(lq, hq)
                self._after_step(plan, loss, terms, lr, spec.batch, time.monotonic() - started)
                if flags["interrupt"]:
                    self._save_checkpoint()
                    log.warning("stopped at step %d; checkpoint saved in %s: continue with --resume", state.step,
                                self.run_dir / "checkpoints")  # fmt: skip
                    raise KeyboardInterrupt
                if flags["over_budget"]:
                    state.stage_total = state.stage_step
            if state.epoch_steps:
                self._end_epoch(plan)
        finally:
            if hasattr(batches, "close"):
                batches.close()
        self.callbacks.on_stage_end(info)
        state.stage, state.epoch, state.batch, state.stage_step, state.stage_total = index + 1, 0, 0, 0, 0
        state.stage_budget = 0.0
        self._save_checkpoint()

    def find_lr(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100) -> LRFindResult:
        """LR range test on stage 0's batches; writes `lr_find.csv`. The model is left diverged: do not fit after."""
        plan, _ = self._enter_stage(0)
        batches = iterate_batches(self.data.dataset, plan.keys_from(0, 0), workers=self.config.data.workers,
                                  prefetch=self.config.data.prefetch)  # fmt: skip

        def step(lr: float) -> float:
            lq, hq = next(batches)
            return self._train_step(lq, hq, fixed_lr=lr)[0]

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
        batch = batch.to(self.ctx.device, non_blocking=True).float().div_(255.0)
        if self.use_cuda and self.config.train.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _autocast(self):
        if self.use_cuda and self.config.train.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train_step(
        self, lq: torch.Tensor, hq: torch.Tensor, fixed_lr: float | None = None
    ) -> tuple[float, dict[str, float], float, dict]:
        """Forward, backward, clip, step; returns (mean loss over processes, loss terms, lr, agreed flags).

        `fixed_lr` (the LR finder): that LR times each group's `lr_mult` instead of the schedule, and a
        non-finite loss skips the update and returns `inf` instead of stopping the run.
        """
        lq, hq = self._to_device(lq), self._to_device(hq)
        if fixed_lr is None:
            lr = self.schedule.apply(self.optimizer, self.state.stage_step)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = fixed_lr * group["lr_mult"]
            lr = fixed_lr
        with self._autocast():
            pred = self.ddp(lq)
        loss, terms = self.loss_fn(pred.float(), hq)
        if self.config.train.debug_nan_step == self.state.step + 1:
            loss = loss * float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else torch.nn.utils.get_total_norm(
            [p.grad for p in params]
        )  # fmt: skip
        bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(norm))
        stats = torch.stack([
            loss.detach().float(), bad.float(), torch.tensor(float(self._interrupt.is_set()), device=loss.device),
            torch.tensor(float(self._over_budget()), device=loss.device),
        ])  # fmt: skip
        values = distributed.all_reduce_sum(self.ctx, stats).tolist()
        if values[1] > 0:
            if fixed_lr is not None:
                return float("inf"), {}, lr, {}
            self._stop_non_finite(loss.item())
        self.optimizer.step()
        flags = {"interrupt": values[2] > 0, "over_budget": values[3] > 0}
        return values[0] / self.ctx.world_size, {k: float(v.detach()) for k, v in terms.items()}, lr, flags

    def _stop_non_finite(self, local_loss: float) -> None:
        where = f"step {self.state.step + 1} (stage {self.state.stage + 1}, epoch {self.state.epoch + 1})"
        kept = (f"the last good checkpoint (step {self._last_saved[0]}) is in {self.run_dir / 'checkpoints'}"
                if self._last_saved else "no checkpoint was written yet")  # fmt: skip
        raise TrainingError(
            f"non-finite loss or gradient at {where} (loss {local_loss}); training stopped and {kept}. "
            f"Try a lower optim.lr (peak now {self.optimizer.param_groups[0]['peak_lr']:.3g}) or optim.grad_clip, "
            "then --resume"
        )

    def _over_budget(self) -> bool:
        """Rank 0's verdict: the stage has used its share of the time budget."""
        state = self.state
        return bool(self.ctx.is_main and state.stage_budget > 0
                    and self._elapsed() - state.stage_started >= state.stage_budget)  # fmt: skip

    def _after_step(
        self, plan: EpochPlan, loss: float, terms: dict, lr: float, batch: int, seconds: float
    ) -> None:
        state = self.state
        state.step += 1
        state.stage_step += 1
        state.batch += 1
        state.epoch_steps += 1
        state.epoch_loss += loss
        state.epoch_seconds += seconds
        state.elapsed = self._elapsed()
        self._losses.append(loss)
        crops = batch * self.ctx.world_size
        self.callbacks.on_step(StepRecord(state.stage, state.epoch, state.step, state.stage_step, state.stage_total,
                                          lr, loss, crops, state.elapsed, seconds, terms))  # fmt: skip
        self._estimate_budget_steps()
        if state.batch >= plan.batches_per_epoch:
            self._end_epoch(plan)
        elif self._checkpoint_due():
            self._save_checkpoint()

    # ------------------------------------------------------------------------------------------------ budget

    def _estimate_budget_steps(self) -> None:
        """Time-budget mode: after the warm-up, set the stage's length so its cycle ends with its budget."""
        state = self.state
        if state.stage_budget <= 0 or state.stage_total != PROVISIONAL_STEPS:
            return
        if self._warmup_mark is None:
            if state.stage_step >= 2:  # the first steps (allocations, thread start-up) are slow: not timed
                self._warmup_mark = (state.stage_step, state.elapsed)
            return
        steps = state.stage_step - self._warmup_mark[0]
        if steps >= WARMUP_STEPS:
            self._set_budget_total((state.elapsed - self._warmup_mark[1]) / steps)

    def _reestimate_budget_steps(self) -> None:
        """At an epoch end: the measured rate includes validation and checkpoints, so the end lands on time."""
        state = self.state
        if state.stage_budget > 0 and state.stage_total != PROVISIONAL_STEPS and state.stage_step > 0:
            self._set_budget_total((state.elapsed - state.stage_started) / state.stage_step)

    def _set_budget_total(self, per_step: float) -> None:
        state = self.state
        left = state.stage_budget - (state.elapsed - state.stage_started)
        total = state.stage_step + max(1, int(left / max(per_step, 1e-6)))
        total = int(distributed.broadcast_object(self.ctx, total))
        if total != state.stage_total:
            log.debug(
                "time budget: stage %d planned at %d steps (%.3f s/step)", state.stage + 1, total, per_step
            )
            state.stage_total = total
            self.schedule.total_steps = total
            self.callbacks.on_stage_total(total)

    # ------------------------------------------------------------------------------------------------ epochs

    def _end_epoch(self, plan: EpochPlan) -> None:
        state = self.state
        metrics, sample_path = self._validate()
        state.metrics = metrics
        train_loss = state.epoch_loss / max(1, state.epoch_steps)
        crops_per_s = state.epoch_steps * plan.batch * self.ctx.world_size / max(state.epoch_seconds, 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        record = EpochRecord(state.stage, state.epoch, state.step, lr, train_loss, crops_per_s, self._elapsed(),
                             metrics, sample_path)  # fmt: skip
        self.callbacks.on_epoch_end(record)
        if self.ctx.is_main and metrics and metrics["psnr_y"] > state.best_psnr:
            state.best_psnr = metrics["psnr_y"]
            self._save_model(self.run_dir / "best.safetensors")
        if state.batch >= plan.batches_per_epoch:
            state.epoch, state.batch = state.epoch + 1, 0
        state.epoch_steps, state.epoch_loss, state.epoch_seconds = 0, 0.0, 0.0
        state.elapsed = self._elapsed()
        self._reestimate_budget_steps()
        self._save_checkpoint()

    def _validate(self) -> tuple[dict[str, float], Path | None]:
        valset = self.data.valset
        if not self.ctx.is_main or valset is None:
            return {}, None
        keep = min(self.config.train.samples, len(valset))
        result = validate(self.model, valset, self.ctx.device, amp=self.config.train.amp, keep=keep)
        path = None
        if result.outputs:
            name = f"stage{self.state.stage + 1}_epoch{self.state.epoch + 1:03d}.png"
            path = save_png(sample_grid(valset, result.outputs), self.run_dir / "samples" / name)
        return result.metrics, path

    # ------------------------------------------------------------------------------------------------ files

    def _checkpoint_due(self) -> bool:
        train = self.config.train
        last_step, last_time = self._last_saved or (0, self._session_start)
        if train.checkpoint_steps and self.state.step - last_step >= train.checkpoint_steps:
            return True
        return bool(
            train.checkpoint_minutes and time.monotonic() - last_time >= train.checkpoint_minutes * 60
        )

    def _info(self) -> dict:
        return build.model_info(self.config, command=self.command, seconds=self.state.elapsed, step=self.state.step,
                                metrics=self.state.metrics, data=list(self.config.data.paths))  # fmt: skip

    def _save_model(self, path: Path) -> Path:
        from decrappify.weights import save_model

        return save_model(self.model, path, self.config.model, self._info())

    def _save_checkpoint(self) -> None:
        """Rank 0 writes `checkpoints/last` (the others only note the step, for error messages)."""
        self.state.elapsed = self._elapsed()
        if self.ctx.is_main:
            save_checkpoint(self.run_dir / "checkpoints", model=self.model, model_config=self.config.model,
                            info=self._info(), config=self.config.to_dict(), state=self.state,
                            optimizer=self.optimizer.state_dict())  # fmt: skip
        self._last_saved = (self.state.step, time.monotonic())

    def _finish(self) -> TrainResult:
        model_path = best_path = None
        if self.ctx.is_main:
            model_path = self._save_model(self.run_dir / "model.safetensors")
            best = self.run_dir / "best.safetensors"
            best_path = best if best.is_file() else None
            log.info(
                "trained %d steps in %.0f s: %s%s",
                self.state.step,
                self.state.elapsed,
                model_path,
                f" (best validation PSNR_Y {self.state.best_psnr:.2f} dB: {best_path})" if best_path else "",
            )
        self._save_checkpoint()
        return TrainResult(self.run_dir, model_path, best_path, self.state, self._losses)


class _LogLines(Callback):
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
