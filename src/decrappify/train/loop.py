"""The step loop that the supervised `Trainer` and the NoGAN stages share.

A caller says what one step computes, what happens after it (epoch ends, validation, the checkpoint cadence) and
what a checkpoint holds; `StepLoop` does the rest, the same way for both:

- resume: a run or stage folder's `checkpoints/last` is read back into its models and optimizers, and the
  temporaries a killed run left behind are cleared when the loop begins (rank 0, which alone writes);
- exactness: batches are a pure function of the position (`data.EpochPlan`, read from `batch_stream`), and so is
  each step's torch seed (`step_seed`), so a resumed run repeats what the interrupted one would have done;
- agreement: one small all-reduce per step (`StepCheck`) carries the loss, a non-finite flag, the interrupt flag
  and rank 0's time verdict, so all DDP processes stop together, at the same step, for the same reason;
- a non-finite loss (or gradient) raises `TrainingError` before the optimizer step and leaves the last
  checkpoint as it was; Ctrl-C or SIGTERM (`interrupts.deferred_interrupts`) lets the step finish, saves a
  checkpoint at it and raises `KeyboardInterrupt` (the CLI exits 130);
- the CPU thread count (`threads.ThreadTuner`), device moves, the elapsed-time clock and the step events that the
  logs and the progress bar listen to (`events.StepRecord`);
- the number format (`training_precision`): steps run their networks under `StepLoop.autocast()`, which is bf16
  autocast when `train.precision` resolves to bf16; losses, optimiser state and master weights stay fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from decrappify.data.pairs import EpochPlan, iterate_batches
from decrappify.errors import TrainingError
from decrappify.inference.precision import autocast, describe_precision, resolve_precision
from decrappify.train import distributed
from decrappify.train.checkpoint import (
    Checkpoint,
    TrainState,
    find_checkpoint,
    load_checkpoint,
    remove_interrupted_writes,
    save_checkpoint,
)
from decrappify.train.config import Config
from decrappify.train.events import Callback, StageInfo, StepRecord
from decrappify.train.threads import ThreadTuner
from decrappify.weights import load_into

log = logging.getLogger(__name__)


def step_seed(seed: int, stream: str, step: int) -> int:
    """The torch seed of one step (dropout): a function of the position, so a resumed run repeats it exactly."""
    digest = hashlib.blake2b(f"{seed}/{stream}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def training_precision(config: Config, device: torch.device) -> tuple[str, str]:
    """The precision the networks train in ("fp32" or "bf16") and a line saying why, from `train.precision`.

    "auto" follows `decrappify.inference.precision` on the CPU (bf16 where it runs natively) and keeps CUDA's
    own switch, `train.amp`.
    """
    wanted = config.train.precision
    if wanted == "auto" and device.type == "cuda":
        resolved = "bf16" if config.train.amp else "fp32"
        return resolved, f"{resolved} (auto: train.amp on CUDA)"
    return resolve_precision(wanted, device), describe_precision(wanted, device)


def to_device(
    batch: torch.Tensor, device: torch.device, memory_format: torch.memory_format = torch.preserve_format
) -> torch.Tensor:
    """uint8 N x C x H x W (channels-last in memory, as `data.collate_pairs` makes it) -> float in [0, 1] on
    `device`, in `memory_format` (the default keeps the batch's own)."""
    return batch.to(device, non_blocking=True).float().div_(255.0).to(memory_format=memory_format)


def thread_tuner(config: Config, ctx: distributed.DistContext) -> ThreadTuner:
    """`train.threads = 0` on a CPU with more than one core for this process: time both all those cores and one
    thread on real steps and keep the faster (see threads.py). Otherwise a tuner that changes nothing."""
    cores = distributed.default_threads(ctx)
    auto = config.train.threads == 0 and ctx.device.type == "cpu" and cores > 1
    return ThreadTuner([cores, 1] if auto else [], every_seconds=300.0)


@contextlib.contextmanager
def batch_stream(
    dataset: Any, plan: EpochPlan, epoch: int, batch: int, *, workers: int = 0, prefetch: bool = False
) -> Iterator[Iterator]:
    """The batches of `plan` from (`epoch`, `batch`) on, endlessly; a prefetching thread is stopped on exit."""
    batches = iterate_batches(dataset, plan.keys_from(epoch, batch), workers=workers, prefetch=prefetch)
    try:
        yield batches
    finally:
        if hasattr(batches, "close"):
            batches.close()


@dataclass(frozen=True)
class StepResult:
    """What one step reports: the loss agreed on by all processes (`StepCheck`), its LR and what the logs show."""

    loss: float
    lr: float
    terms: dict[str, float] = field(default_factory=dict)  # loss parts and other per-step numbers
    notes: dict[str, str] = field(default_factory=dict)  # per-step text (which NoGAN side trained)


def _never() -> bool:
    return False


def _nothing() -> str:
    return ""


@dataclass(frozen=True)
class StopMessages:
    """How a loop names things when it stops: "non-finite {quantity} at {label} step N{context()} ... {advice()},
    then --resume", and "stopped at {label} step N"."""

    quantity: str  # what went non-finite: "loss or gradient", "critic loss"
    advice: Callable[[], str]  # what to change before resuming (read when it is needed: LRs change per stage)
    label: str = ""  # what the steps are called: "" for the supervised trainer, "NoGAN critic"
    context: Callable[[], str] = _nothing  # more about where the failed step was, e.g. " (stage 1, epoch 2)"

    def position(self, step: int) -> str:
        return f"{self.label} step {step}" if self.label else f"step {step}"


class StepCheck:
    """One step's agreement between processes, asked for once per step, after the backward pass and before the
    optimizer step: a single all-reduce carries the loss, a non-finite flag, the interrupt flag and rank 0's
    "out of time" verdict, so every process takes the same decision at the same step.

    `train.debug_nan_step` (a test hook) poisons the loss of that global step here.
    """

    def __init__(self, loop: StepLoop, state: TrainState, out_of_time: Callable[[], bool] = _never):
        self._loop, self._state, self._out_of_time_now = loop, state, out_of_time
        self._agreed = (False, False)  # (interrupted, out of time) as every process saw them
        self._local_loss = float("nan")

    def agree(self, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> float | None:
        """The loss averaged over processes, or None when it (or `grad_norm`) is not finite on any of them."""
        loop = self._loop
        if loop.config.train.debug_nan_step == self._state.step + 1:
            loss = loss * float("nan")
        loss = loss.detach().float()
        watched = loss if grad_norm is None else loss + grad_norm
        flags = [loop.interrupt.is_set(), self._out_of_time_now()]
        stats = torch.cat(
            [
                loss.view(1),
                (~torch.isfinite(watched)).float().view(1),
                torch.tensor(flags, dtype=torch.float32, device=loss.device),
            ]
        )
        values = distributed.all_reduce_sum(loop.ctx, stats).tolist()
        self._agreed = (values[2] > 0, values[3] > 0)
        if values[1] > 0:
            self._local_loss = float(loss)
            return None
        return values[0] / loop.ctx.world_size

    def require_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> float:
        """`agree`, or `TrainingError` (the run stops; its last checkpoint stays) when the loss is not finite."""
        mean = self.agree(loss, grad_norm)
        if mean is None:
            self._loop.stop_non_finite(self._state, self._local_loss)
        return mean

    @property
    def interrupted(self) -> bool:
        """Stop after this step. Processes must agree, so DDP stops at the first step whose all-reduce saw the
        signal; one process agrees with itself, so it also stops for a signal that came later in the step."""
        return self._agreed[0] if self._loop.ctx.enabled else self._loop.interrupt.is_set()

    @property
    def out_of_time(self) -> bool:
        """Rank 0's time verdict, as every process received it: end the stage after this step."""
        return self._agreed[1]


StepFn = Callable[[Any, StepCheck], StepResult]


class StepLoop:
    """Runs the steps of one run (`Trainer`) or one NoGAN stage in `folder`; see the module docstring.

    Only rank 0 writes files and calls `callbacks`: the trainer hands the other ranks an empty list.
    """

    def __init__(
        self,
        config: Config,
        folder: str | Path,
        *,
        ctx: distributed.DistContext,
        callbacks: Callback,
        interrupt: threading.Event,
        messages: StopMessages,
    ):
        self.config, self.folder, self.ctx = config, Path(folder), ctx
        self.callbacks, self.interrupt, self.messages = callbacks, interrupt, messages
        self.precision, self.precision_note = training_precision(config, ctx.device)
        self.losses: list[float] = []  # every step's loss in this session
        self._saved: tuple[int, float] | None = None  # (step, clock) of the last checkpoint written or read
        self._clock = (time.monotonic(), 0.0)  # (session start, elapsed before this session)

    # ---------------------------------------------------------------------------------------- resume

    def latest_checkpoint(self) -> Checkpoint | None:
        """`folder/checkpoints/last` read back (or the previous one, if a save was cut short), or None."""
        path = find_checkpoint(self.folder / "checkpoints")
        return None if path is None else load_checkpoint(path)

    def restore(
        self, checkpoint: Checkpoint, model: nn.Module, optimizers: torch.optim.Optimizer | Mapping[str, Any]
    ) -> TrainState:
        """Load `checkpoint` into `model` and the optimizer (or the optimizers by name); its position."""
        load_into(model, checkpoint.state_dict, what=str(checkpoint.path))
        try:
            if isinstance(optimizers, torch.optim.Optimizer):
                optimizers.load_state_dict(checkpoint.optimizer)
            else:
                for name, optimizer in optimizers.items():
                    optimizer.load_state_dict(checkpoint.optimizer[name])
        except (ValueError, KeyError) as error:
            raise TrainingError(
                f"{checkpoint.path}: optimizer state does not fit this config: {error}"
            ) from None
        self._saved = (checkpoint.state.step, time.monotonic())
        return checkpoint.state

    def begin(self, state: TrainState) -> None:
        """Start the session at `state`: its clock goes on from `state.elapsed`; rank 0 creates the folder and
        clears what a killed run left half-written (nothing else writes there while this loop owns it)."""
        self._clock = (time.monotonic(), state.elapsed)
        if self.ctx.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_interrupted_writes(self.folder)
            log.info("%s: training in %s", self.folder, self.precision_note)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context a step runs its networks' forward passes in (bf16 autocast, or nothing for fp32)."""
        return autocast(self.precision, self.ctx.device)

    def elapsed(self) -> float:
        """Seconds of training over all sessions (validation and checkpoints included: they cost time too)."""
        return self._clock[1] + time.monotonic() - self._clock[0]

    # ---------------------------------------------------------------------------------------- checkpoints

    def save(
        self, state: TrainState, *, model: nn.Module, model_config: dict, info: dict, optimizer: dict
    ) -> None:
        """Rank 0 writes `folder/checkpoints/last` atomically; every rank notes the step (for error messages)."""
        if self.ctx.is_main:
            save_checkpoint(self.folder / "checkpoints", model=model, model_config=model_config, info=info,
                            config=self.config.to_dict(), state=state, optimizer=optimizer)  # fmt: skip
        self._saved = (state.step, time.monotonic())

    def since_checkpoint(self, step: int) -> tuple[int, float]:
        """Steps and seconds since the last checkpoint was written or read (or since the session began)."""
        saved_step, saved_at = self._saved or (0, self._clock[0])
        return step - saved_step, time.monotonic() - saved_at

    # ---------------------------------------------------------------------------------------- steps

    @contextlib.contextmanager
    def stage(self, info: StageInfo) -> Iterator[None]:
        """The stage events around a block: `on_stage_end` only when the stage finished (`on_fit_end` is the
        callbacks' place to close files on an error)."""
        self.callbacks.on_stage_start(info)
        yield
        self.callbacks.on_stage_end(info)

    def check(self, state: TrainState, out_of_time: Callable[[], bool] = _never) -> StepCheck:
        """A fresh agreement for the step after `state` (for a step run outside `run_steps`: the LR finder)."""
        return StepCheck(self, state, out_of_time)

    def run_steps(
        self,
        state: TrainState,
        stage: StageInfo,
        batches: Iterator,
        step: StepFn,
        *,
        stream: str,
        save: Callable[[], None],
        after_step: Callable[[StepResult, float], None] | None = None,
        out_of_time: Callable[[], bool] = _never,
    ) -> None:
        """Steps until `state.stage_step` reaches `state.stage_total` (which `after_step` may move).

        Each step: its batch, its seed (from `stream` and the step), `step(batch, check)`, the position and a
        `StepRecord` for the callbacks, then `after_step(result, seconds)`. An interrupt saves a checkpoint at
        that step (`save`, unless one was just written there) and raises `KeyboardInterrupt`; an agreed
        `out_of_time` verdict makes this step the stage's last.
        """
        tuner = thread_tuner(self.config, self.ctx)
        while state.stage_step < state.stage_total:
            tuner.before_step()
            started = time.monotonic()
            batch = next(batches)
            torch.manual_seed(step_seed(self.config.seed, stream, state.step))
            check = StepCheck(self, state, out_of_time)
            result = step(batch, check)
            seconds = time.monotonic() - started
            tuner.after_step(seconds)
            self._record(state, stage, result, seconds)
            if after_step is not None:
                after_step(result, seconds)
            if check.interrupted:
                self._stop_interrupted(state, save)
            if check.out_of_time:
                state.stage_total = state.stage_step

    def _record(self, state: TrainState, stage: StageInfo, result: StepResult, seconds: float) -> None:
        state.step, state.stage_step = state.step + 1, state.stage_step + 1
        state.elapsed = self.elapsed()
        self.losses.append(result.loss)
        record = StepRecord(
            stage=stage.index, epoch=state.epoch, step=state.step, stage_step=state.stage_step,
            stage_total=state.stage_total, lr=result.lr, loss=result.loss, crops=stage.batch * stage.world_size,
            elapsed=state.elapsed, seconds=seconds, terms=result.terms, notes=result.notes,
        )  # fmt: skip
        self.callbacks.on_step(record)

    # ---------------------------------------------------------------------------------------- stops

    def _stop_interrupted(self, state: TrainState, save: Callable[[], None]) -> NoReturn:
        if self._saved is None or self._saved[0] != state.step:
            save()
        log.warning(
            "stopped at %s; checkpoint in %s: continue with --resume",
            self.messages.position(state.step),
            self.folder,
        )
        raise KeyboardInterrupt

    def stop_non_finite(self, state: TrainState, local_loss: float) -> NoReturn:
        """`TrainingError` for the step after `state`: where it was, which checkpoint is left, what to try."""
        messages = self.messages
        where = messages.position(state.step + 1) + messages.context()
        kept = "no checkpoint was written yet"
        if self._saved is not None:
            kept = f"the last good checkpoint (step {self._saved[0]}) is in {self.folder / 'checkpoints'}"
        raise TrainingError(
            f"non-finite {messages.quantity} at {where} (loss {local_loss}); training stopped and {kept}. "
            f"{messages.advice()}, then --resume"
        )
