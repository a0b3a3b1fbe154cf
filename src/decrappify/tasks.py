"""The restoration tasks decrappify knows, by name: the one place a task's name and kind are defined.

A task names a crappify preset (`data.degrade.PRESETS` has one of the same name), the model's job, and how its
results are judged. Colourisation differs from the others in two ways that several layers must agree on: the
model sees only the picture's luminance and its output keeps that luminance exactly (`inference`), and it is
scored for colour as well as fidelity (`evaluation`, training validation).
"""

from __future__ import annotations

from decrappify.errors import ConfigError

#: Every task, in the order tables list them.
TASKS: tuple[str, ...] = ("sr-x4", "restore-x4", "restore-x1", "colorize")
COLORIZE = "colorize"
#: Tasks whose model adds colour to luminance: it sees luma only, and is scored for colour too.
COLOUR_TASKS = frozenset({COLORIZE})


def check_task(task: str) -> str:
    """The task name, or `ConfigError` listing the valid ones."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return task


def is_colour_task(task: str | None) -> bool:
    """Whether `task` (None: unknown, e.g. a model file without one) colours a luminance picture."""
    return task in COLOUR_TASKS
