"""Training in bf16 autocast follows the fp32 run: only the networks compute in bf16, the loss and weights stay fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decrappify.train import Callback, train
from decrappify.train.config import load_config
from decrappify.train.loop import training_precision
from decrappify.train.losses import FeatureLoss

STEPS = 200
#: Mean relative gap allowed between the two runs' smoothed loss curves: 0.05%. This model's output is bicubic
#: plus a small learned residual, so bf16 convolutions move its loss very little: the correct runs measured 0.003%
#: apart. The faults this guards against measured far more: master weights (and so the optimiser's updates) in
#: bf16, 0.42%; the pixel loss computed on bf16 tensors, 0.09%.
CURVE_TOLERANCE = 0.0005


class Losses(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_step(self, record) -> None:
        self.values.append(record.loss)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    for i in range(8):
        Image.fromarray(np.roll(base, i, axis=1)).resize((48, 48), Image.Resampling.BICUBIC).save(root / f"{i}.png")
    return root


def _curve(photos: Path, run_dir: Path, precision: str) -> np.ndarray:
    config = load_config(None, [
        "model={arch='compact', scale=4, widths=[8, 8, 8], blocks=[1, 1, 1]}", "data.preset=sr-x4",
        "data.val_size=0", f"stages=[{{crop=32, batch=4, epochs={STEPS // 2}}}]", "train.threads=1",
        f"train.precision='{precision}'", f"data.paths=['{photos}']",
    ])  # fmt: skip
    losses = Losses()
    train(config, run_dir=run_dir, progress=False, callbacks=[losses])
    assert len(losses.values) == STEPS
    return np.asarray(losses.values)


def _smoothed(curve: np.ndarray, window: int = 20) -> np.ndarray:
    return np.convolve(curve, np.ones(window) / window, mode="valid")


def test_bf16_training_follows_the_fp32_loss_curve(photos: Path, tmp_path: Path) -> None:
    fp32 = _curve(photos, tmp_path / "fp32", "fp32")
    bf16 = _curve(photos, tmp_path / "bf16", "bf16")
    assert not np.array_equal(fp32, bf16)  # bf16 really ran
    assert fp32[-20:].mean() < 0.9 * fp32[:20].mean()  # the tiny model learns, so the curves say something
    gap = np.abs(_smoothed(bf16) - _smoothed(fp32)) / _smoothed(fp32)
    assert gap.mean() < CURVE_TOLERANCE, f"mean relative gap {gap.mean():.3f}, max {gap.max():.3f}"


def test_auto_precision_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from decrappify.inference import precision

    config = load_config(None, ["train.precision='auto'"])
    monkeypatch.setattr(precision, "cpu_runs_bf16_natively", lambda: True)
    assert training_precision(config, torch.device("cpu"))[0] == "bf16"
    monkeypatch.setattr(precision, "cpu_runs_bf16_natively", lambda: False)
    assert training_precision(config, torch.device("cpu"))[0] == "fp32"
    assert training_precision(config, torch.device("cuda"))[0] == "bf16"  # train.amp, CUDA's own switch
    no_amp = load_config(None, ["train.precision='auto'", "train.amp=false"])
    assert training_precision(no_amp, torch.device("cuda"))[0] == "fp32"
    assert training_precision(load_config(None, ["train.precision='fp32'"]), torch.device("cuda"))[0] == "fp32"


def test_the_feature_loss_does_its_arithmetic_in_fp32_under_autocast() -> None:
    torch.manual_seed(0)
    vgg = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())  # fmt: skip
    loss = FeatureLoss(vgg, layer_ids=(1, 3), feature_weights=(1.0, 1.0), gram_weights=(100.0, 100.0))
    pred, hq = torch.rand(2, 3, 16, 16, requires_grad=True), torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = loss(pred, hq)
    assert total.dtype == torch.float32 and all(t.dtype == torch.float32 for t in terms.values())
    reference, _ = loss(pred, hq)
    assert float(total.detach()) == pytest.approx(float(reference.detach()), rel=0.02)
    total.backward()
    assert pred.grad is not None and pred.grad.dtype == torch.float32
