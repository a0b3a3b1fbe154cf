"""Run logs: `log.csv` (one row per epoch), `steps.csv` (one row per `log_every` steps), optional TensorBoard.

Stages and epochs are numbered from 1 in the logs (as on the progress bar); `crops_per_s` counts training time only.

CSV because it opens everywhere (a spreadsheet, pandas, `column -ts,`) and survives a crash line by line: rows are
appended and flushed as they happen. On `--resume` the rows written after the checkpoint being resumed are dropped
(one atomic rewrite), so the log of a resumed run reads like the log of a run that was never interrupted.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from decrappify.io.atomic import atomic_write_text
from decrappify.train.config import Config
from decrappify.train.events import Callback, EpochRecord, LogLines, ProgressBar, StageInfo, StepRecord

log = logging.getLogger(__name__)

EPOCH_COLUMNS = (
    "stage",
    "epoch",
    "step",
    "elapsed_s",
    "lr",
    "train_loss",
    "crops_per_s",
    "val_psnr_y",
    "val_ssim_y",
    "val_l1",
    "val_ab_error",  # colourisation runs only: what picks their best.safetensors
    "val_psnr_watermark",  # watermark presets only: PSNR inside the text boxes, as `evaluate` scores it
    "val_iou",  # text-mask runs only (the rest of this table's val_* stay empty there): what picks their best
    "val_f1",
    "val_box_recall",
)
STEP_COLUMNS = ("step", "stage", "epoch", "elapsed_s", "lr", "loss", "crops_per_s")


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV log as dicts of strings (empty when the file does not exist yet)."""
    if not Path(path).is_file():
        return []
    with Path(path).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _format(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


class CsvLog:
    """Append-only CSV with a fixed header; `keep_until_step` trims rows past a resumed checkpoint."""

    def __init__(self, path: Path, columns: Sequence[str], *, keep_until_step: int | None = None):
        self.path = Path(path)
        self.columns = list(columns)
        if keep_until_step is None or not self.path.is_file():
            atomic_write_text(self.path, ",".join(self.columns) + "\n")
        else:
            self._trim(keep_until_step)
        self._file = self.path.open("a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._file, self.columns, extrasaction="ignore", lineterminator="\n")

    def _trim(self, step: int) -> None:
        with self.path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            self.columns = list(reader.fieldnames or self.columns)
            rows = [row for row in reader if row.get("step", "").isdigit() and int(row["step"]) <= step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())

    def write(self, row: dict[str, object]) -> None:
        self._writer.writerow({k: _format(v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class CsvLogger(Callback):
    """Writes `log.csv` and `steps.csv` in the run folder."""

    def __init__(
        self, run_dir: Path, *, log_every: int = 10, resume_step: int | None = None, terms: Sequence[str] = ()
    ):
        self.log_every = max(1, log_every)
        self.epochs = CsvLog(run_dir / "log.csv", EPOCH_COLUMNS, keep_until_step=resume_step)
        self.steps = CsvLog(run_dir / "steps.csv", (*STEP_COLUMNS, *terms), keep_until_step=resume_step)
        self._losses: list[float] = []
        self._terms: dict[str, float] = {}
        self._crops = 0
        self._seconds = 0.0

    def on_step(self, record: StepRecord) -> None:
        self._losses.append(record.loss)
        self._crops += record.crops
        self._seconds += record.seconds
        for name, value in record.terms.items():
            self._terms[name] = self._terms.get(name, 0.0) + value
        if record.step % self.log_every == 0 or record.stage_step >= record.stage_total:
            count = len(self._losses)
            row = {
                "step": record.step,
                "stage": record.stage + 1,
                "epoch": record.epoch + 1,
                "elapsed_s": record.elapsed,
                "lr": record.lr,
                "loss": sum(self._losses) / count,
                "crops_per_s": self._crops / max(self._seconds, 1e-9),
            }
            row.update({name: total / count for name, total in self._terms.items()})
            self.steps.write(row)
            self._losses, self._terms, self._crops, self._seconds = [], {}, 0, 0.0

    def on_epoch_end(self, record: EpochRecord) -> None:
        row = {
            "stage": record.stage + 1,
            "epoch": record.epoch + 1,
            "step": record.step,
            "elapsed_s": record.elapsed,
            "lr": record.lr,
            "train_loss": record.train_loss,
            "crops_per_s": record.crops_per_second,
        }
        row.update({f"val_{k}": v for k, v in record.metrics.items()})
        self.epochs.write(row)

    def on_fit_end(self) -> None:
        self.epochs.close()
        self.steps.close()


class StepTable(Callback):
    """Every step as one row of `path` (a NoGAN stage's `steps.csv`): step, the record's notes, lr, loss, terms.

    The file is opened when the stage starts: rows past the step it resumes at are dropped then. The owner
    closes it (`close`) whether or not the stage finished.
    """

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path, self.columns = Path(path), ("step", *columns)
        self._log: CsvLog | None = None

    def on_stage_start(self, info: StageInfo) -> None:
        self.close()
        self._log = CsvLog(self.path, self.columns, keep_until_step=info.start_step or None)

    def on_step(self, record: StepRecord) -> None:
        if self._log is not None:
            row = {"step": record.step, **record.notes, "lr": record.lr, "loss": record.loss, **record.terms}
            self._log.write(row)

    def on_stage_end(self, info: StageInfo) -> None:
        self.close()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class TensorBoardLogger(Callback):
    """The same numbers in TensorBoard (`train.tensorboard = true`); a warning if the package is missing."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning(
                "train.tensorboard is set but the tensorboard package is not installed; logging to CSV only"
            )
            self.writer = None
            return
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def on_step(self, record: StepRecord) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", record.loss, record.step)
            self.writer.add_scalar("train/lr", record.lr, record.step)
            for name, value in record.terms.items():
                self.writer.add_scalar(f"train/{name}", value, record.step)

    def on_epoch_end(self, record: EpochRecord) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/epoch_loss", record.train_loss, record.step)
            for name, value in record.metrics.items():
                self.writer.add_scalar(f"val/{name}", value, record.step)

    def on_fit_end(self) -> None:
        if self.writer is not None:
            self.writer.close()


def default_callbacks(
    config: Config, run_dir: Path, *, progress: bool, resume_step: int | None
) -> list[Callback]:
    """CSV logs, a progress bar (or a log line per epoch), TensorBoard if asked for."""
    terms = []
    if config.loss.kind == "feature":
        layers = range(len(config.loss.layer_ids))
        terms = ["pixel"] + [f"{kind}_{i}" for kind in ("feat", "gram") for i in layers]
    elif config.loss.kind == "bce_dice":
        terms = ["bce", "dice"]
    log_every = config.train.log_every
    callbacks: list[Callback] = [
        CsvLogger(run_dir, log_every=log_every, resume_step=resume_step, terms=terms)
    ]
    callbacks.append(ProgressBar(every=max(1, log_every // 5)) if progress else LogLines())
    if config.train.tensorboard:
        callbacks.append(TensorBoardLogger(run_dir))
    return callbacks
