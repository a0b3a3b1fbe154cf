"""Everything a run needs, built from its config: data, model, loss and optimizer.

Kept apart from the training loop so each piece can be built (and tested) alone, and so that `trainer.py` reads
as the loop it is. Every builder is deterministic given the config (the model is initialised from `config.seed`),
which is what lets every DDP process start identical and a resumed run rebuild the same objects.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from decrappify import __version__
from decrappify.data.degrade import create_preset
from decrappify.data.masks import MaskDataset, MaskValidationSet, build_mask_validation
from decrappify.data.pairs import (
    EpochPlan,
    ImageStore,
    PairDataset,
    ValidationSet,
    build_validation,
    collate_pairs,
    keyed_images,
    split_validation,
    validation_count,
)
from decrappify.errors import ConfigError
from decrappify.inference.zoo import shipped_names
from decrappify.nn import ab_bins
from decrappify.nn.models import create_model, training_output
from decrappify.tasks import is_segmentation_task
from decrappify.train import losses
from decrappify.train.config import Config
from decrappify.weights import load_into, load_state_dict_file

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class DataBundle:
    dataset: PairDataset | MaskDataset
    valset: ValidationSet | MaskValidationSet | None  # only built on the process that validates
    scale: int  # the preset's scale (1 for a text-mask run: the mask is at the input's size)
    num_train: int
    num_val: int


def build_data(config: Config, *, with_validation: bool = True) -> DataBundle:
    """Training store + dataset from `data.paths`, validation pairs from `data.val_paths` or a held-out split."""
    data = config.data
    if not data.paths:
        raise ConfigError("no training data: pass --data DIR (or set data.paths in the config)")
    pipeline = create_preset(data.preset)
    items = keyed_images(data.paths)
    if data.val_paths:
        train_items, val_items = items, keyed_images(data.val_paths)
        source = f"from {', '.join(data.val_paths)}"
    else:
        count = validation_count(len(items), data.val_size, data.val_fraction)
        train_items, val_items = split_validation(items, count, config.seed)
        source = "held out of the training folders"
        if count < data.val_size:
            source += f" (data.val_size={data.val_size}, at most data.val_fraction={data.val_fraction:g} of them)"
        if not val_items:
            source += "; no validation: pass --val DIR"
    store = ImageStore([path for path, _ in train_items], cache=data.cache)
    log.info(
        "data: %d training images (%s), %d validation images %s, preset %s",
        len(train_items),
        ", ".join(data.paths),
        len(val_items),
        source,
        ", ".join((data.preset, *data.extra_presets)),
    )
    validate = with_validation and bool(val_items)
    if is_segmentation_task(data.task):
        pipelines = [pipeline, *map(create_preset, data.extra_presets)]
        dataset = MaskDataset(store, pipelines, data.augment, degrade_photo=data.degrade == "photo",
                              box_crops=data.box_crops)  # fmt: skip
        valset = build_mask_validation(val_items, pipeline, seed=config.seed, crop=data.val_crop) if validate else None
        return DataBundle(dataset, valset, 1, len(train_items), len(val_items))
    dataset = PairDataset(
        store,
        pipeline,
        data.augment,
        with_boxes=config.loss.watermark_weight != 1,
        degrade_photo=data.degrade == "photo",
        box_crops=data.box_crops,
    )
    valset = build_validation(val_items, pipeline, seed=config.seed, crop=data.val_crop) if validate else None
    return DataBundle(dataset, valset, int(pipeline.scale), len(train_items), len(val_items))


def stage_plan(
    config: Config, dataset: PairDataset, stage: int, *, rank: int = 0, world_size: int = 1
) -> EpochPlan:
    """The batches of `stage` for one process; `ConfigError` when the images cannot fill one batch."""
    spec = config.stages[stage]
    eligible = tuple(dataset.eligible(spec.crop))
    if not eligible:
        raise ConfigError(f"stages.{stage}.crop={spec.crop}: no training image is that large on both sides")
    plan = EpochPlan(
        eligible, spec.crop, spec.batch, config.seed, stage, config.data.crops_per_image, rank, world_size
    )
    if plan.batches_per_epoch == 0:
        raise ConfigError(
            f"stages.{stage}: {len(eligible)} images x {config.data.crops_per_image} crops cannot fill one batch of "
            f"{spec.batch} x {world_size} processes; lower the batch or raise data.crops_per_image"
        )
    return plan


def build_model(config: Config, scale: int) -> torch.nn.Module:
    """`create_model(config.model)`, seeded, checked against the preset's scale, with `init` weights loaded."""
    torch.manual_seed(config.seed)
    model = create_model(config.model)
    if is_segmentation_task(config.data.task) and training_output(model) != "mask_logits":
        raise ConfigError(
            f"model.arch: a {config.data.task} run needs a mask arch ('mask-unet', 'encoder-mask-unet'), "
            f"not {config.model['arch']!r}"
        )
    if getattr(model, "scale", scale) != scale:
        raise ConfigError(
            f"model.scale={model.scale} but preset {config.data.preset!r} degrades by x{scale}; make them agree"
        )
    if config.init.weights:
        load_into(model, load_state_dict_file(config.init.weights), what=config.init.weights)
        log.info("model: weights from %s", config.init.weights)
    if config.init.encoder_weights:
        if not hasattr(model, "load_encoder"):
            raise ConfigError(
                f"init.encoder_weights: arch {config.model.get('arch')!r} has no pretrained encoder"
            )
        model.load_encoder(
            load_state_dict_file(config.init.encoder_weights), what=config.init.encoder_weights
        )
        log.info("model: encoder weights from %s", config.init.encoder_weights)
    return model


def calibration_batch(config: Config, dataset: PairDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of stage 0 as every process would build it alone (so all calibrate identically)."""
    plan = stage_plan(config, dataset, 0)
    lq, hq = collate_pairs([dataset[key] for key in plan.batch_keys(0, 0)])[:2]
    return lq.float() / 255.0, hq.float() / 255.0


def build_loss(
    config: Config, dataset: PairDataset, scale: int, model: torch.nn.Module | None = None
) -> tuple[LossFn, Config]:
    """The loss as a `(pred, hq) -> (total, terms)` module, and the config with calibrated weights filled in.

    `model`: the model it trains; the `ab_classification` loss takes its a*b* bins from it."""
    spec = config.loss
    if spec.kind == "bce_dice":
        return losses.BceDiceLoss(), config
    if spec.kind == "ab_classification":
        return ab_classification_loss(config, dataset, model), config
    if spec.kind != "feature":
        pixel = losses.PixelLoss(spec.kind)
        return (lambda pred, hq, weight=None: (pixel(pred, hq, weight), {})), config
    feature = losses.create_feature_loss(spec.vgg_weights or None, spec.layer_ids, None)
    if spec.feature_weights and spec.gram_weights:
        weights = {"feature_weights": list(spec.feature_weights), "gram_weights": list(spec.gram_weights)}
    else:
        lq, hq = calibration_batch(config, dataset)
        base = F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False) if scale > 1 else lq
        weights = losses.calibrate_feature_weights(
            feature.vgg,
            base.clamp(0, 1),
            hq,
            spec.feature_ratios,
            spec.gram_ratios,
            spec.layer_ids,
            spec.pixel,
        )
        config = dataclasses.replace(
            config,
            loss=dataclasses.replace(
                spec,
                feature_weights=tuple(weights["feature_weights"]),
                gram_weights=tuple(weights["gram_weights"]),
            ),
        )
    module = losses.FeatureLoss(
        feature.vgg,
        spec.layer_ids,
        weights["feature_weights"],
        weights["gram_weights"],
        pixel_kind=spec.pixel,
    )
    return module, config


def ab_classification_loss(
    config: Config, dataset: PairDataset, model: torch.nn.Module | None
) -> losses.AbClassificationLoss:
    """The a*b* classifier's loss: `model`'s bins, rebalanced by the training pictures' own colour prior
    (counted once at the start of every run, resume included: a pure function of the training images)."""
    centres = getattr(model, "bin_centres", None)
    if not isinstance(centres, torch.Tensor):
        raise ConfigError("loss.kind='ab_classification' needs an 'ab-unet' model (it predicts a*b* bins)")
    centres = centres.detach().float().cpu()
    store = dataset.store
    counts = losses.ab_prior((store[i] for i in range(len(store))), centres, shrink=getattr(model, "out_stride", 4))
    weights = ab_bins.rebalance_weights(counts, centres, config.loss.ab_rebalance)
    seen = int((counts > 0).sum())
    log.info("loss: a*b* classification over %d bins (%d seen in %d training images), rebalanced with lambda %g, "
             "weights %.2f-%.2f", len(centres), seen, len(store), config.loss.ab_rebalance, float(weights.min()),
             float(weights.max()))  # fmt: skip
    return losses.AbClassificationLoss(centres, weights)


def build_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups (encoder / decoder), biases and norms without weight decay.

    Each group carries `lr_mult` (the encoder's `optim.encoder_lr_mult`, else 1); the trainer sets `peak_lr`
    per stage and the schedule scales it, step by step.
    """
    opt = config.optim
    named = (
        model.parameter_groups()
        if hasattr(model, "parameter_groups")
        else [{"name": "decoder", "params": list(model.parameters())}]
    )
    groups = []
    for group in named:
        mult = opt.encoder_lr_mult if group["name"] == "encoder" else 1.0
        decay = [p for p in group["params"] if p.ndim > 1]
        no_decay = [p for p in group["params"] if p.ndim <= 1]
        for params, wd, suffix in ((decay, opt.weight_decay, ""), (no_decay, 0.0, "_no_decay")):
            if params:
                groups.append(
                    {
                        "params": params,
                        "weight_decay": wd,
                        "name": group["name"] + suffix,
                        "lr_mult": mult,
                        "peak_lr": opt.lr * mult,
                    }
                )
    return torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps)


def planned_steps(config: Config, stage: int, batches_per_epoch: int) -> int:
    """Steps of a stage that is not time-budgeted: `epochs` (may be fractional) x batches per epoch."""
    return max(1, math.ceil(config.stages[stage].epochs * batches_per_epoch))


def model_name(config: Config, run_dir: str | Path) -> str:
    """The name a run's model files carry: `train.model_name`, else the run folder's name ("-trained" added
    when that is a shipped model's name: runs/sr-x4 -> "sr-x4-trained"). `ConfigError` for a shipped name set
    on purpose."""
    reserved = shipped_names()
    wanted = config.train.model_name
    if wanted:
        if wanted in reserved:
            raise ConfigError(
                f"train.model_name={wanted!r} is a shipped model's name (reserved: {', '.join(sorted(reserved))}); "
                "choose another"
            )
        return wanted
    name = Path(run_dir).resolve().name
    return f"{name}-trained" if name in reserved else name


def model_info(
    config: Config,
    *,
    name: str,
    command: str,
    seconds: float,
    step: int,
    metrics: dict,
    data: list[str],
    precision: str = "fp32",
) -> dict:
    """The `info` stored in model files: enough to know what the model is and how it was made.

    `precision` is the number format it trained in (`train_precision`; the `precision` key is another thing:
    what a model must run in, see `decrappify.inference.precision`)."""
    return {
        "name": name,
        "task": config.data.task or config.data.preset,
        "scale": config.scale,
        "command": command,
        "train_seconds": round(seconds, 1),
        "train_precision": precision,
        "step": step,
        "metrics": metrics,
        "data": [Path(p).name for p in data],
        **({"presets": [config.data.preset, *config.data.extra_presets]} if config.data.task else {}),
        "decrappify": __version__,
    }
