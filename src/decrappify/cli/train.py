"""`decrappify train`: train a model from a recipe (TOML) on a folder of images; resume; find a learning rate."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
from pathlib import Path

from decrappify.errors import ConfigError, OutputError
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
            "stages.0.batch=8 train.time_budget_minutes=30. For several processes on this machine (DDP): "
            "--nproc-per-node N; for several machines: torchrun ... -m decrappify train ..."
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE|NAME",
        help="recipe file, or a recipe's name: sr-x4 is ./configs/sr-x4.toml (run from the repository root); "
        "not needed with --resume",
    )
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
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        metavar="N",
        help="train with N processes on this machine (DDP, one per GPU; started through torchrun's launcher). "
        "The recipe and --out are checked first, and a failure is one line, not torchrun's report",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(handler=run)
    return parser


#: Where a recipe's name is looked up: the working directory's configs/ (the repository's, from its root). The
#: code never looks for the checkout it was installed from: an installed package has none.
RECIPES = Path("configs")


def find_recipe(config: Path) -> Path:
    """`--config`: a file, or a recipe's name ("sr-x4", "restore-x4-cpu"), looked up as NAME.toml in ./configs.
    `ConfigError` listing the recipes there otherwise."""
    if config.exists() or config.suffix or len(config.parts) > 1:
        return config  # a path: load_config names it if it is missing
    folders = [RECIPES]
    for folder in folders:
        if (folder / f"{config}.toml").is_file():
            return folder / f"{config}.toml"
    names = sorted({path.stem for folder in folders if folder.is_dir() for path in folder.glob("*.toml")})
    where = " or ".join(str(folder) for folder in dict.fromkeys(folders))
    choices = f"; recipes: {', '.join(names)}" if names else ""
    raise ConfigError(f"--config {config}: no such file, and no recipe {config}.toml in {where}{choices}")


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
            args.out = default_run_dir(load_config(find_recipe(args.config)))
        if args.config is not None:
            log.info(
                "--resume: using the config stored in %s (the --config file is not read again)", args.out
            )
        return _with_paths(resume_config(args.out, args.overrides), args.data, args.val), args.out
    if args.config is None:
        raise ConfigError("--config FILE is required (a recipe from configs/, e.g. configs/restore-x4.toml)")
    config = _with_paths(load_config(find_recipe(args.config), args.overrides), args.data, args.val)
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


def _launch(args: argparse.Namespace, config: Config, run_dir: Path) -> int:
    """Start `--nproc-per-node` copies of this command through torchrun's launcher, after the checks that need
    no process group, so that a usage error is one line and no process is started for it."""
    if args.nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be at least 1, got {args.nproc_per_node}")
    if args.lr_find:
        raise ConfigError("--lr-find runs in one process; leave out --nproc-per-node")
    if not args.resume and (run_dir / "checkpoints").exists():
        raise OutputError(run_dir, "already holds a training run; pass --resume to continue it or another --out")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # local: torch, DDP only
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    words = shlex.split(_command_line(args, run_dir))[1:]  # "train --config ... --out RUN ..."
    flags = (["--debug"] if args.debug else []) + (["-q"] if args.quiet else [])
    log.info("starting %d training processes (DDP) for %s", args.nproc_per_node, run_dir)
    # torchrun sets 1 and prints a 4-line notice when it is unset; decrappify sets its own (train.threads).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not args.debug:  # the failed worker has said why in one line; the launcher's own report adds nothing
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun(parse_args([f"--nproc_per_node={args.nproc_per_node}", "-m", "decrappify", *flags, *words]))
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        print(f"decrappify train: error: training process {rank} stopped; its reason is above", file=sys.stderr)
        return failure.exitcode if failure.exitcode in (1, 2) else 1
    return 0


def run(args: argparse.Namespace) -> int:
    config, run_dir = _resolve_config(args)
    if args.nproc_per_node is not None and "RANK" not in os.environ:
        return _launch(args, config, Path(run_dir))
    if args.lr_find:
        result = find_lr(config, run_dir=run_dir, progress=not args.quiet)
        rate = result.suggested
        print(f"suggested:        lr = {rate:.2e}  ({result.RULE}; train with optim.lr={rate:.1e})")
        print(f"steepest descent: lr = {result.steepest:.2e}")
        print(f"minimum / 10:     lr = {result.min_div10:.2e}")
        print(f"curve: {Path(run_dir) / 'lr_find.png'} ({Path(run_dir) / 'lr_find.csv'})")
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
        if "iou" in metrics:
            text = f", validation IoU {metrics['iou']:.3f}"
        print(f"model: {result.model_path}{text}")
        score = result.state.best_score
        if result.best_path is not None and score is not None:
            selection = selection_for(config.data.task or config.data.preset)
            print(f"best:  {result.best_path} (validation {selection.describe(score)})")
    return 0
