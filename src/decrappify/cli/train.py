"""`decrappify train`: train a model from a recipe (TOML) on a folder of images; resume; find a learning rate."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
from pathlib import Path

from decrappify.errors import ConfigError
from decrappify.train import default_run_dir, find_lr, resume_config, train
from decrappify.train.config import Config, load_config
from decrappify.train.validation import selection_for

log = logging.getLogger("decrappify")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a model on a folder of images (progress, checkpoints, --resume; torchrun for DDP)",
        description=(
            "Train the recipe in --config on the images in --data, crappified on the fly. Every epoch: validation "
            "PSNR/SSIM, a sample grid and a CSV row in OUT; checkpoints in OUT/checkpoints (Ctrl-C saves one). "
            "Overrides are key=value pairs with dotted keys, values in TOML syntax, e.g. optim.lr=3e-4 "
            "stages.0.batch=8 train.time_budget_minutes=30. For several GPUs or machines: "
            "torchrun --nproc_per_node N -m decrappify train ..."
        ),
    )
    parser.add_argument("--config", type=Path, help="recipe file (configs/*.toml); not needed with --resume")
    parser.add_argument(
        "--data", action="append", type=Path, default=[], help="folder of training images (repeatable)"
    )
    parser.add_argument(
        "--val", action="append", type=Path, default=[], help="validation folder (repeatable)"
    )
    parser.add_argument("-o", "--out", type=Path, help="run folder (default: runs/<config name>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument(
        "--lr-find", action="store_true", help="run the LR range test instead of training; print suggestions"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(handler=run)
    return parser


def _with_paths(config: Config, data: list[Path], val: list[Path]) -> Config:
    """Command-line folders replace the config's (as absolute paths, so --resume works from anywhere)."""
    changes = {}
    if data:
        changes["paths"] = tuple(str(p.resolve()) for p in data)
    if val:
        changes["val_paths"] = tuple(str(p.resolve()) for p in val)
    return (
        dataclasses.replace(config, data=dataclasses.replace(config.data, **changes)) if changes else config
    )


def _resolve_config(args: argparse.Namespace) -> tuple[Config, Path]:
    if args.resume:
        if args.out is None:
            if args.config is None:
                raise ConfigError("--resume needs --out RUN_DIR (or --config, to use runs/<config name>)")
            args.out = default_run_dir(load_config(args.config))
        if args.config is not None:
            log.info(
                "--resume: using the config stored in %s (the --config file is not read again)", args.out
            )
        return _with_paths(resume_config(args.out, args.overrides), args.data, args.val), args.out
    if args.config is None:
        raise ConfigError("--config FILE is required (a recipe from configs/, e.g. configs/restore-x4.toml)")
    config = _with_paths(load_config(args.config, args.overrides), args.data, args.val)
    return config, args.out or default_run_dir(config)


def _command_line(args: argparse.Namespace, run_dir: Path) -> str:
    """The command, as recorded in the model file (how it was trained)."""
    words = ["decrappify", "train"]
    if args.config is not None:
        words += ["--config", str(args.config)]
    words += [w for p in args.data for w in ("--data", str(p))] + [
        w for p in args.val for w in ("--val", str(p))
    ]
    words += ["--out", str(run_dir)] + (["--resume"] if args.resume else []) + list(args.overrides)
    return " ".join(shlex.quote(w) for w in words)


def run(args: argparse.Namespace) -> int:
    config, run_dir = _resolve_config(args)
    if args.lr_find:
        result = find_lr(config, run_dir=run_dir)
        print(f"steepest descent: lr = {result.steepest:.2e}")
        print(f"minimum / 10:     lr = {result.min_div10:.2e}")
        print(f"curve: {Path(run_dir) / 'lr_find.csv'}")
        return 0
    command = _command_line(args, run_dir)
    result = train(
        config,
        run_dir=run_dir,
        resume=args.resume,
        progress=not getattr(args, "quiet", False),
        command=command,
    )
    if result.model_path is not None:
        metrics = result.state.metrics
        text = f", validation PSNR_Y {metrics['psnr_y']:.2f} dB" if "psnr_y" in metrics else ""
        print(f"model: {result.model_path}{text}")
        score = result.state.best_score
        if result.best_path is not None and score is not None:
            selection = selection_for(config.data.preset)
            print(f"best:  {result.best_path} (validation {selection.describe(score)})")
    return 0
