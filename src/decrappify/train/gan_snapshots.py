"""The GAN phase's candidates for its turning point: generator snapshots, their scores, and the pick of the best.

GAN training improves, then degrades: the snapshot at the turn (DeOldify's "inflection point") is the one to keep.
At every checkpoint of the GAN phase the generator is saved to `gan/snapshots/stepNNNNNN.safetensors`, a sample
grid to `gan/samples/`, and its scores on the held-out images to a row of `gan/log.csv`; row 0 scores the
pretrained generator, the mark every snapshot is compared with. The snapshot with the lowest VGG distance
(`evaluation.perceptual`) becomes the run's `best.safetensors`: the turn, picked on images no stage trains on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from decrappify.data.pairs import ValidationSet
from decrappify.errors import WeightsError
from decrappify.evaluation.perceptual import PerceptualDistance
from decrappify.io.atomic import atomic_write_bytes
from decrappify.train.logs import CsvLog, read_csv_rows
from decrappify.train.validation import validate, validate_with_samples
from decrappify.weights import save_model

log = logging.getLogger(__name__)

BEST_FILE = "best.safetensors"
LOG_COLUMNS = (
    "step",
    "generator_steps",
    "critic_steps",
    "val_psnr_y",
    "val_ssim_y",
    "val_l1",
    "val_vgg_dist",
    "snapshot",
)


def snapshot_distance(valset: ValidationSet | None, vgg_weights: str | None) -> PerceptualDistance | None:
    """The VGG distance the snapshots are ranked by (the feature loss's VGG16), or None without weights."""
    if valset is None:
        return None
    try:
        return PerceptualDistance.from_weights(vgg_weights or None)
    except WeightsError as error:
        log.warning("GAN snapshots are not ranked (no %s): %s", BEST_FILE, error)
        return None


class SnapshotLog:
    """`folder/log.csv` (rows past `resume_step` dropped), `folder/snapshots/` and `folder/samples/`."""

    def __init__(
        self,
        folder: Path,
        valset: ValidationSet | None,
        device: torch.device,
        *,
        samples: int,
        vgg_weights: str | None,
        resume_step: int,
        precision: str = "fp32",
    ):
        self.folder, self.valset, self.device, self.samples = Path(folder), valset, device, samples
        self.precision = precision  # the generator's number format while it is scored (as it trains)
        self.table = CsvLog(self.folder / "log.csv", LOG_COLUMNS, keep_until_step=resume_step or None)
        self.perceptual = snapshot_distance(valset, vgg_weights)
        self.metrics: dict[str, float] = {}  # the last snapshot's scores (empty before the first)

    def score_start(self, generator: nn.Module) -> None:
        """Row 0: the pretrained generator."""
        if self.valset is None:
            return
        start = validate(generator, self.valset, self.device, perceptual=self.perceptual).metrics
        self._write(0, {"generator": 0, "critic": 0}, start, "")

    def validate(self, generator: nn.Module, step: int) -> dict[str, float]:
        """The generator's scores on the held-out images and its sample grid (empty without validation images)."""
        if self.valset is not None:
            self.metrics, _ = validate_with_samples(
                generator, self.valset, self.device, precision=self.precision, samples=self.samples,
                grid_path=self.folder / "samples" / f"step{step:06d}.png", perceptual=self.perceptual,
            )  # fmt: skip
        return self.metrics

    def save(self, generator: nn.Module, model_config: dict, info: dict, step: int, counts: dict) -> Path:
        """The snapshot file and its row (with the scores of the last `validate`)."""
        path = save_model(generator, self.folder / "snapshots" / f"step{step:06d}.safetensors", model_config, info)
        self._write(step, counts, self.metrics, path.name)
        return path

    def _write(self, step: int, counts: dict, metrics: dict[str, float], snapshot: str) -> None:
        self.table.write({"step": step, "generator_steps": counts["generator"], "critic_steps": counts["critic"],
                          **{f"val_{k}": v for k, v in metrics.items()}, "snapshot": snapshot})  # fmt: skip

    def close(self) -> None:
        self.table.close()


def pick_best(run_dir: Path) -> dict | None:
    """Copy the snapshot with the lowest held-out VGG distance to `RUN/best.safetensors`; its row, or None."""
    rows = [r for r in read_csv_rows(run_dir / "gan" / "log.csv") if r.get("val_vgg_dist")]
    start = next((r for r in rows if not r["snapshot"]), None)
    snapshots = [r for r in rows if r["snapshot"]]
    if not snapshots:
        return None
    best = min(snapshots, key=lambda r: float(r["val_vgg_dist"]))
    snapshot = run_dir / "gan" / "snapshots" / best["snapshot"]
    atomic_write_bytes(run_dir / BEST_FILE, snapshot.read_bytes())  # never half a file
    picked = {"model": BEST_FILE, "snapshot": best["snapshot"], "step": int(best["step"]),
              "heldout_vgg_dist": float(best["val_vgg_dist"]), "heldout_psnr_y": float(best["val_psnr_y"])}  # fmt: skip
    if start is not None:
        picked["generator_heldout_vgg_dist"] = float(start["val_vgg_dist"])
        picked["generator_heldout_psnr_y"] = float(start["val_psnr_y"])
    log.info("NoGAN: best snapshot on the held-out images: %s", picked)
    return picked
