"""The supervised trainer: stages of one-cycle training, validation every epoch, the best epoch kept.

One `Trainer` per run. Its position (stage, epoch, batch, step) is the only state that matters between steps:
batches are a pure function of that position (`data.EpochPlan`), the LR a pure function of the step
(`schedule.Schedule`), so a run restored from a checkpoint continues with the same batches and LRs as if it had
never stopped. What every training loop needs (resume, seeding, the per-step agreement between DDP processes,
the interrupt and non-finite stops, thread tuning, step events) is `loop.StepLoop`'s; this module says what a
supervised step computes, what an epoch validates and what a checkpoint and the final files hold.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from decrappify.data.pairs import EpochPlan
from decrappify.errors import OutputError
from decrappify.io.atomic import atomic_write_text
from decrappify.train import build, distributed
from decrappify.train.budget import PROVISIONAL_STEPS, TimeBudget
from decrappify.train.checkpoint import Checkpoint, TrainState, find_checkpoint, load_checkpoint
from decrappify.train.config import Config
from decrappify.train.events import Callback, CallbackList, EpochRecord, FitInfo, StageInfo
from decrappify.train.interrupts import deferred_interrupts
from decrappify.train.logs import default_callbacks
from decrappify.train.loop import StepCheck, StepLoop, StepResult, StopMessages, batch_stream, to_device
from decrappify.train.lr_plot import plot_lr_find
from decrappify.train.schedule import LRFindResult, Schedule, lr_find, lr_sweep
from decrappify.train.validation import COLOUR_SELECTION, Selection, selection_for, validate_with_samples
from decrappify.weights import save_model

log = logging.getLogger(__name__)

#: The seed stream of the supervised steps (`loop.step_seed`), apart from the NoGAN stages' streams.
SEED_STREAM = "train"


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
        self.model_name = build.model_name(config, self.run_dir)  # before any work: a reserved name stops here
        self.budget = TimeBudget(config.train.time_budget_minutes, self.ctx)
        checkpoint = self._open_run(resume)
        self._setup(config)
        self.callbacks = CallbackList([])  # only rank 0 observes (and writes): the others stay silent
        if self.ctx.is_main:
            resume_step = checkpoint.state.step if checkpoint else None
            logs = default_callbacks(self.config, self.run_dir, progress=progress, resume_step=resume_step)
            self.callbacks = CallbackList(logs + list(callbacks))
        messages = StopMessages("loss or gradient", self._advice, context=self._where)
        self.loop = StepLoop(self.config, self.run_dir, ctx=self.ctx, callbacks=self.callbacks,
                             interrupt=threading.Event(), messages=messages)  # fmt: skip
        self.state = TrainState() if checkpoint is None else self._restore(checkpoint)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model: %s, %.2fM parameters, %s x%d", config.model, n_params / 1e6, self.ctx.device,
                 self.ctx.world_size)  # fmt: skip

    def _open_run(self, resume: bool) -> Checkpoint | None:
        """The checkpoint to resume from, or None for a fresh run; `OutputError` when the folder says otherwise."""
        found = find_checkpoint(self.run_dir / "checkpoints")
        if resume and found is None:
            raise OutputError(self.run_dir, "nothing to resume: no checkpoint in its checkpoints/ folder")
        if not resume and found is not None and self.ctx.is_main:
            raise OutputError(
                self.run_dir, "already holds a training run; pass --resume to continue it or another --out"
            )
        return load_checkpoint(found) if resume else None

    def _setup(self, config: Config) -> None:
        self.data = build.build_data(config, with_validation=self.ctx.is_main)
        self.model = build.build_model(config, self.data.scale).to(self.ctx.device)
        self.use_cuda = self.ctx.device.type == "cuda"
        if self.use_cuda:
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick its fastest kernels once
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn, self.config = build.build_loss(config, self.data.dataset, self.data.scale, self.model)
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn = self.loss_fn.to(self.ctx.device)
        self.optimizer = build.build_optimizer(self.model, self.config)
        self.ddp: torch.nn.Module = self.model

    def _restore(self, checkpoint: Checkpoint) -> TrainState:
        state = self.loop.restore(checkpoint, self.model, self.optimizer)
        where = f"stage {state.stage + 1}, epoch {state.epoch + 1}, step {state.step}"
        log.info("%s: %s", checkpoint.path, "finished already" if state.done else f"resuming at {where}")
        return state

    def _where(self) -> str:
        """Where a failed step was, for its error message."""
        return f" (stage {self.state.stage + 1}, epoch {self.state.epoch + 1})"

    def _advice(self) -> str:
        peak = self.optimizer.param_groups[0]["peak_lr"]
        return f"Try a lower optim.lr (peak now {peak:.3g}) or optim.grad_clip"

    # ------------------------------------------------------------------------------------------------ fit

    def fit(self) -> TrainResult:
        """Train every remaining stage; checkpoint on the way; write `model.safetensors` at the end."""
        self.loop.begin(self.state)
        if self.ctx.is_main:
            atomic_write_text(self.run_dir / "config.json", self.config.to_json() + "\n")
        start = FitInfo(self.run_dir, len(self.config.stages), self.state.step, self.state.step > 0)
        self.callbacks.on_fit_start(start)
        try:
            with deferred_interrupts(self.loop.interrupt):
                while self.state.stage < len(self.config.stages):
                    self._run_stage(self.state.stage)
                self.state.done = True
                return self._finish()
        finally:
            self.callbacks.on_fit_end()

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
        return batch_stream(self.data.dataset, plan, epoch, batch, workers=data.workers, prefetch=data.prefetch)

    def _run_stage(self, index: int) -> None:
        plan, info = self._enter_stage(index)
        state = self.state
        with self.loop.stage(info), self._batches(plan, state.epoch, state.batch) as batches:
            self.loop.run_steps(
                state, info, batches, self._step, stream=SEED_STREAM, save=self._save_checkpoint,
                after_step=partial(self._after_step, plan), out_of_time=self._out_of_time,
            )  # fmt: skip
            if state.epoch_steps:  # the stage ended within an epoch
                self._end_epoch(plan)
        state.stage, state.epoch, state.batch, state.stage_step, state.stage_total = index + 1, 0, 0, 0, 0
        state.stage_budget = 0.0
        self._save_checkpoint()

    def find_lr(
        self, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100, *, progress: bool = False
    ) -> LRFindResult:
        """LR range test on stage 0's batches; writes `lr_find.csv` and `lr_find.png`, with a progress bar when
        `progress`. The model is left diverged: do not fit after."""
        plan, _ = self._enter_stage(0)
        bar = tqdm(total=num_steps, desc="lr finder", unit="step", file=sys.stderr,
                   disable=True if not (progress and self.ctx.is_main) else None)  # fmt: skip
        with bar, self._batches(plan, 0, 0) as batches:

            def step(lr: float) -> float:
                check = self.loop.check(self.state)
                loss = self._train_step(*next(batches), check=check, fixed_lr=lr).loss
                bar.update(1)
                bar.set_postfix(lr=f"{lr:.1e}", loss=f"{loss:.4f}", refresh=False)
                return loss

            result = lr_find(step, lr_sweep(start_lr, end_lr, num_steps))
        if self.ctx.is_main:
            atomic_write_text(self.run_dir / "lr_find.csv", result.to_csv())
            plot_lr_find(result, self.run_dir / "lr_find.png")
        return result

    # ------------------------------------------------------------------------------------------------ one step

    def _step(self, batch: tuple[torch.Tensor, ...], check: StepCheck) -> StepResult:
        return self._train_step(*batch, check=check)

    def _out_of_time(self) -> bool:
        """Rank 0's verdict: this stage has used its share of the time budget."""
        return self.budget.over(self.state, self.loop.elapsed())

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
        *,
        check: StepCheck,
        fixed_lr: float | None = None,
    ) -> StepResult:
        """Forward, backward, clip, (all processes agree: `check`) step; the mean loss over processes.

        `box_mask` (the dataset's, when `loss.watermark_weight` != 1) weights the pixels in watermark boxes.
        `fixed_lr` (the LR finder): that LR times each group's `lr_mult` instead of the schedule, and a
        non-finite loss skips the update and returns an `inf` loss instead of stopping the run.
        """
        layout = torch.channels_last if self.config.train.channels_last else torch.contiguous_format
        lq, hq = (to_device(t, self.ctx.device, layout) for t in (lq, hq))
        lr = self._set_lr(fixed_lr)
        weight = None
        if box_mask is not None:
            extra = self.config.loss.watermark_weight - 1.0
            weight = 1.0 + extra * box_mask.to(self.ctx.device, non_blocking=True).float()
        # The loss runs inside autocast too, so the feature loss's VGG computes in bf16; each loss does its own
        # arithmetic (differences, gram matrices, means) in fp32.
        with self.loop.autocast():
            pred = self.ddp(lq)
            loss, terms = self.loss_fn(pred.float(), hq) if weight is None else self.loss_fn(pred.float(), hq, weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        clip = self.config.optim.grad_clip
        norm = torch.nn.utils.get_total_norm(grads)
        if clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), clip, norm)
        if fixed_lr is None:
            mean_loss = check.require_finite(loss, norm)
        elif (mean_loss := check.agree(loss, norm)) is None:
            return StepResult(float("inf"), lr)
        self.optimizer.step()
        return StepResult(mean_loss, lr, {k: float(v.detach()) for k, v in terms.items()})

    def _after_step(self, plan: EpochPlan, result: StepResult, seconds: float) -> None:
        """The epoch's tallies, the time budget's estimate, then an epoch end or a due checkpoint."""
        state = self.state
        state.batch, state.epoch_steps = state.batch + 1, state.epoch_steps + 1
        state.epoch_loss, state.epoch_seconds = state.epoch_loss + result.loss, state.epoch_seconds + seconds
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
            elapsed=self.loop.elapsed(), metrics=metrics, sample_path=sample_path,
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
        state.elapsed = self.loop.elapsed()
        self._set_total(self.budget.after_epoch(state))
        self._save_checkpoint()

    def _validate(self) -> tuple[dict[str, float], Path | None]:
        """Rank 0: metrics on the validation pairs and this epoch's sample grid."""
        if not self.ctx.is_main or self.data.valset is None:
            return {}, None
        name = f"stage{self.state.stage + 1}_epoch{self.state.epoch + 1:03d}.png"
        train = self.config.train
        return validate_with_samples(
            self.model, self.data.valset, self.ctx.device, precision=self.loop.precision, samples=train.samples,
            grid_path=self.run_dir / "samples" / name, colour=self.selection is COLOUR_SELECTION,
        )  # fmt: skip

    @property
    def selection(self) -> Selection:
        """What picks `best.safetensors`: PSNR_Y, the a*b* error for colourisation, IoU for a text mask."""
        return selection_for(self.config.data.task or self.config.data.preset)

    # ------------------------------------------------------------------------------------------------ files

    def _checkpoint_due(self) -> bool:
        train = self.config.train
        steps, seconds = self.loop.since_checkpoint(self.state.step)
        if train.checkpoint_steps and steps >= train.checkpoint_steps:
            return True
        return bool(train.checkpoint_minutes) and seconds >= train.checkpoint_minutes * 60

    def _info(self) -> dict:
        state, paths = self.state, list(self.config.data.paths)
        return build.model_info(
            self.config,
            name=self.model_name,
            command=self.command,
            seconds=state.elapsed,
            step=state.step,
            metrics=state.metrics,
            data=paths,
            precision=self.loop.precision,
        )

    def _save_model(self, path: Path) -> Path:
        return save_model(self.model, path, self.config.model, self._info())

    def _save_checkpoint(self) -> None:
        """`checkpoints/last`: the model, its optimizer and the position (rank 0 writes it)."""
        self.state.elapsed = self.loop.elapsed()
        self.loop.save(self.state, model=self.model, model_config=self.config.model, info=self._info(),
                       optimizer=self.optimizer.state_dict())  # fmt: skip

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
        return TrainResult(self.run_dir, model_path, best_path, self.state, self.loop.losses)
