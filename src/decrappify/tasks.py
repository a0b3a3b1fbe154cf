"""The restoration tasks decrappify knows, by name: the one place a task's name and kind are defined.

A task names a crappify preset (`data.degrade.PRESETS` has one of the same name), the model's job, and how its
results are judged. Colourisation differs from the others in two ways that several layers must agree on: the
model sees only the picture's luminance and its output keeps that luminance exactly (`inference`), and it is
scored for colour as well as fidelity (`evaluation`, training validation).

`text-mask` is the one task that makes no picture: its model finds the watermark's text, a per-pixel mask at the
input's resolution, and is scored for segmentation (IoU, F1, box recall). It has no preset of its own: its inputs
are degraded by the watermark presets (`restore-x1`, `restore-x4`, `watermark`), which record the mask they draw.
"""

from __future__ import annotations

from decrappify.errors import ConfigError

#: Every task, in the order tables list them.
TASKS: tuple[str, ...] = ("sr-x4", "restore-x4", "restore-x1", "colorize", "text-mask")
COLORIZE = "colorize"
#: Tasks whose model adds colour to luminance: it sees luma only, and is scored for colour too.
COLOUR_TASKS = frozenset({COLORIZE})
TEXT_MASK = "text-mask"
#: Tasks whose model outputs one logit per input pixel (a mask), not a picture.
SEGMENTATION_TASKS = frozenset({TEXT_MASK})
#: The preset a text-mask model is scored on unless told otherwise (the bar of issue 22 is set on it).
TEXT_MASK_PRESET = "restore-x1"


def check_task(task: str) -> str:
    """The task name, or `ConfigError` listing the valid ones."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return task


def is_colour_task(task: str | None) -> bool:
    """Whether `task` (None: unknown, e.g. a model file without one) colours a luminance picture."""
    return task in COLOUR_TASKS


def is_segmentation_task(task: str | None) -> bool:
    """Whether `task` (None: unknown) is a segmentation task: the model gives a mask, not a picture."""
    return task in SEGMENTATION_TASKS
