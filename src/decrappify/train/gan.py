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
   iterations: a checkpoint, a generator snapshot in `gan/snapshots/` and a validation row in `gan/log.csv`.
   GAN training improves, then degrades: the snapshot at the turn (DeOldify's "inflection point") is the one
   to keep. Each row scores the held-out images' VGG distance too (`perceptual.py`; row 0 is the pretrained
   generator), and the snapshot with the lowest becomes the run's `best.safetensors`: the turn, picked on
   images no stage trains on. The last generator becomes the run's `model.safetensors`.

`nogan.json` holds the config and each finished stage's results; a crashed or interrupted run continues, with
`--resume`, at the stage and step where it stopped (with the same batches: every random choice is a function of
the position). A non-finite loss stops the stage with its last checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from decrappify.data.pairs import ImageStore
from decrappify.errors import ConfigError, OutputError, WeightsError
from decrappify.evaluation.perceptual import PerceptualDistance
from decrappify.io.atomic import atomic_write_bytes, atomic_write_text
from decrappify.train import build, distributed
from decrappify.train.checkpoint import TrainState, find_checkpoint
from decrappify.train.config import Config, config_from_dict
from decrappify.train.events import Callback, CallbackList, ProgressBar
from decrappify.train.gan_loop import StageLoop
from decrappify.train.gan_parts import (
    AdaptiveSwitcher,
    RealFakeDataset,
    critic_step,
    generate_outputs,
    generated_name,
    generator_step,
    heldout_accuracy,
)
from decrappify.train.interrupts import deferred_interrupts
from decrappify.train.logs import CsvLog, read_csv_rows
from decrappify.train.schedule import Schedule
from decrappify.train.trainer import Trainer, TrainResult
from decrappify.train.validation import validate, validate_with_samples

__all__ = ["STATE_FILE", "AdaptiveSwitcher", "NoGAN", "stored_config"]

log = logging.getLogger(__name__)

STATE_FILE = "nogan.json"
STAGES = ("generator", "generate", "critic", "gan")
FORMAT_VERSION = 1
GAN_LOG_COLUMNS = (
    "step",
    "generator_steps",
    "critic_steps",
    "val_psnr_y",
    "val_ssim_y",
    "val_l1",
    "val_vgg_dist",
    "snapshot",
)


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
        self.device = self.ctx.device
        self.extra_callbacks = list(callbacks)
        self.callbacks = CallbackList(self._progress_callbacks() + self.extra_callbacks)
        self._interrupt = threading.Event()
        self._data: build.DataBundle | None = None
        self.losses: list[float] = []
        self._metrics: dict[str, float] = {}  # the last validation of the GAN stage
        self._perceptual: PerceptualDistance | None = None  # scores the GAN snapshots (stage 4)
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

    def _loop(self, stage: str) -> StageLoop:
        loop = StageLoop(self.config, self.run_dir, stage, STAGES.index(stage), ctx=self.ctx,
                         callbacks=self.callbacks, interrupt=self._interrupt)  # fmt: skip
        loop.losses = self.losses  # one list over the stages: the run's losses
        return loop

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
        from decrappify.weights import load_model

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
            tuner=self._loop("generate").thread_tuner(),
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
        from decrappify.nn.critic import create_critic
        from decrappify.train.losses import AdversarialLoss, critic_accuracy
        from decrappify.weights import save_model

        if "critic" in self.summary["stages"]:
            return
        gan, loop = self.gan, self._loop("critic")
        torch.manual_seed(self.config.seed)
        critic = create_critic(gan.critic).to(self.device)
        optimizer = torch.optim.AdamW(
            critic.parameters(), lr=gan.critic_lr, betas=(0.9, 0.99), weight_decay=0.0
        )
        optimizer.param_groups[0]["peak_lr"] = gan.critic_lr
        state, _ = loop.resume({"critic": critic}, {"critic": optimizer})
        schedule, adversarial = Schedule("onecycle", gan.critic_steps), AdversarialLoss(gan.real_label)
        accuracies: list[float] = []
        dataset = RealFakeDataset(self.data.dataset.store, self.generated_store(), self.config.data.augment)
        log.info("NoGAN stage 3/4: critic %s, %d steps", gan.critic, gan.critic_steps)

        def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
            fake, real = (loop.to_device(t) for t in batch)
            lr = schedule.apply(optimizer, state.step)
            real_logits, fake_logits = critic(real), critic(fake)
            loss = loop.check_finite(adversarial.critic_loss(real_logits, fake_logits), state)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            accuracies.append(critic_accuracy(real_logits, fake_logits))
            return {"lr": lr, "loss": float(loss.detach()), "accuracy": accuracies[-1]}

        def save() -> None:
            loop.save({"critic": critic}, {"critic": optimizer}, state, {})

        batches = loop.batches(dataset, state.step)
        loop.run(state, gan.critic_steps, batches, step, save, ("lr", "loss", "accuracy"))
        generator, _ = self._load_generator(generator_path)
        accuracy = heldout_accuracy(critic, generator, self.data.valset, gan.crop, self.device)
        info = {"name": f"{self.config.name}-critic", "critic": gan.critic, "heldout_accuracy": accuracy}
        save_model(critic, loop.folder / "critic.safetensors", gan.critic, info)
        recent = accuracies[-20:]  # empty when the loop had finished before a resume
        self._finish_stage("critic", model="critic/critic.safetensors", steps=state.step, heldout_accuracy=accuracy,
                           train_accuracy=float(np.mean(recent)) if recent else None)  # fmt: skip

    # ------------------------------------------------------------------------------------ 4: GAN

    def _stage_gan(self, generator_path: Path) -> TrainResult:
        """Stage 4: critic and generator take turns as the switcher says; snapshots to pick the best point."""
        from decrappify.train.losses import AdversarialLoss, GANGeneratorLoss

        if "gan" in self.summary["stages"]:
            log.info("%s: this NoGAN run finished already", self.run_dir)
            return TrainResult(self.run_dir, self.run_dir / "model.safetensors", None, TrainState(done=True))
        gan, loop = self.gan, self._loop("gan")
        generator, model_config = self._load_generator(generator_path)
        critic = self._load_critic()
        content, _ = build.build_loss(self._content_config(), self.data.dataset, self.data.scale)
        loss_fn = GANGeneratorLoss(content, gan.adversarial_weight, AdversarialLoss(gan.real_label))
        loss_fn = loss_fn.to(self.device)
        models = {"generator": generator, "critic": critic}
        optimizers = {
            name: torch.optim.Adam(m.parameters(), lr=gan.lr, betas=gan.betas) for name, m in models.items()
        }
        state, info = loop.resume(models, optimizers)
        switcher = AdaptiveSwitcher(gan.critic_threshold, generator_mode=info.get("generator_mode", False))
        counts = dict(info.get("counts", {"generator": 0, "critic": 0}))

        def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
            lq, hq = (loop.to_device(t) for t in batch)
            side = "generator" if switcher.generator_mode else "critic"
            check = partial(loop.check_finite, state=state)
            if side == "generator":
                row = generator_step(generator, critic, loss_fn, optimizers[side], lq, hq, check)
            else:
                row = critic_step(generator, critic, loss_fn.adversarial, optimizers[side], lq, hq, check)
            counts[side] += 1
            switcher.update(row["loss"])
            return {"mode": side, "lr": gan.lr, **row}

        table = CsvLog(loop.folder / "log.csv", GAN_LOG_COLUMNS, keep_until_step=state.step or None)
        self._perceptual = self._snapshot_distance()
        if state.step == 0:
            self._score_start(generator, table)

        def save() -> None:
            extra = {"generator_mode": switcher.generator_mode, "counts": counts}
            loop.save(models, optimizers, state, extra)
            self._snapshot(generator, model_config, state, counts, table)

        log.info("NoGAN stage 4/4: %d iterations, adversarial weight %g", gan.steps, gan.adversarial_weight)
        try:
            columns = ("mode", "lr", "loss", "content", "adversarial", "accuracy")
            loop.run(state, gan.steps, loop.batches(self.data.dataset, state.step), step, save, columns)
        finally:
            table.close()
        return self._finish_gan(generator, model_config, state, counts)

    def _snapshot_distance(self) -> PerceptualDistance | None:
        """The VGG distance the snapshots are ranked by (the feature loss's VGG16), or None without weights."""
        if self.data.valset is None:
            return None
        try:
            return PerceptualDistance.from_weights(self.config.loss.vgg_weights or None)
        except WeightsError as error:
            log.warning("GAN snapshots are not ranked (no best.safetensors): %s", error)
            return None

    def _score_start(self, generator: nn.Module, table: CsvLog) -> None:
        """Row 0 of `gan/log.csv`: the pretrained generator, the mark every snapshot is compared with."""
        if self.data.valset is None:
            return
        start = validate(generator, self.data.valset, self.device, perceptual=self._perceptual).metrics
        table.write({"step": 0, "generator_steps": 0, "critic_steps": 0,
                     **{f"val_{k}": v for k, v in start.items()}, "snapshot": ""})  # fmt: skip

    def _pick_best(self) -> dict | None:
        """Copy the snapshot with the lowest held-out VGG distance to `best.safetensors`; its row, or None."""
        rows = [r for r in read_csv_rows(self.run_dir / "gan" / "log.csv") if r.get("val_vgg_dist")]
        start = next((r for r in rows if not r["snapshot"]), None)
        snapshots = [r for r in rows if r["snapshot"]]
        if not snapshots:
            return None
        best = min(snapshots, key=lambda r: float(r["val_vgg_dist"]))
        snapshot = self.run_dir / "gan" / "snapshots" / best["snapshot"]
        atomic_write_bytes(self.run_dir / "best.safetensors", snapshot.read_bytes())  # never half a file
        picked = {"model": "best.safetensors", "snapshot": best["snapshot"], "step": int(best["step"]),
                  "heldout_vgg_dist": float(best["val_vgg_dist"]), "heldout_psnr_y": float(best["val_psnr_y"])}  # fmt: skip
        if start is not None:
            picked["generator_heldout_vgg_dist"] = float(start["val_vgg_dist"])
            picked["generator_heldout_psnr_y"] = float(start["val_psnr_y"])
        log.info("NoGAN: best snapshot on the held-out images: %s", picked)
        return picked

    def _load_critic(self) -> nn.Module:
        """Stage 3's critic."""
        from decrappify.nn.critic import create_critic
        from decrappify.weights import load_into, load_state_dict_file

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

    def _model_info(self, state: TrainState, counts: dict[str, int]) -> dict:
        info = build.model_info(
            self.config,
            command=self.command,
            seconds=state.elapsed,
            step=state.step,
            metrics=self._metrics,
            data=list(self.config.data.paths),
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

    def _snapshot(
        self, generator: nn.Module, model_config: dict, state: TrainState, counts: dict, table: CsvLog
    ):
        """A generator file, a sample grid and a validation row at every checkpoint: the candidates for the
        inflection point."""
        from decrappify.weights import save_model

        folder, name = self.run_dir / "gan", f"step{state.step:06d}"
        if self.data.valset is not None:
            self._metrics, _ = validate_with_samples(
                generator,
                self.data.valset,
                self.device,
                amp=False,
                samples=self.config.train.samples,
                grid_path=folder / "samples" / f"{name}.png",
                perceptual=self._perceptual,
            )
        path = save_model(
            generator,
            folder / "snapshots" / f"{name}.safetensors",
            model_config,
            self._model_info(state, counts),
        )
        table.write(
            {
                "step": state.step,
                "generator_steps": counts["generator"],
                "critic_steps": counts["critic"],
                **{f"val_{k}": v for k, v in self._metrics.items()},
                "snapshot": path.name,
            }
        )

    def _finish_gan(
        self, generator: nn.Module, model_config: dict, state: TrainState, counts: dict
    ) -> TrainResult:
        from decrappify.weights import save_model

        path = save_model(
            generator, self.run_dir / "model.safetensors", model_config, self._model_info(state, counts)
        )
        state.metrics, state.done = dict(self._metrics), True
        self._finish_stage(
            "gan",
            model="model.safetensors",
            steps=state.step,
            generator_steps=counts["generator"],
            critic_steps=counts["critic"],
            metrics=self._metrics,
            best=self._pick_best(),
        )
        log.info("NoGAN: %s (snapshots to compare in %s)", path, self.run_dir / "gan" / "log.csv")
        return TrainResult(self.run_dir, path, None, state, self.losses)
