"""The step loop NoGAN's critic pretraining and GAN phase share, with the Trainer's guarantees.

Batches are a pure function of the step (`data.EpochPlan`) and each step's torch seed too (dropout), so a stage
resumed from its checkpoint repeats exactly what the interrupted one would have done. A checkpoint holds several
models and optimizers at once (`name.*` keys), written atomically by `checkpoint.save_checkpoint`. Ctrl-C saves a
checkpoint at the step it lands in; a non-finite loss raises `TrainingError` and leaves the last one in place.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from decrappify.data.pairs import EpochPlan, iterate_batches
from decrappify.errors import ConfigError, TrainingError
from decrappify.train import distributed
from decrappify.train.checkpoint import (
    TrainState,
    find_checkpoint,
    load_checkpoint,
    remove_interrupted_writes,
    save_checkpoint,
)
from decrappify.train.config import Config
from decrappify.train.events import Callback, StageInfo, StepRecord
from decrappify.train.logs import CsvLog
from decrappify.train.threads import ThreadTuner

log = logging.getLogger(__name__)

#: `EpochPlan` stage numbers of the NoGAN loops: batch streams apart from those of `config.stages`.
PLAN_STAGES = {"critic": 101, "gan": 102}


def step_seed(seed: int, stage: str, step: int) -> int:
    """The torch seed of one step (dropout): a function of the position, so a resumed run repeats it exactly."""
    digest = hashlib.blake2b(f"{seed}/{stage}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class StageLoop:
    """One NoGAN stage's loop in `run_dir/stage`: batches, resume, checkpoints, logging, interrupts."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        stage: str,
        index: int,
        *,
        ctx: distributed.DistContext,
        callbacks: Callback,
        interrupt: threading.Event,
    ):
        self.config, self.gan, self.stage, self.index = config, config.gan, stage, index
        self.folder = Path(run_dir) / stage
        self.ctx, self.device, self.callbacks, self.interrupt = ctx, ctx.device, callbacks, interrupt
        self.saved_step = 0  # the last checkpoint's step (for error messages)
        self.losses: list[float] = []

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W -> float in [0, 1] on the device."""
        return batch.to(self.device, non_blocking=True).float().div_(255.0)

    def batches(self, dataset, step: int) -> Iterator:
        """Batches of `gan.batch` crops of `gan.crop` pixels from `step` on; `dataset.store` says which images
        are large enough."""
        gan = self.gan
        eligible = tuple(dataset.store.eligible(gan.crop))
        plan = EpochPlan(eligible, gan.crop, gan.batch, self.config.seed, PLAN_STAGES[self.stage],
                         self.config.data.crops_per_image)  # fmt: skip
        if plan.batches_per_epoch == 0:
            raise ConfigError(
                f"gan.crop={gan.crop}, gan.batch={gan.batch}: {len(eligible)} training images that large "
                "cannot fill one batch"
            )
        epoch, batch = divmod(step, plan.batches_per_epoch)
        return iterate_batches(dataset, plan.keys_from(epoch, batch), workers=0, prefetch=False)

    def resume(self, models: dict[str, nn.Module], optimizers: dict) -> tuple[TrainState, dict]:
        """The stage's position and extra state from its checkpoint (weights and optimizers loaded), or a start."""
        from decrappify.weights import load_into

        remove_interrupted_writes(self.folder)
        path = find_checkpoint(self.folder / "checkpoints")
        if path is None:
            return TrainState(), {}
        checkpoint = load_checkpoint(path)
        load_into(nn.ModuleDict(models), checkpoint.state_dict, what=str(path))
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(checkpoint.optimizer[name])
        self.saved_step = checkpoint.state.step
        log.info("%s: resuming at step %d", path, checkpoint.state.step)
        return checkpoint.state, checkpoint.info

    def save(self, models: dict, optimizers: dict, state: TrainState, info: dict) -> None:
        """`STAGE/checkpoints/last`: the stage's models and optimizers together, atomically."""
        save_checkpoint(self.folder / "checkpoints", model=nn.ModuleDict(models),
                        model_config={"nogan": self.stage}, info=info, config=self.config.to_dict(), state=state,
                        optimizer={name: opt.state_dict() for name, opt in optimizers.items()})  # fmt: skip
        self.saved_step = state.step

    def check_finite(self, loss: torch.Tensor, state: TrainState) -> torch.Tensor:
        """`loss`, or `TrainingError` (the stage stops; its last checkpoint stays) when it is not finite.

        `train.debug_nan_step` (a test hook) poisons that step of each NoGAN loop."""
        if self.config.train.debug_nan_step == state.step + 1:
            loss = loss * float("nan")
        if not torch.isfinite(loss.detach()):
            kept = f"its last checkpoint (step {self.saved_step})" if self.saved_step else "no checkpoint yet"
            raise TrainingError(
                f"non-finite {self.stage} loss at NoGAN {self.stage} step {state.step + 1}; the stage stopped with "
                f"{kept} in {self.folder}. Lower the learning rate (gan.lr, gan.critic_lr), then --resume"
            )
        return loss

    def run(
        self, state: TrainState, total: int, batches: Iterator, step_fn: Callable[..., dict],
        save_fn: Callable[[], None], columns: Sequence[str],
    ) -> None:  # fmt: skip
        """Steps `state.step` .. `total`: seeded, one row each in `STAGE/steps.csv`, a checkpoint every
        `gan.checkpoint_steps` and at the end; Ctrl-C saves one at once and stops."""
        steps_log = CsvLog(self.folder / "steps.csv", ("step", *columns), keep_until_step=state.step or None)
        info = StageInfo(self.index, self.gan.crop, self.gan.batch, 1, total, state.step, 0)
        self.callbacks.on_stage_start(info)
        tuner = self.thread_tuner()
        try:
            while state.step < total:
                started = time.monotonic()
                tuner.before_step()
                batch = next(batches)
                torch.manual_seed(step_seed(self.config.seed, self.stage, state.step))
                row = step_fn(batch)
                seconds = time.monotonic() - started
                tuner.after_step(seconds)
                self._record(state, total, row, seconds, steps_log)
                if self.interrupt.is_set():
                    save_fn()
                    log.warning("stopped at %s step %d, checkpoint saved: continue with --resume", self.stage,
                                state.step)  # fmt: skip
                    raise KeyboardInterrupt
                if state.step % self.gan.checkpoint_steps == 0 or state.step == total:
                    save_fn()
        finally:
            steps_log.close()
            self.callbacks.on_stage_end(info)

    def _record(self, state: TrainState, total: int, row: dict, seconds: float, steps_log: CsvLog) -> None:
        state.step, state.stage_step, state.stage_total = state.step + 1, state.step + 1, total
        state.elapsed += seconds
        steps_log.write({"step": state.step, **row})
        self.losses.append(row["loss"])
        terms = {k: v for k, v in row.items() if isinstance(v, float) and k not in ("lr", "loss")}
        record = StepRecord(stage=self.index, epoch=0, step=state.step, stage_step=state.step, stage_total=total,
                            lr=row["lr"], loss=row["loss"], crops=self.gan.batch, elapsed=state.elapsed,
                            seconds=seconds, terms=terms)  # fmt: skip
        self.callbacks.on_step(record)

    def thread_tuner(self) -> ThreadTuner:
        """`train.threads = 0` on a CPU: all cores or 1, whichever steps faster, as the Trainer does."""
        cores = distributed.default_threads(self.ctx)
        auto = self.config.train.threads == 0 and self.device.type == "cpu" and cores > 1
        return ThreadTuner([cores, 1] if auto else [], every_seconds=300.0)
