"""`decrappify restore --only-masked`: the options, and the per-picture step that keeps the input outside the text.

Part of the `restore` subcommand (`cli/restore.py` declares these options and calls `masked_step`); the work itself
is `decrappify.inference.text_mask.restore_only_masked`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from decrappify.errors import ConfigError
from decrappify.inference.restorer import Restorer
from decrappify.inference.text_mask import (
    DEFAULT_FEATHER,
    DEFAULT_GROW,
    DEFAULT_MASK_MODEL,
    DEFAULT_WORKING_SIDE,
    MASK_SUFFIX,
    TextMasker,
    detect_outputs,
    read_mask,
    restore_only_masked,
)
from decrappify.inference.tiling import TileCallback
from decrappify.io.images import Picture
from decrappify.io.jobs import BatchItem

log = logging.getLogger("decrappify")


def add_mask_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "restoring only the watermark",
        "For photos whose only damage is a watermark: the picture is restored by a same-size (x1) model, and the "
        "result is kept only on the text (grown and feathered), the input everywhere else, pixel for pixel.",
    )
    group.add_argument("--only-masked", action="store_true",
                       help="keep the restoration only where the text mask says there is text")  # fmt: skip
    group.add_argument(
        "--mask",
        metavar="FILE|DIR",
        help=f"the mask to use instead of predicting one: a file (white is text, the picture's size) for a single "
        f"input, or the folder `decrappify detect -o DIR` wrote (NAME{MASK_SUFFIX} per input, same tree)",
    )
    group.add_argument(
        "--mask-model",
        metavar="NAME|PATH",
        help=f"the text-mask model that predicts the mask (default: the shipped '{DEFAULT_MASK_MODEL}'; until it "
        "ships, a model file trained with configs/text-mask.toml)",
    )
    group.add_argument("--mask-grow", type=int, default=DEFAULT_GROW, metavar="N",
                       help=f"pixels around the text restored in full (default {DEFAULT_GROW})")  # fmt: skip
    group.add_argument("--mask-feather", type=int, default=DEFAULT_FEATHER, metavar="N",
                       help=f"pixels beyond those over which the restoration fades into the input "
                       f"(default {DEFAULT_FEATHER}); farther away the input is kept exactly")  # fmt: skip
    add_mask_side(group)


def add_mask_side(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--mask-side N`: the long side a larger picture is scaled down to before the text-mask model looks at it."""
    parser.add_argument(
        "--mask-side", type=int, default=DEFAULT_WORKING_SIDE, metavar="N",
        help=f"look for text on a copy of the photo scaled down to N pixels on its long side (default "
        f"{DEFAULT_WORKING_SIDE}, the size of the photos the model learned on, where a watermark sized to its photo "
        "looks as it did in training); the mask is scaled back up. 0 looks at the photo's own pixels: for small "
        "text on a big photo",
    )  # fmt: skip


@dataclass(frozen=True)
class MaskedStep:
    """Restore one picture only inside its text mask (given as a file, or predicted by `masker`)."""

    restorer: Restorer
    masker: TextMasker | None
    mask: Path | None  # a file (one input) or a `detect` output folder
    grow: int
    feather: int
    max_pixels: int | None

    def mask_file(self, item: BatchItem) -> Path:
        return detect_outputs(item.relative, self.mask)[0] if self.mask.is_dir() else self.mask

    def __call__(self, item: BatchItem, picture: Picture, on_tile: TileCallback | None = None) -> Picture:
        if self.masker is not None:
            mask = self.masker.predict(picture.rgb)
        else:
            mask = read_mask(self.mask_file(item), picture.size, max_pixels=self.max_pixels)
        return restore_only_masked(self.restorer, picture, mask, grow=self.grow, feather=self.feather,
                                   on_tile=on_tile)  # fmt: skip


def masked_step(args: argparse.Namespace, restorer: Restorer, inputs: int) -> MaskedStep | None:
    """The `--only-masked` step for this run (None without it); `ConfigError` for options that do not fit."""
    if not args.only_masked:
        if args.mask or args.mask_model:
            raise ConfigError("--mask and --mask-model need --only-masked")
        return None
    if getattr(args, "outscale", None) not in (None, 1):
        raise ConfigError("--only-masked keeps the input's pixels: it needs the input's size, not --outscale")
    if args.mask and args.mask_model:
        raise ConfigError("--mask gives the mask and --mask-model predicts one: choose one")
    if args.mask_grow < 0 or args.mask_feather < 0:
        raise ConfigError("--mask-grow and --mask-feather cannot be negative")
    mask = Path(args.mask) if args.mask else None
    if mask is not None and not mask.exists():
        raise ConfigError(f"--mask {mask}: no such file or folder")
    if mask is not None and mask.is_file() and inputs > 1:
        raise ConfigError(f"--mask {mask} is one file for {inputs} inputs; give the folder `decrappify detect` wrote")
    if restorer.scale != 1:  # checked here too, before any picture: restore_only_masked says it per picture
        raise ConfigError(
            f"--only-masked needs a same-size (x1) model such as restore-x1; {restorer.name} is x{restorer.scale}"
        )
    masker = None
    if mask is None:
        masker = TextMasker.from_pretrained(args.mask_model, device=args.device, tile=args.tile, threads=args.threads,
                                            precision=args.precision, working_side=args.mask_side)  # fmt: skip
        log.info("text mask from %s (precision %s)", masker.name, masker.precision_note)
    return MaskedStep(restorer, masker, mask, args.mask_grow, args.mask_feather, args.max_pixels)
