"""NoGAN (fastai lesson 7, DeOldify): GAN fine-tuning with a pretrained generator *and* a pretrained critic.

A GAN trained from scratch spends most of its time (and its stability) teaching two random networks the basics.
Pretraining both first leaves the adversarial phase only the last step, making textures believable, which takes
minutes instead of days. One run, four stages, each in its own folder of the run and each resumable:

1. `generator/`: the generator pretrained with the feature loss: the ordinary `Trainer` on `config.stages`
   (skipped when `gan.generator` names a model file to start from).
2. `generated/`: the generator's output for every training image (degraded once, seeded), as PNG files.
3. `critic/`: the critic pretrained on real vs generated crops (BCE); its accuracy on the held-out images is
   reported and stored.
4. `gan/`: the GAN phase. Generator loss = content loss + `gan.adversarial_weight` x adversarial loss. fastai's
   adaptive switcher decides who trains each batch: the critic until its loss falls below `gan.critic_threshold`
   (0.65), then the generator for one batch. Adam with beta1 = 0 for both. Every `gan.checkpoint_steps`
   iterations: a checkpoint, a generator snapshot in `gan/snapshots/` and a validation row in `gan/log.csv`;
   the snapshot nearest the truth on the held-out images becomes the run's `best.safetensors`
   (`gan_snapshots.py`). The last generator becomes the run's `model.safetensors`.

`nogan.json` holds the config and each finished stage's results; a crashed or interrupted run continues, with
`--resume`, at the stage and step where it stopped (with the same batches: every random choice is a function of
the position). A non-finite loss stops the stage with its last checkpoint intact. Stages 3 and 4 run on the
step loop the supervised trainer runs on (`gan_stage.py`, `loop.py`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from decrappify.data.pairs import ImageStore
from decrappify.errors import ConfigError, OutputError
from decrappify.io.atomic import atomic_write_text
from decrappify.nn.critic import create_critic
from decrappify.train import build, distributed
from decrappify.train.checkpoint import TrainState, find_checkpoint
from decrappify.train.config import Config, config_from_dict
from decrappify.train.events import Callback, CallbackList, ProgressBar
from decrappify.train.gan_generated import RealFakeDataset, generate_outputs, generated_name
from decrappify.train.gan_snapshots import BEST_FILE, SnapshotLog, pick_best
from decrappify.train.gan_stage import NoGANStage
from decrappify.train.gan_steps import AdaptiveSwitcher, critic_step, critic_update, generator_step, heldout_accuracy
from decrappify.train.interrupts import deferred_interrupts
from decrappify.train.loop import StepCheck, StepResult, thread_tuner, to_device, training_precision
from decrappify.train.losses import AdversarialLoss, GANGeneratorLoss
from decrappify.train.schedule import Schedule
from decrappify.train.trainer import Trainer, TrainResult
from decrappify.weights import load_into, load_model, load_state_dict_file, save_model

__all__ = ["STATE_FILE", "AdaptiveSwitcher", "NoGAN", "stored_config"]

log = logging.getLogger(__name__)

STATE_FILE = "nogan.json"
STAGES = ("generator", "generate", "critic", "gan")
FORMAT_VERSION = 1
CRITIC_COLUMNS = ("lr", "loss", "accuracy")  # a row of critic/steps.csv
GAN_COLUMNS = ("mode", "lr", "loss", "content", "adversarial", "accuracy")  # a row of gan/steps.csv


# --------------------------------------------------------------------------------------------------- the run


def stored_config(run_dir: str | Path) -> dict | None:
    """The config a NoGAN run was started with (from its `nogan.json`), or None if `run_dir` holds none."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError) as error:
        raise OutputError(path, f"cannot read the NoGAN run state: {error}") from None


class NoGAN:
    """Runs (or resumes) the four NoGAN stages of `config` in `run_dir`; see the module docstring."""

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
        if self.ctx.world_size > 1:
            raise ConfigError("gan.enabled: NoGAN training runs in one process; start it without torchrun")
        self.config, self.gan = config, config.gan
        self.run_dir, self.command, self.progress = Path(run_dir), command, progress
        self.model_name = build.model_name(config, self.run_dir)
        self.device = self.ctx.device
        self.extra_callbacks = list(callbacks)
        self.callbacks = CallbackList(self._progress_callbacks() + self.extra_callbacks)
        self._interrupt = threading.Event()
        self._data: build.DataBundle | None = None
        self.losses: list[float] = []  # the step losses of stages 3 and 4 in this session
        self.summary = self._open_state(resume)

    def _open_state(self, resume: bool) -> dict:
        path = self.run_dir / STATE_FILE
        if resume and not path.is_file():
            raise OutputError(self.run_dir, f"nothing to resume: no {STATE_FILE} (not a NoGAN run)")
        if not resume and (path.is_file() or find_checkpoint(self.run_dir / "checkpoints")):
            raise OutputError(
                self.run_dir, "already holds a training run; pass --resume to continue it or another --out"
            )
        if resume:
            summary = json.loads(path.read_text(encoding="utf-8"))
            summary["config"] = self.config.to_dict()  # overrides given with --resume apply from here on
            return summary
        self.run_dir.mkdir(parents=True, exist_ok=True)
        summary = {"format": FORMAT_VERSION, "config": self.config.to_dict(), "stages": {}}
        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
        return summary

    def _finish_stage(self, stage: str, **results) -> None:
        self.summary["stages"][stage] = results
        atomic_write_text(self.run_dir / STATE_FILE, json.dumps(self.summary, indent=2) + "\n")
        log.info("NoGAN stage %d/4 (%s) done: %s", STAGES.index(stage) + 1, stage, results)

    def _progress_callbacks(self) -> list[Callback]:
        return [ProgressBar(every=max(1, self.config.train.log_every // 5))] if self.progress else []

    def _stage(self, stage: str, models: dict, optimizers: dict, columns: Sequence[str]) -> NoGANStage:
        return NoGANStage(self.config, self.run_dir, stage, STAGES.index(stage), models=models,
                          optimizers=optimizers, columns=columns, ctx=self.ctx, callbacks=self.callbacks,
                          interrupt=self._interrupt)  # fmt: skip

    @property
    def data(self) -> build.DataBundle:
        if self._data is None:
            self._data = build.build_data(self.config)
        return self._data

    def fit(self) -> TrainResult:
        """Run every stage not finished yet; returns the final generator's file as `model_path`."""
        with deferred_interrupts(self._interrupt):
            try:
                generator = self._stage_generator()
                self._stage_generate(generator)
                self._stage_critic(generator)
                return self._stage_gan(generator)
            finally:
                self.callbacks.on_fit_end()

    # ------------------------------------------------------------------------------------ 1 and 2: generator

    def _stage_generator(self) -> Path:
        """Stage 1: the pretrained generator's file (trained here with `config.stages`, or `gan.generator`)."""
        done = self.summary["stages"].get("generator")
        if done:
            return self.run_dir / done["model"]
        if self.gan.generator:
            path = Path(self.gan.generator).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"gan.generator: {path} is not a model file")
            self._finish_stage("generator", model=str(path), trained=False)
            return path
        folder = self.run_dir / "generator"
        resume = find_checkpoint(folder / "checkpoints") is not None
        named = dataclasses.replace(self.config, name=f"{self.config.name}-generator")  # apart in evaluate
        trainer = Trainer(
            named,
            folder,
            ctx=self.ctx,
            resume=resume,
            progress=self.progress,
            callbacks=self.extra_callbacks,
            command=self.command,
        )
        result = trainer.fit()
        self._finish_stage(
            "generator",
            model="generator/model.safetensors",
            trained=True,
            steps=result.state.step,
            metrics=result.state.metrics,
        )
        return self.run_dir / "generator" / "model.safetensors"

    def _load_generator(self, path: Path) -> tuple[nn.Module, dict]:
        model, model_config, _ = load_model(path, self.device)
        if getattr(model, "scale", self.data.scale) != self.data.scale:
            preset = self.config.data.preset
            raise ConfigError(
                f"{path}: the generator upscales x{model.scale}, preset {preset!r} x{self.data.scale}"
            )
        return model, model_config

    def _stage_generate(self, generator_path: Path) -> None:
        """Stage 2: the generator's output for every training image, kept as PNG files (resumes file by file)."""
        if "generate" in self.summary["stages"]:
            return
        generator, _ = self._load_generator(generator_path)
        dataset = self.data.dataset
        paths = generate_outputs(
            generator,
            dataset.store,
            dataset.pipeline,
            self.run_dir / "generated",
            seed=self.config.seed,
            device=self.device,
            stop=self._interrupt.is_set,
            tuner=thread_tuner(self.config, self.ctx),
        )
        self._finish_stage("generate", folder="generated", count=len(paths))

    def generated_store(self) -> ImageStore:
        """Stage 2's pictures, in the order of the training images."""
        count = self.summary["stages"]["generate"]["count"]
        paths = [self.run_dir / "generated" / generated_name(i) for i in range(count)]
        return ImageStore(paths, cache=self.config.data.cache)

    # ------------------------------------------------------------------------------------ 3: critic

    def _stage_critic(self, generator_path: Path) -> None:
        """Stage 3: the critic learns real vs generated crops (BCE, one-cycle AdamW); held-out accuracy stored."""
        if "critic" in self.summary["stages"]:
            return
        gan = self.gan
        torch.manual_seed(self.config.seed)
        critic = create_critic(gan.critic).to(self.device)
        optimizer = torch.optim.AdamW(
            critic.parameters(), lr=gan.critic_lr, betas=(0.9, 0.99), weight_decay=0.0
        )
        optimizer.param_groups[0]["peak_lr"] = gan.critic_lr
        stage = self._stage("critic", {"critic": critic}, {"critic": optimizer}, CRITIC_COLUMNS)
        state, _ = stage.resume()
        schedule, adversarial = Schedule("onecycle", gan.critic_steps), AdversarialLoss(gan.real_label)
        accuracies: list[float] = []
        dataset = RealFakeDataset(self.data.dataset.store, self.generated_store(), self.config.data.augment)
        log.info("NoGAN stage 3/4: critic %s, %d steps", gan.critic, gan.critic_steps)

        def step(batch: tuple[torch.Tensor, torch.Tensor], check: StepCheck) -> StepResult:
            fake, real = (to_device(t, self.device) for t in batch)
            lr = schedule.apply(optimizer, state.step)
            with stage.loop.autocast():
                real_logits, fake_logits = critic(real), critic(fake)
            loss, terms = critic_update(adversarial, optimizer, real_logits, fake_logits, check.require_finite)
            accuracies.append(terms["accuracy"])
            return StepResult(loss, lr, terms)

        stage.run(state, gan.critic_steps, dataset, step, lambda: stage.save(state, {}))
        self.losses.extend(stage.losses)
        generator, _ = self._load_generator(generator_path)
        accuracy = heldout_accuracy(critic, generator, self.data.valset, gan.crop, self.device)
        info = {"name": f"{self.config.name}-critic", "critic": gan.critic, "heldout_accuracy": accuracy}
        save_model(critic, stage.folder / "critic.safetensors", gan.critic, info)
        recent = accuracies[-20:]  # empty when the loop had finished before a resume
        self._finish_stage("critic", model="critic/critic.safetensors", steps=state.step, heldout_accuracy=accuracy,
                           train_accuracy=float(np.mean(recent)) if recent else None)  # fmt: skip

    # ------------------------------------------------------------------------------------ 4: GAN

    def _stage_gan(self, generator_path: Path) -> TrainResult:
        """Stage 4: critic and generator take turns as the switcher says; snapshots to pick the best point."""
        if "gan" in self.summary["stages"]:
            log.info("%s: this NoGAN run finished already", self.run_dir)
            best = self.summary["stages"]["gan"].get("best")
            best_path = self.run_dir / best["model"] if best else None
            return TrainResult(self.run_dir, self.run_dir / "model.safetensors", best_path, TrainState(done=True))
        gan = self.gan
        generator, model_config = self._load_generator(generator_path)
        critic = self._load_critic()
        content, _ = build.build_loss(self._content_config(), self.data.dataset, self.data.scale)
        loss_fn = GANGeneratorLoss(content, gan.adversarial_weight, AdversarialLoss(gan.real_label))
        loss_fn = loss_fn.to(self.device)
        models = {"generator": generator, "critic": critic}
        optimizers = {
            name: torch.optim.Adam(m.parameters(), lr=gan.lr, betas=gan.betas) for name, m in models.items()
        }
        stage = self._stage("gan", models, optimizers, GAN_COLUMNS)
        state, info = stage.resume()
        switcher = AdaptiveSwitcher(gan.critic_threshold, generator_mode=info.get("generator_mode", False))
        counts = dict(info.get("counts", {"generator": 0, "critic": 0}))

        def step(batch: tuple[torch.Tensor, torch.Tensor], check: StepCheck) -> StepResult:
            lq, hq = (to_device(t, self.device) for t in batch)
            side = "generator" if switcher.generator_mode else "critic"
            if side == "generator":
                loss, terms = generator_step(generator, critic, loss_fn, optimizers[side], lq, hq,
                                             check.require_finite, stage.loop.autocast)  # fmt: skip
            else:
                loss, terms = critic_step(generator, critic, loss_fn.adversarial, optimizers[side], lq, hq,
                                          check.require_finite, stage.loop.autocast)  # fmt: skip
            counts[side] += 1
            switcher.update(loss)
            return StepResult(loss, gan.lr, terms, {"mode": side})

        snapshots = SnapshotLog(stage.folder, self.data.valset, self.device, samples=self.config.train.samples,
                                vgg_weights=self.config.loss.vgg_weights, resume_step=state.step,
                                precision=stage.loop.precision)  # fmt: skip
        if state.step == 0:
            snapshots.score_start(generator)

        def save() -> None:
            """A checkpoint, then the generator snapshot it makes (a candidate for `best.safetensors`)."""
            stage.save(state, {"generator_mode": switcher.generator_mode, "counts": counts})
            metrics = snapshots.validate(generator, state.step)
            snapshots.save(generator, model_config, self._model_info(state, counts, metrics), state.step, counts)

        log.info("NoGAN stage 4/4: %d iterations, adversarial weight %g", gan.steps, gan.adversarial_weight)
        try:
            stage.run(state, gan.steps, self.data.dataset, step, save)
        finally:
            snapshots.close()
        self.losses.extend(stage.losses)
        return self._finish_gan(generator, model_config, state, counts, snapshots.metrics)

    def _load_critic(self) -> nn.Module:
        """Stage 3's critic."""
        critic = create_critic(self.gan.critic).to(self.device)
        path = self.run_dir / self.summary["stages"]["critic"]["model"]
        load_into(critic, load_state_dict_file(path), what=str(path))
        return critic

    def _content_config(self) -> Config:
        """The config stage 1 resolved (its calibrated feature-loss weights), or this run's when it was skipped."""
        path = self.run_dir / "generator" / "config.json"
        if path.is_file():
            return config_from_dict(json.loads(path.read_text(encoding="utf-8")))
        return self.config

    def _model_info(self, state: TrainState, counts: dict[str, int], metrics: dict[str, float]) -> dict:
        info = build.model_info(
            self.config,
            name=self.model_name,
            command=self.command,
            seconds=state.elapsed,
            step=state.step,
            metrics=metrics,
            data=list(self.config.data.paths),
            precision=training_precision(self.config, self.device)[0],
        )
        critic = self.summary["stages"].get("critic", {})
        info["gan"] = {
            "iterations": state.step,
            "generator_steps": counts["generator"],
            "critic_steps": counts["critic"],
            "adversarial_weight": self.gan.adversarial_weight,
            "critic": self.gan.critic,
            "critic_heldout_accuracy": critic.get("heldout_accuracy"),
        }
        return info

    def _finish_gan(
        self, generator: nn.Module, model_config: dict, state: TrainState, counts: dict, metrics: dict[str, float]
    ) -> TrainResult:
        """The last generator as `model.safetensors`, the best snapshot as `best.safetensors`, the stage's row."""
        path = save_model(
            generator, self.run_dir / "model.safetensors", model_config, self._model_info(state, counts, metrics)
        )
        state.metrics, state.done = dict(metrics), True
        best = pick_best(self.run_dir)
        self._finish_stage(
            "gan",
            model="model.safetensors",
            steps=state.step,
            generator_steps=counts["generator"],
            critic_steps=counts["critic"],
            metrics=metrics,
            best=best,
        )
        log.info("NoGAN: %s (snapshots to compare in %s)", path, self.run_dir / "gan" / "log.csv")
        best_path = self.run_dir / BEST_FILE if best else None
        return TrainResult(self.run_dir, path, best_path, state, self.losses)
