"""Training configuration: frozen dataclasses, TOML in, JSON out, `key=value` overrides.

A recipe is a TOML file in `configs/`; the command line may change any value with a dotted `key=value` override
(`optim.lr=3e-4`, `stages.0.batch=8`, `stages=[{crop=64, batch=4, epochs=1}]`), the value parsed as TOML. The
resolved configuration is written as JSON beside every checkpoint, so a run can be resumed and a model file
explains how it was trained. Unknown keys are an error that lists the valid keys at that level: a typo must
never be ignored silently, because a silently ignored learning rate costs an afternoon of training.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decrappify.errors import ConfigError
from decrappify.inference.precision import PRECISIONS
from decrappify.nn.models import training_output
from decrappify.tasks import COLORIZE, SEGMENTATION_TASKS, is_segmentation_task

LOSS_KINDS = ("l1", "mse", "feature", "bce_dice", "ab_classification")
SCHEDULES = ("onecycle", "cosine", "constant")
AUGMENTS = ("none", "hflip", "dihedral")


@dataclass(frozen=True)
class DataConfig:
    """Where pairs come from: images on disk, cropped at random and degraded on the fly with a preset."""

    preset: str = (
        "restore-x4"  # a `degrade.PRESETS` name: how clean crops are crappified; also the model's task
    )
    # "": the model restores pictures, the task `preset` names. "text-mask": it finds the watermark's text (a mask of
    # the degraded input, `data/masks.py`) in pictures degraded by `preset` and `extra_presets`
    task: str = ""
    extra_presets: tuple[str, ...] = ()  # text-mask: more presets, one picked per sample (validation uses `preset`)
    paths: tuple[str, ...] = ()  # training folders (the CLI's --data adds to these)
    val_paths: tuple[str, ...] = ()  # separate validation folders; empty: hold out `val_size` training images
    val_size: int = 8  # images held out (a fixed, seeded choice) when there is no validation folder ...
    val_fraction: float = 0.25  # ... but at most this share of them: 13 photos keep 10 for training, not 5
    val_crop: int = 0  # validate on a centre crop of this clean size; 0: the whole (modcropped) image
    crops_per_image: int = 1  # random crops drawn from each image per epoch (an epoch's length)
    augment: str = "hflip"  # none | hflip | dihedral (flips and 90-degree turns)
    # crop: degrade each training crop (fast); photo: degrade the whole photo, as `evaluate` does, then crop the
    # pair. Only "photo" sizes a watermark's text to the photo (a 128-pixel crop gets a 10-32 px text, a BSD100
    # photo a 26-80 px one): with "crop" a model never sees the large text it is scored on.
    degrade: str = "crop"
    box_crops: float = 0.5  # degrade=photo: the share of crops placed over a watermark (the rest anywhere)
    cache: bool = True  # decode the training images once and keep them in memory (uint8)
    # 0: build batches in this process; N: DataLoader worker processes. Workers only pay off with cores to spare:
    # each one competes with torch's compute threads for the same cores.
    workers: int = 0
    # with workers=0: build the next batch in a thread while the model computes. Off by default because that
    # thread takes a core from torch's threads, which then wait for each other; with train.threads=1 it has a
    # core of its own. Compare both on a machine with `benchmarks/train_budget.py`.
    prefetch: bool = False


@dataclass(frozen=True)
class LossConfig:
    """The training loss: pixel L1/MSE, or feature + gram loss on a VGG (`losses.create_feature_loss`)."""

    kind: str = "l1"  # l1 | mse | feature | bce_dice (the text-mask task's, on logits) | ab_classification
    # ab_classification (colourisation over a*b* bins, an `ab-unet` model): Zhang et al.'s lambda, the share of
    # the uniform distribution mixed into the prior before inverting it (1: no rebalancing, 0: full)
    ab_rebalance: float = 0.5
    # l1/mse only: pixels inside the degradation's watermark boxes count this many times in the loss (1: plain).
    # L1's gradient is the error's sign, so without it a few text pixels weigh no more than the mild JPEG error
    # everywhere else, and a short run learns to de-block long before it learns to erase text.
    watermark_weight: float = 1.0
    pixel: str = "l1"  # the pixel term of the feature loss
    vgg: str = "vgg16"  # backbone for the feature loss
    vgg_weights: str = ""  # file, URL or PRETRAINED name in torchvision layout; "": $DECRAPPIFY_VGG_WEIGHTS
    layer_ids: tuple[int, ...] = (8, 15, 22)  # VGG16 relu2_2, relu3_3, relu4_3
    feature_weights: tuple[float, ...] = ()  # empty: calibrated to the backbone at the start of training
    gram_weights: tuple[float, ...] = ()  # empty: calibrated
    feature_ratios: tuple[float, ...] = (
        1.0,
        3.0,
        0.4,
    )  # calibration: each term as a multiple of the pixel loss
    gram_ratios: tuple[float, ...] = (0.1, 0.9, 0.02)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a one-cycle (or cosine) schedule, clipping, and discriminative LRs for a pretrained encoder."""

    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 1e-4  # decoupled (AdamW) weight decay
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping
    schedule: str = "onecycle"  # onecycle | cosine | constant
    pct_start: float = 0.25  # one-cycle: fraction of the steps spent warming up
    div_factor: float = 25.0  # one-cycle: start at lr / div_factor
    final_div_factor: float = (
        1e4  # one-cycle / cosine: end at lr / (div_factor * final_div_factor) or lr / this
    )
    cycle_momentum: bool = True  # one-cycle: beta1 goes moms[0] -> moms[1] -> moms[0]
    moms: tuple[float, float] = (0.95, 0.85)
    encoder_lr_mult: float = 0.1  # an unfrozen pretrained encoder learns at lr * this (discriminative LRs)


@dataclass(frozen=True)
class StageConfig:
    """One stage of progressive resizing: its own crop size, batch size and length (one LR cycle each)."""

    crop: int = 128  # clean (target) crop side in pixels; a multiple of the model's scale
    batch: int = 16  # per process
    epochs: float = 1.0  # with a time budget: this stage's share of the budget, relative to the others
    lr: float = 0.0  # peak LR for this stage; 0: `optim.lr`
    freeze_encoder: bool = False  # train only the decoder (a pretrained encoder stays fixed)


@dataclass(frozen=True)
class InitConfig:
    """Weights to start from instead of a random initialisation."""

    weights: str = ""  # a model file (`weights.save_model`) to fine-tune: the whole model
    encoder_weights: str = ""  # a torchvision-layout file or URL for the encoder only (e.g. resnet34)


@dataclass(frozen=True)
class TrainConfig:
    """How the run is driven, logged and checkpointed."""

    time_budget_minutes: float = 0.0  # >0: fit the whole run (all stages) into this wall-clock time
    checkpoint_minutes: float = 5.0  # also checkpoint every N minutes within an epoch (0: only at epoch ends)
    checkpoint_steps: int = 0  # also checkpoint every N steps (0: off)
    log_every: int = 10  # steps between lines of steps.csv (and the non-finite-loss check on CUDA)
    samples: int = 4  # validation images in each epoch's sample grid
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # CUDA under precision "auto": bf16 autocast (true) or fp32 (false)
    # auto | fp32 | bf16: the number format the networks (generator, critic, the feature loss's VGG) compute in,
    # under autocast; losses, optimiser state and master weights stay fp32. auto: bf16 on a CPU that runs it
    # natively (decrappify.inference.precision), on CUDA as `amp` says.
    precision: str = "auto"
    # channels-last memory format: oneDNN's CPU convolutions and cuDNN's tensor-core kernels work on NHWC, so
    # NCHW tensors would be reordered at every layer (speeds: docs/benchmarks/compact-sr-x4-speed.md)
    channels_last: bool = True
    threads: int = 0  # torch CPU threads per process; 0: cores / local processes or 1, timed on real steps
    tensorboard: bool = False  # also log to TensorBoard (needs the `tensorboard` package)
    # The name stored in the model files ("" : the run folder's name). A shipped model's name is refused here,
    # and a run folder named like one (runs/sr-x4) gives "<folder>-trained": two models must not look like one.
    model_name: str = ""
    debug_nan_step: int = 0  # test hook: make the loss NaN at this global step (0: off)


@dataclass(frozen=True)
class GanConfig:
    """NoGAN fine-tuning (`train/gan.py`): after `stages` pretrain the generator, pretrain a critic on its
    outputs, then a short GAN phase. `enabled = false` (the default) trains `stages` only."""

    enabled: bool = False  # true: `train` runs the four NoGAN stages
    generator: str = ""  # a model file to start from instead of pretraining one with `stages` (stage 1)
    critic: dict[str, Any] = field(default_factory=lambda: {"arch": "patch", "width": 64})  # `create_critic`
    crop: int = 128  # clean crop side for the critic and the GAN phase (>= 64 for the patch critic)
    batch: int = 8
    critic_steps: int = 300  # stage 3: critic pretraining steps (one-cycle AdamW)
    critic_lr: float = 1e-3  # stage 3: peak LR
    steps: int = 400  # stage 4: iterations; each trains the critic or the generator on one batch
    lr: float = 1e-4  # stage 4: Adam LR of generator and critic (constant, as fastai's lesson)
    betas: tuple[float, float] = (0.0, 0.99)  # stage 4: Adam betas; beta1 = 0 as fastai and DeOldify
    adversarial_weight: float = 0.5  # generator loss = content loss + this * adversarial loss
    critic_threshold: float = 0.65  # the critic trains until its loss is below this (fastai's switcher)
    real_label: float = 1.0  # < 1: one-sided label smoothing of the critic's "real" target
    checkpoint_steps: int = 50  # stages 3-4: checkpoint (stage 4: + generator snapshot, validation) every N


@dataclass(frozen=True)
class Config:
    """A whole training recipe. `model` is passed as is to `nn.create_model`."""

    name: str = "run"
    seed: int = 0
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "compact", "scale": 4})
    init: InitConfig = InitConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    stages: tuple[StageConfig, ...] = (StageConfig(),)
    train: TrainConfig = TrainConfig()
    gan: GanConfig = GanConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @property
    def scale(self) -> int:
        """The model's upscaling factor as configured (1 when the model config does not say)."""
        return int(self.model.get("scale", 1))


# ---------------------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts, with type checks that name the key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and convert it (list -> tuple, int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _from_mapping(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {tp} for {key}")  # not used by the dataclasses above
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _from_mapping(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`; unknown keys raise `ConfigError` listing the valid ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in [{prefix}]" if prefix else ""
        raise ConfigError(f"unknown key {unknown[0]!r}{where}; valid keys: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(data[name], hints[name], key)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a `Config` from a plain dict (parsed TOML or a checkpoint's JSON)."""
    config = _from_mapping(Config, data)
    validate(config)
    return config


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML recipe (or start from the defaults) and apply `key=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{path}: cannot read config: {error}") from None
        data.setdefault("name", path.stem)
    try:
        config = config_from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") if path is not None else error from None
    return apply_overrides(config, overrides)


# ---------------------------------------------------------------------------------------------------------
# Overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.0.c=VALUE` -> (["a", "b", "0", "c"], value); the value is TOML, else a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {text!r}; expected key=value, e.g. optim.lr=3e-4")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def _set_path(data: Any, parts: list[str], value: Any, done: str = "") -> None:
    """Set `value` at `parts` inside nested dicts/lists, creating nothing a dataclass would not accept."""
    head, rest = parts[0], parts[1:]
    where = done or "the top level"
    if isinstance(data, list):
        if not head.isdigit() or int(head) >= len(data):
            raise ConfigError(
                f"bad index {head!r} for {done}: it has {len(data)} entries (0..{len(data) - 1})"
            )
        index: Any = int(head)
    elif isinstance(data, dict):
        index = head
        if rest and head not in data:
            raise ConfigError(f"unknown key {head!r} in {where}; valid keys: {', '.join(data)}")
    else:
        raise ConfigError(f"{done} is a single value; it has no key {head!r}")
    if not rest:
        data[index] = value
        return
    _set_path(data[index], rest, value, f"{done}.{head}" if done else head)


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Return `config` with each `key=value` applied (in order) and the result validated again."""
    overrides = list(overrides)
    if not overrides:
        return config
    data = config.to_dict()
    for text in overrides:
        parts, value = parse_override(text)
        _set_path(data, parts, value)
    return config_from_dict(data)


# ---------------------------------------------------------------------------------------------------------
# Validation of values (types were checked while building)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    _check(value in choices, f"{key}: unknown value {value!r}; choose one of: {', '.join(choices)}")


def validate(config: Config) -> None:
    """Check values that are wrong regardless of the data (ranges, choices, crop vs scale)."""
    _check(isinstance(config.model.get("arch"), str), "model.arch: missing; it names the architecture")
    _choice(config.loss.kind, LOSS_KINDS, "loss.kind")
    _validate_task(config)
    _validate_ab_classification(config)
    _choice(config.loss.pixel, ("l1", "mse"), "loss.pixel")
    weight = config.loss.watermark_weight
    _check(weight > 0, f"loss.watermark_weight: must be > 0, got {weight}")
    _check(
        weight == 1 or (config.loss.kind in ("l1", "mse") and not config.gan.enabled),
        "loss.watermark_weight: only for loss.kind l1 or mse without [gan]; set it to 1",
    )
    _choice(config.optim.schedule, SCHEDULES, "optim.schedule")
    _choice(config.data.augment, AUGMENTS, "data.augment")
    _choice(config.data.degrade, ("crop", "photo"), "data.degrade")
    _check(0 <= config.data.box_crops <= 1, f"data.box_crops: must be in [0, 1], got {config.data.box_crops}")
    opt = config.optim
    _check(opt.lr > 0, f"optim.lr: must be > 0, got {opt.lr}")
    _check(opt.weight_decay >= 0, f"optim.weight_decay: must be >= 0, got {opt.weight_decay}")
    _check(0 < opt.pct_start < 1, f"optim.pct_start: must be in (0, 1), got {opt.pct_start}")
    _check(
        opt.div_factor >= 1 and opt.final_div_factor >= 1, "optim.div_factor, final_div_factor: must be >= 1"
    )
    _check(opt.grad_clip >= 0, f"optim.grad_clip: must be >= 0, got {opt.grad_clip}")
    _check(opt.encoder_lr_mult > 0, f"optim.encoder_lr_mult: must be > 0, got {opt.encoder_lr_mult}")
    _check(bool(config.stages), "stages: at least one stage is needed")
    scale = config.scale
    _check(scale >= 1, f"model.scale: must be >= 1, got {scale}")
    for i, stage in enumerate(config.stages):
        _check(stage.batch >= 1, f"stages.{i}.batch: must be >= 1, got {stage.batch}")
        _check(stage.epochs > 0, f"stages.{i}.epochs: must be > 0, got {stage.epochs}")
        _check(stage.lr >= 0, f"stages.{i}.lr: must be >= 0 (0: optim.lr), got {stage.lr}")
        _check(
            stage.crop >= 8 and stage.crop % scale == 0,
            f"stages.{i}.crop: must be >= 8 and a multiple of the scale {scale}, got {stage.crop}",
        )
    data, train = config.data, config.train
    _check(
        data.val_size >= 0 and data.crops_per_image >= 1 and 0 < data.val_fraction < 1,
        "data.val_size >= 0, data.crops_per_image >= 1 and 0 < data.val_fraction < 1",
    )
    _check(
        data.val_crop >= 0 and data.val_crop % scale == 0, f"data.val_crop: a multiple of the scale {scale}"
    )
    _check(data.workers >= 0, f"data.workers: must be >= 0, got {data.workers}")
    _check(train.time_budget_minutes >= 0, "train.time_budget_minutes: must be >= 0")
    _check(train.checkpoint_minutes >= 0 and train.checkpoint_steps >= 0, "train.checkpoint_*: must be >= 0")
    _check(train.log_every >= 1, f"train.log_every: must be >= 1, got {train.log_every}")
    _check(train.threads >= 0 and train.samples >= 0, "train.threads and train.samples: must be >= 0")
    _check(train.precision in PRECISIONS, f"train.precision: choose one of {', '.join(PRECISIONS)}")
    _validate_gan(config.gan, scale)


def _validate_task(config: Config) -> None:
    """A text-mask run learns a mask (scale 1, BCE + Dice, no GAN); only it mixes presets."""
    data = config.data
    _choice(data.task, ("", *sorted(SEGMENTATION_TASKS)), "data.task")
    segmentation = is_segmentation_task(data.task)
    _check(
        segmentation == (config.loss.kind == "bce_dice"),
        f"loss.kind={config.loss.kind!r}: data.task = 'text-mask' trains with loss.kind 'bce_dice', and that loss "
        "is for data.task = 'text-mask' only",
    )
    _check(not data.extra_presets or segmentation, "data.extra_presets: only for data.task = 'text-mask'")
    if segmentation:
        _check(config.scale == 1, f"model.scale: a text-mask model works at the input's size (1), got {config.scale}")
        _check(not config.gan.enabled, "gan.enabled: NoGAN trains picture models, not data.task = 'text-mask'")


def _validate_ab_classification(config: Config) -> None:
    """The a*b* classifier (`ab-unet`) trains on its logits, so it and the `ab_classification` loss go together,
    on the colorize preset, without NoGAN (whose critic and content loss take pictures)."""
    kind, arch = config.loss.kind, config.model.get("arch")
    logits = training_output(config.model) == "ab_logits"
    _check(
        logits == (kind == "ab_classification"),
        f"loss.kind={kind!r} with model.arch={arch!r}: an 'ab-unet' model trains with loss.kind "
        "'ab_classification', and that loss needs an 'ab-unet' model",
    )
    _check(0 <= config.loss.ab_rebalance <= 1, f"loss.ab_rebalance: must be in [0, 1], got {config.loss.ab_rebalance}")
    if logits:
        _check(config.data.preset == COLORIZE, f"data.preset: an 'ab-unet' model colourises (preset {COLORIZE!r})")
        _check(not config.gan.enabled, "gan.enabled: NoGAN trains picture models, not the a*b* classifier")


def _validate_gan(gan: GanConfig, scale: int) -> None:
    """The [gan] table's values (checked even when NoGAN is off, so a typo shows before it is switched on)."""
    _check(
        isinstance(gan.critic.get("arch"), str), "gan.critic.arch: missing; it names the critic (patch, unet)"
    )
    crop_ok = gan.crop >= 16 and gan.crop % scale == 0 and gan.crop % 8 == 0
    _check(crop_ok, f"gan.crop: must be >= 16 and a multiple of 8 and of the scale {scale}, got {gan.crop}")
    counts_ok = gan.batch >= 1 and gan.steps >= 1 and gan.critic_steps >= 0
    _check(counts_ok, "gan.batch and gan.steps: must be >= 1; gan.critic_steps >= 0")
    _check(gan.lr > 0 and gan.critic_lr > 0, "gan.lr and gan.critic_lr: must be > 0")
    _check(all(0 <= b < 1 for b in gan.betas), f"gan.betas: each in [0, 1), got {gan.betas}")
    _check(gan.adversarial_weight >= 0, f"gan.adversarial_weight: must be >= 0, got {gan.adversarial_weight}")
    _check(gan.critic_threshold > 0, f"gan.critic_threshold: must be > 0, got {gan.critic_threshold}")
    _check(0.5 < gan.real_label <= 1, f"gan.real_label: must be in (0.5, 1], got {gan.real_label}")
    _check(gan.checkpoint_steps >= 1, f"gan.checkpoint_steps: must be >= 1, got {gan.checkpoint_steps}")
