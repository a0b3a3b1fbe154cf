"""A NoGAN stage with a step loop (critic pretraining, the GAN phase): what sets it apart from a supervised stage.

Its batches are `gan.batch` crops of `gan.crop` pixels on a batch stream of its own (`PLAN_STAGES`), its
checkpoint holds several models and optimizers at once (`name.*` keys), it checkpoints every
`gan.checkpoint_steps` steps and at its end, and every step is a row of `STAGE/steps.csv`. Resume, seeding, the
interrupt and non-finite stops, thread tuning and the step events are the shared `loop.StepLoop`'s.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from torch import nn

from decrappify.data.pairs import EpochPlan
from decrappify.errors import ConfigError
from decrappify.train import distributed
from decrappify.train.checkpoint import TrainState
from decrappify.train.config import Config
from decrappify.train.events import Callback, CallbackList, StageInfo
from decrappify.train.logs import StepTable
from decrappify.train.loop import StepFn, StepLoop, StepResult, StopMessages, batch_stream

log = logging.getLogger(__name__)

#: `EpochPlan` stage numbers of the NoGAN loops: batch streams apart from those of `config.stages`.
PLAN_STAGES = {"critic": 101, "gan": 102}
ADVICE = "Lower the learning rate (gan.lr, gan.critic_lr)"


class NoGANStage:
    """NoGAN stage `stage` (`index` of the four) in `run_dir/stage`, training `models` with `optimizers`."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        stage: str,
        index: int,
        *,
        models: dict[str, nn.Module],
        optimizers: dict,
        columns: Sequence[str],
        ctx: distributed.DistContext,
        callbacks: Callback,
        interrupt: threading.Event,
    ):
        self.config, self.gan, self.stage, self.index = config, config.gan, stage, index
        self.models, self.optimizers = models, optimizers
        self.folder = Path(run_dir) / stage
        self.table = StepTable(self.folder / "steps.csv", columns)
        messages = StopMessages(f"{stage} loss", lambda: ADVICE, label=f"NoGAN {stage}")
        self.loop = StepLoop(config, self.folder, ctx=ctx, callbacks=CallbackList([self.table, callbacks]),
                             interrupt=interrupt, messages=messages)  # fmt: skip

    @property
    def losses(self) -> list[float]:
        """This session's step losses."""
        return self.loop.losses

    def resume(self) -> tuple[TrainState, dict]:
        """The stage's position and extra state from its checkpoint (weights and optimizers loaded), or a start."""
        checkpoint = self.loop.latest_checkpoint()
        if checkpoint is None:
            return TrainState(), {}
        state = self.loop.restore(checkpoint, nn.ModuleDict(self.models), self.optimizers)
        log.info("%s: resuming at step %d", checkpoint.path, state.step)
        return state, checkpoint.info

    def save(self, state: TrainState, info: dict) -> None:
        """`STAGE/checkpoints/last`: the stage's models and optimizers together, atomically."""
        optimizers = {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}
        self.loop.save(state, model=nn.ModuleDict(self.models), model_config={"nogan": self.stage}, info=info,
                       optimizer=optimizers)  # fmt: skip

    @contextlib.contextmanager
    def _batches(self, dataset, step: int) -> Iterator[Iterator]:
        """Batches from `step` on; `dataset.store` says which images are large enough for `gan.crop`."""
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
        with batch_stream(dataset, plan, epoch, batch) as batches:
            yield batches

    def run(self, state: TrainState, total: int, dataset, step: StepFn, save: Callable[[], None]) -> None:
        """Steps `state.step` .. `total` on `dataset`'s crops: a checkpoint (`save`) every `gan.checkpoint_steps`
        and at the end; Ctrl-C saves one at once and stops."""
        state.stage_step, state.stage_total = state.step, total  # the stage's steps are all its steps
        info = StageInfo(self.index, self.gan.crop, self.gan.batch, 1, total, state.step, 0)

        def after_step(result: StepResult, seconds: float) -> None:
            if state.step % self.gan.checkpoint_steps == 0 or state.step == total:
                save()

        self.loop.begin(state)
        try:
            with self._batches(dataset, state.step) as batches, self.loop.stage(info):
                self.loop.run_steps(
                    state, info, batches, step, stream=self.stage, save=save, after_step=after_step
                )
        finally:
            self.table.close()
