"""Self-ensemble: run a model on turned and mirrored copies of its input and average the answers.

EDSR's "+" models (Lim et al., 2017) showed that averaging the eight dihedral views (identity, three quarter
turns, and the mirror of each) lifts a super-resolution network's PSNR by about 0.1 dB at no training cost: each
view's errors are partly independent, the truth is the same in all of them. The price is one model call per
view, so it is never switched on behind a model's back: a model runs plain unless its file or the user asks.

Which views are safe depends on how the model was trained. A model that saw only left-right mirrors (the
watermark-removing models: their text is always drawn left to right) has never seen turned or upside-down text,
so for them `"flip"` (two views) is the honest choice; `"dihedral"` (eight) is for models trained with turns
(`data.augment = "dihedral"`, as `sr-x4`). `"flip4"` (four views: as is, mirrored left-right, up-down, and both)
is for an x4 generator whose output carries a fixed pattern along the 4-pixel grid of its upsampling that a
left-right mirror cannot cancel: restore-x4-gan's rows at phases 0-1 of every 4 came out darker than at 2-3
(docs/nogan.md), and the up-down views turn that pattern over, so the average loses most of it. Its text views are
upside down half the time; `evaluate`'s text-box score shows what that costs.

A model file may name the ensemble it is meant to run as (`info["ensemble"]`, set when it is shipped): that is
then its default everywhere (`restore`, `evaluate`, `benchmark`, `serve`, the demo), so the speed and the quality
a model card states are those of one and the same configuration. `--ensemble` overrides it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from decrappify.errors import ConfigError

__all__ = ["ENSEMBLES", "View", "check_ensemble", "model_ensemble", "self_ensemble", "view_groups", "views_for"]

#: Ensemble name -> number of views (model calls per tile).
ENSEMBLES = {"none": 1, "flip": 2, "flip4": 4, "dihedral": 8}

View = tuple[int, bool]
"""(quarter turns, mirror first): mirror left-right if set, then turn by 90 degrees `turns` times."""

ModelFn = Callable[[Tensor], Tensor]


def check_ensemble(name: str) -> str:
    """`name` if it is an ensemble, else a ConfigError listing the choices."""
    if name not in ENSEMBLES:
        raise ConfigError(f"unknown ensemble '{name}'; choose one of: {', '.join(ENSEMBLES)}")
    return name


def model_ensemble(info: Mapping[str, Any]) -> str:
    """The ensemble a model file asks for (`info["ensemble"]`), "none" when it names none."""
    name = str(info.get("ensemble") or "none")
    if name not in ENSEMBLES:
        raise ConfigError(f"the model asks for an unknown ensemble '{name}'; known: {', '.join(ENSEMBLES)}")
    return name


def views_for(name: str) -> list[View]:
    """The views an ensemble averages, the identity first."""
    check_ensemble(name)
    if name == "none":
        return [(0, False)]
    if name == "flip":
        return [(0, False), (0, True)]
    if name == "flip4":  # the mirrors left-right, up-down (mirror, then half a turn) and both (half a turn)
        return [(0, False), (0, True), (2, True), (2, False)]
    return [(turns, mirror) for mirror in (False, True) for turns in range(4)]


def view_groups(name: str) -> list[list[View]]:
    """The views of an ensemble as `self_ensemble` batches them: views of one shape (even or odd quarter turns)
    go through the model together, so the largest group is the batch size of one model call."""
    views = views_for(name)
    groups = [[view for view in views if view[0] % 2 == odd] for odd in (0, 1)]
    return [group for group in groups if group]


def _apply(x: Tensor, view: View) -> Tensor:
    turns, mirror = view
    if mirror:
        x = x.flip(-1)
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def _undo(x: Tensor, view: View) -> Tensor:
    turns, mirror = view
    if turns:
        x = torch.rot90(x, -turns, dims=(-2, -1))
    return x.flip(-1) if mirror else x


def self_ensemble(model_fn: ModelFn, name: str) -> ModelFn:
    """`model_fn` averaged over the views of ensemble `name` (`model_fn` itself for "none").

    Views of the same shape (as is and half turns; quarter turns swap height and width) go through the model
    as one batch: one call of twice the batch keeps two CPU threads busier than two calls. The average is
    taken in float32 on the CPU.
    """
    groups = view_groups(name)
    if len(groups) == 1 and len(groups[0]) == 1:
        return model_fn

    def averaged(lq: Tensor) -> Tensor:
        total: Tensor | None = None
        for group in groups:
            preds = model_fn(torch.cat([_apply(lq, view) for view in group])).float().cpu()
            for view, pred in zip(group, preds.split(lq.shape[0]), strict=True):
                pred = _undo(pred, view)
                # Not in place: runners return inference tensors, which refuse in-place updates outside inference.
                total = pred if total is None else total + pred
        assert total is not None
        return total / sum(len(group) for group in groups)

    return averaged
