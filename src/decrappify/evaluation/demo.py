"""The one-command demo: restore scikit-image's bundled sample photos with the shipped models, as a web page.

It is `evaluate` run on pictures every installation already has (scikit-image ships them), so the demo needs no
download and shows exactly what `decrappify evaluate` would measure. Each shipped model is run on its own task
(the task in its metadata): the photos are degraded with that task's preset, restored by the baseline (bicubic,
or the unchanged input for x1 tasks) and the model, and scored against the truth. Every task gets its own report
in `OUT/<task>/`; `OUT/index.html` puts them all on one page, restore-x4 (the lesson-7 task) first. With no shipped
model the demo still shows the baseline on restore-x4, and says so.

The VGG perceptual distance costs about one second per image and method on a busy 2-core CPU, more than
everything else together, so by default only the first task scores it: four tasks stay well under a minute.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decrappify.evaluation.evaluate import evaluate
from decrappify.evaluation.report import ReportSection, write_overview, write_report
from decrappify.evaluation.results import EvaluationResult
from decrappify.inference import realesrgan
from decrappify.inference.zoo import ModelEntry, list_models
from decrappify.io.images import Picture, write_image
from decrappify.tasks import TASKS, check_task, is_segmentation_task

log = logging.getLogger(__name__)

# Colour photos bundled inside scikit-image (no network needed): name -> loader attribute of skimage.data.
SAMPLE_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket")
SAMPLES_FOLDER = "scikit-image-samples"
# The order tasks are shown in: the lesson-7 task first, then its same-size sibling, then the rest.
TASK_ORDER: tuple[str, ...] = ("restore-x4", "restore-x1", "sr-x4", "colorize")
PRIMARY_TASK = TASK_ORDER[0]
#: Tasks shown next to the peer people actually use, Real-ESRGAN x4plus (when decrappify[bench] installed it).
PEER_TASKS: tuple[str, ...] = ("restore-x4",)


@dataclass(frozen=True)
class DemoTask:
    """One task of the demo: the shipped models run on it, their scores, and the task's own report page."""

    task: str
    models: tuple[ModelEntry, ...]
    result: EvaluationResult
    page: Path

    @property
    def heading(self) -> str:
        """'restore-x4: model restore-x4 vs bicubic', or says that no shipped model does this task."""
        baseline = self.result.methods[0]
        if not self.models:
            return f"{self.task}: {baseline} only (no shipped model for this task)"
        names = ", ".join(entry.name for entry in self.models)
        return f"{self.task}: model {names} vs {baseline}"


@dataclass(frozen=True)
class DemoResult:
    """Every task shown, in page order, and the main page `OUT/index.html`."""

    tasks: list[DemoTask]
    page: Path


def write_sample_photos(folder: Path) -> list[Path]:
    """Save the bundled sample photos as PNG files (the clean 'truth' images) and return their paths."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLE_PHOTOS:
        rgb = getattr(skimage.data, name)().astype(np.float32) / 255.0
        picture = Picture(rgb=rgb, alpha=None, bit_depth=8, grayscale=False, icc_profile=None, exif=None,
                          source_format=None)  # fmt: skip
        paths.append(write_image(picture, folder / f"{name}.png", overwrite=True))
    return paths


def plan_tasks(
    tasks: Sequence[str] | None = None, models_dir: Path | None = None
) -> list[tuple[str, tuple[ModelEntry, ...]]]:
    """(task, shipped models doing it) for each task to show.

    `tasks` None: every task some shipped model does, in `TASK_ORDER`, or just `PRIMARY_TASK` when none is
    installed. Otherwise the given tasks in the given order (unknown names: `ConfigError` listing the valid ones),
    each with whatever shipped models do it, possibly none.
    """
    by_task: dict[str, list[ModelEntry]] = {}
    for entry in list_models(models_dir):
        if is_segmentation_task(entry.task):
            continue  # a text-mask model makes no picture to show beside the others (`decrappify detect`)
        if entry.task in TASKS:
            by_task.setdefault(entry.task, []).append(entry)
        else:
            log.warning("demo: skipping shipped model %s: its task %r is none of %s", entry.name, entry.task,
                        ", ".join(TASKS))  # fmt: skip
    if tasks is None:
        chosen = sorted(by_task, key=_task_rank) or [PRIMARY_TASK]
    else:
        chosen = list(dict.fromkeys(check_task(task) for task in tasks))
    if not by_task:
        log.warning("demo: no shipped model is installed; showing the baseline only")
    return [(task, tuple(by_task.get(task, ()))) for task in chosen]


def run_demo(
    out_dir: Path,
    *,
    tasks: Sequence[str] | None = None,
    models_dir: Path | None = None,
    perceptual: bool | None = None,
    precision: str = "fp32",
    peer: bool = True,
) -> DemoResult:
    """Degrade the sample photos per task, restore them with the baseline and the shipped models, write the pages.

    `tasks`, `models_dir`: see `plan_tasks` (`models_dir` None: the installed package's models).
    `perceptual`: None scores the VGG distance on the first task only (when the weights exist; it is the slow
    part), True on every task (`WeightsError` without weights), False never. `precision`: the models' number
    format (`decrappify.inference.precision`). `peer`: add Real-ESRGAN x4plus's column beside our models on
    `PEER_TASKS` when its weights are installed (a few seconds per photo on a CPU).
    """
    out_dir = Path(out_dir)
    truth_dir = out_dir / SAMPLES_FOLDER
    write_sample_photos(truth_dir)
    shown = []
    for number, (task, models) in enumerate(plan_tasks(tasks, models_dir)):
        vgg = perceptual if perceptual is not None or number == 0 else False
        # Paths, not names: a model from `models_dir` is not findable by name in the installed package.
        paths = [str(entry.path) for entry in models]
        if peer and models and task in PEER_TASKS and peer_installed():
            paths.append(realesrgan.NAME)
        result = evaluate(truth_dir, task, methods=paths, perceptual=vgg, precision=precision)
        page = write_report(result, out_dir / task)
        shown.append(DemoTask(task=task, models=models, result=result, page=page))
    sections = [
        ReportSection(item.result, item.task, item.heading, "; ".join(_descriptions(item.models)))
        for item in shown
    ]
    intro = (
        f"scikit-image's sample photos ({', '.join(SAMPLE_PHOTOS)}) degraded with each task's preset, then "
        "restored by the baseline and the shipped model: per photo the degraded input (before), each method's "
        "result and the truth, with scores."
    )
    page = write_overview(sections, out_dir, "decrappify demo", intro)
    log.info("demo page written to %s", page)
    return DemoResult(tasks=shown, page=page)


def peer_installed() -> bool:
    """Whether Real-ESRGAN x4plus's weights are installed (its package is located, not imported)."""
    return importlib.util.find_spec(realesrgan.PACKAGE) is not None


def _task_rank(task: str) -> int:
    """Position in `TASK_ORDER`; a task added to evaluate later goes last rather than being dropped."""
    return TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER)


def _descriptions(models: Sequence[ModelEntry]) -> list[str]:
    return [f"{entry.name}: {entry.description}" for entry in models if entry.description]
