"""Training: `train(config)` runs a recipe (stages, checkpoints, validation); `find_lr(config)` the LR range test.

Both work the same in one process and under `torchrun` (DDP): they join the process group themselves when
torchrun's environment is present, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from decrappify.allocator import keep_freed_memory
from decrappify.errors import OutputError
from decrappify.train import distributed
from decrappify.train.checkpoint import TrainState, find_checkpoint, load_checkpoint
from decrappify.train.config import Config, apply_overrides, config_from_dict
from decrappify.train.events import Callback, EpochRecord, StepRecord
from decrappify.train.gan import NoGAN, stored_config
from decrappify.train.schedule import LRFindResult, Schedule
from decrappify.train.trainer import Trainer, TrainResult

__all__ = [
    "Callback",
    "EpochRecord",
    "LRFindResult",
    "Schedule",
    "StepRecord",
    "TrainResult",
    "TrainState",
    "Trainer",
    "default_run_dir",
    "find_lr",
    "resume_config",
    "train",
]


@contextlib.contextmanager
def _cpu_settings(config: Config, ctx: distributed.DistContext) -> Iterator[None]:
    """`train.threads` (default: the cores shared out among this machine's processes) while training, restored
    afterwards since the setting is global to the process; and malloc tuned to keep freed activations
    (`decrappify.allocator`: every step allocates and frees them)."""
    keep_freed_memory()
    previous = torch.get_num_threads()
    torch.set_num_threads(config.train.threads or distributed.default_threads(ctx))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_run_dir(config: Config) -> Path:
    """`runs/<config name>` under the current folder."""
    return Path("runs") / config.name


def resume_config(run_dir: str | Path, overrides: Iterable[str] = ()) -> Config:
    """The config a run was started with (from its last checkpoint), with `key=value` overrides applied."""
    stored = stored_config(run_dir)  # a NoGAN run keeps its config in nogan.json
    if stored is not None:
        return apply_overrides(config_from_dict(stored), overrides)
    path = find_checkpoint(Path(run_dir) / "checkpoints")
    if path is None:
        raise OutputError(Path(run_dir), "nothing to resume: no checkpoint in its checkpoints/ folder")
    return apply_overrides(config_from_dict(load_checkpoint(path).config), overrides)


def train(
    config: Config,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    command: str = "",
) -> TrainResult:
    """Train (or with `resume`, continue) `config` into `run_dir` (default `runs/<name>`).

    With `gan.enabled` the run is the NoGAN pipeline (`train/gan.py`): generator, generated images, critic, GAN.
    """
    ctx = distributed.setup(config.train.device)
    try:
        with _cpu_settings(config, ctx):
            if config.gan.enabled:
                run = NoGAN(config, run_dir or default_run_dir(config), ctx=ctx, resume=resume,
                            progress=progress and ctx.is_main, callbacks=callbacks, command=command)  # fmt: skip
                return run.fit()
            trainer = Trainer(
                config,
                run_dir or default_run_dir(config),
                ctx=ctx,
                resume=resume,
                progress=progress and ctx.is_main,
                callbacks=callbacks,
                command=command,
            )
            result = trainer.fit()
            # Ranks leave together: a rank that tears down its process group while rank 0 still works in it (writing
            # the final files) can abort the process ("terminate called without an active exception").
            distributed.barrier(ctx)
            return result
    finally:
        distributed.teardown(ctx)


def find_lr(
    config: Config,
    *,
    run_dir: str | Path | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    progress: bool = False,
) -> LRFindResult:
    """The LR range test on the config's first stage; writes `RUN/lr_find.csv` and `RUN/lr_find.png`."""
    ctx = distributed.setup(config.train.device)
    try:
        with _cpu_settings(config, ctx):
            trainer = Trainer(config, run_dir or default_run_dir(config), ctx=ctx, progress=False)
            return trainer.find_lr(start_lr, end_lr, num_steps, progress=progress)
    finally:
        distributed.teardown(ctx)
