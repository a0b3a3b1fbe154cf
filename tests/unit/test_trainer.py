"""The trainer: schedules, checkpoints, exact resume, NaN stop, time budget, freezing, calibrated feature loss."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decrappify.errors import OutputError, TrainingError
from decrappify.io.atomic import atomic_write_text
from decrappify.train import Callback, Trainer, resume_config, train
from decrappify.train.checkpoint import (
    TrainState,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from decrappify.train.config import load_config
from decrappify.train.schedule import Schedule, lr_find, lr_sweep

TINY = [
    "model={arch='compact', scale=4, widths=[8, 8, 8], blocks=[1, 1, 1]}",
    "data.preset=sr-x4",
    "data.val_size=2",
    "stages=[{crop=32, batch=2, epochs=2}, {crop=48, batch=1, epochs=1}]",
    "train.log_every=2",
    "train.threads=1",  # no thread tuning: tiny models gain nothing from more threads, and results stay alike
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    for i in range(8):  # smooth-ish pictures, so a few steps of training make a measurable difference
        image = Image.fromarray(np.roll(base, i, axis=1)).resize((48, 48), Image.Resampling.BICUBIC)
        image.save(root / f"{i}.png")
    return root


def tiny_config(photos: Path, *overrides: str):
    return load_config(None, [*TINY, f"data.paths=['{photos}']", *overrides])


class Recorder(Callback):
    """Collects (step, loss); sends this process SIGINT after step `interrupt_at` (as Ctrl-C would)."""

    def __init__(self, interrupt_at: int | None = None):
        self.steps: list[tuple[int, float]] = []
        self.epochs = []
        self.interrupt_at = interrupt_at

    def on_step(self, record) -> None:
        self.steps.append((record.step, record.loss))
        if record.step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)

    def on_epoch_end(self, record) -> None:
        self.epochs.append(record)


# ------------------------------------------------------------------------------------------------ schedule


def test_one_cycle_warms_up_peaks_and_anneals() -> None:
    sched = Schedule("onecycle", 101, pct_start=0.25, div_factor=25, final_div_factor=1e4, moms=(0.95, 0.85))
    factors = [sched.lr_factor(s) for s in range(101)]
    assert factors[0] == pytest.approx(1 / 25)
    assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == 25
    assert factors[-1] == pytest.approx(1 / 25 / 1e4)
    assert all(a <= b for a, b in itertools.pairwise(factors[:26]))
    assert all(a >= b for a, b in itertools.pairwise(factors[25:]))
    assert sched.beta1(0) == pytest.approx(0.95) and sched.beta1(25) == pytest.approx(0.85)


def test_cosine_and_constant_schedules() -> None:
    cosine = Schedule("cosine", 11, final_div_factor=100, moms=None)
    assert cosine.lr_factor(0) == 1.0 and cosine.lr_factor(10) == pytest.approx(0.01)
    assert cosine.lr_factor(5) == pytest.approx((1 + 0.01) / 2)
    assert Schedule("constant", 5, moms=None).lr_factor(3) == 1.0


def test_schedule_sets_each_groups_peak_lr_and_beta1() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "peak_lr": 1e-2}, {"params": [b], "peak_lr": 1e-4}], lr=1.0)
    sched = Schedule("onecycle", 9, pct_start=0.5, div_factor=10, moms=(0.95, 0.85))
    sched.apply(opt, 4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-2, 1e-4])
    assert opt.param_groups[1]["betas"][0] == pytest.approx(0.85)


def test_lr_finder_suggests_a_rate_below_divergence() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0]))
    opt = torch.optim.SGD([w], lr=0.1)

    def step(lr: float) -> float:
        opt.param_groups[0]["lr"] = lr
        loss = (w**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    result = lr_find(step, lr_sweep(1e-4, 10.0, 60))
    assert len(result.lrs) < 60  # stopped when the loss blew up (lr > 1 diverges on w^2)
    assert 1e-3 < result.steepest < 1.0 and result.min_div10 < 1.0
    assert 1e-3 < result.suggested < 1.0 and result.suggested == result.valley
    assert result.to_csv().startswith("lr,loss\n")


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_and_fallback_to_the_previous_one(tmp_path: Path) -> None:
    model = torch.nn.Conv2d(3, 3, 1)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3, 2, 2)).sum().backward()
    opt.step()
    state = TrainState(stage=1, epoch=2, batch=3, step=40, metrics={"psnr_y": 20.0})
    kwargs = {"model": model, "model_config": {"arch": "x"}, "info": {"task": "t"}, "config": {"a": 1}}
    path = save_checkpoint(tmp_path, state=state, optimizer=opt.state_dict(), **kwargs)
    loaded = load_checkpoint(path)
    assert loaded.state == state and loaded.config == {"a": 1}
    assert torch.equal(loaded.state_dict["weight"], model.weight)
    assert loaded.optimizer["state"][0]["exp_avg"].shape == model.weight.shape
    save_checkpoint(tmp_path, state=TrainState(step=50), optimizer=opt.state_dict(), **kwargs)
    assert load_checkpoint(find_checkpoint(tmp_path)).state.step == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary or old folders left
    os.replace(tmp_path / "last", tmp_path / ".last.old")  # a save cut between its two renames
    assert find_checkpoint(tmp_path) == tmp_path / ".last.old"


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "two"


# ------------------------------------------------------------------------------------------------ training


def test_a_run_writes_models_logs_samples_and_a_checkpoint(photos: Path, tmp_path: Path) -> None:
    from decrappify.weights import load_model

    recorder = Recorder()
    result = train(tiny_config(photos), run_dir=tmp_path / "run", progress=False, callbacks=[recorder])
    run = tmp_path / "run"
    assert (
        result.state.done and result.state.step == 3 * 2 + 6
    )  # stage 1: 6 images / 2 x 2 epochs; stage 2: 6
    assert result.model_path == run / "model.safetensors" and result.best_path == run / "best.safetensors"
    _, config, info = load_model(result.model_path)
    assert config["arch"] == "compact" and info["task"] == "sr-x4" and info["scale"] == 4
    assert set(info["metrics"]) == {"psnr_y", "ssim_y", "l1"} and info["step"] == 12
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("stage,epoch,step") and len(rows) == 1 + 3  # one row per epoch
    assert [r.metrics["psnr_y"] > 5 for r in recorder.epochs] == [True] * 3
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["stage1_epoch001.png", "stage1_epoch002.png", "stage2_epoch001.png"]
    with Image.open(run / "samples" / grids[0]) as grid:
        assert grid.size == (3 * 48, 2 * 48)  # input / output / target for the 2 validation photos
    assert json.loads((run / "config.json").read_text())["name"] == "run"
    assert load_checkpoint(find_checkpoint(run / "checkpoints")).state.done


def test_resume_after_ctrl_c_reproduces_the_uninterrupted_run(photos: Path, tmp_path: Path) -> None:
    config = tiny_config(photos)
    full = Recorder()
    train(config, run_dir=tmp_path / "full", progress=False, callbacks=[full])
    first = Recorder(interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=tmp_path / "cut", progress=False, callbacks=[first])
    assert first.steps[-1][0] == 4  # the step under way when the signal came was finished, then saved
    assert load_checkpoint(find_checkpoint(tmp_path / "cut" / "checkpoints")).state.step == 4
    second = Recorder()
    resumed = resume_config(tmp_path / "cut")
    assert resumed == config
    train(resumed, run_dir=tmp_path / "cut", resume=True, progress=False, callbacks=[second])
    steps = first.steps + second.steps
    assert [s for s, _ in steps] == [s for s, _ in full.steps] == list(range(1, 13))
    np.testing.assert_allclose([v for _, v in steps], [v for _, v in full.steps], rtol=1e-5, atol=1e-6)
    full_log = (tmp_path / "full" / "log.csv").read_text().splitlines()
    cut_log = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    assert len(cut_log) == len(full_log)  # no duplicated rows after the resume


def test_a_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(photos: Path, tmp_path: Path) -> None:
    config = tiny_config(photos, "train.debug_nan_step=5")
    with pytest.raises(
        TrainingError, match=r"non-finite loss .* at step 5 .*last good checkpoint \(step 3\)"
    ):
        train(config, run_dir=tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(find_checkpoint(tmp_path / "run" / "checkpoints"))
    assert checkpoint.state.step == 3
    assert all(torch.isfinite(t).all() for t in checkpoint.state_dict.values())
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_fresh_run_refuses_an_existing_run_and_resume_needs_one(photos: Path, tmp_path: Path) -> None:
    config = tiny_config(photos, "stages=[{crop=32, batch=2, epochs=1}]")
    train(config, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(OutputError, match="already holds a training run; pass --resume"):
        train(config, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(OutputError, match="nothing to resume"):
        train(config, run_dir=tmp_path / "other", resume=True, progress=False)
    done = train(
        config, run_dir=tmp_path / "run", resume=True, progress=False
    )  # finished: nothing more to do
    assert done.state.step == 3 and done.losses == []


def test_a_resumed_run_clears_the_checkpoint_a_killed_save_left_half_written(photos: Path, tmp_path: Path) -> None:
    config = tiny_config(photos, "stages=[{crop=32, batch=2, epochs=1}]")
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=tmp_path / "run", progress=False, callbacks=[Recorder(interrupt_at=1)])
    stale = tmp_path / "run" / "checkpoints" / ".last.0123abcd.tmp"  # what a save killed half-way leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    result = train(resume_config(tmp_path / "run"), run_dir=tmp_path / "run", resume=True, progress=False)
    assert result.state.done and not stale.exists()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last"]


def test_time_budget_fits_the_cycle_into_the_budget(photos: Path, tmp_path: Path) -> None:
    config = tiny_config(
        photos,
        "stages=[{crop=32, batch=2, epochs=1}]",
        "train.time_budget_minutes=0.04",
        "data.crops_per_image=50",
    )
    result = train(config, run_dir=tmp_path / "run", progress=False)
    assert 14 < result.state.step < 10_000  # estimated from the warm-up, not the provisional length
    assert result.state.elapsed == pytest.approx(2.4, abs=1.5)
    lrs = [
        float(line.split(",")[4]) for line in (tmp_path / "run" / "steps.csv").read_text().splitlines()[1:]
    ]
    assert lrs[-1] < 0.02 * config.optim.lr  # the cycle ran (close) to its end: annealed, not cut at its peak


def test_a_resume_with_another_time_budget_moves_the_stages_end() -> None:
    from decrappify.train.budget import TimeBudget
    from decrappify.train.distributed import DistContext

    state = TrainState(elapsed=100.0)
    budget = TimeBudget(10.0, DistContext())
    budget.start_stage(state, [1.0])  # a stage starting at 100 s of a 10-minute budget
    assert (state.stage_started, state.stage_budget) == (100.0, 500.0)
    state.stage_step, state.stage_total, state.elapsed = 500, 1000, 400.0  # stopped here, then --resume
    budget.resume_stage(state, [1.0])
    assert state.stage_budget == 500.0  # unchanged budget: unchanged share
    budget = TimeBudget(8.0, DistContext())  # --resume train.time_budget_minutes=8
    budget.resume_stage(state, [1.0])
    assert state.stage_budget == 380.0 and budget.over(state, 480.0) and not budget.over(state, 470.0)
    assert budget.after_epoch(state) == 500 + int(80 / (300 / 500))  # re-planned: 80 s left at 0.6 s a step
    TimeBudget(0.0, DistContext()).resume_stage(state, [1.0])
    assert state.stage_budget == 0.0  # no budget now: no stop on time


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_frozen_encoder_stage_then_discriminative_lrs(photos: Path, tmp_path: Path, one_thread) -> None:
    config = tiny_config(
        photos,
        "model={arch='unet', encoder='resnet18', encoder_width=8, scale=4, self_attention=false}",
        "stages=[{crop=32, batch=2, epochs=1, freeze_encoder=true}, {crop=32, batch=2, epochs=1, lr=5e-4}]",
        "optim.encoder_lr_mult=0.1",
        "data.val_size=0",
    )
    trainer = Trainer(config, tmp_path / "run", progress=False)
    conv = trainer.model.encoder.conv1.weight
    before = conv.detach().clone()
    seen = {}

    class Watch(Callback):
        def on_stage_end(self, info) -> None:
            seen[info.index] = conv.detach().clone()

    trainer.callbacks.callbacks.append(Watch())
    trainer.fit()
    assert torch.equal(seen[0], before)  # frozen in stage 1
    assert not torch.equal(seen[1], seen[0])  # learning in stage 2
    peaks = {g["name"]: g["peak_lr"] for g in trainer.optimizer.param_groups}
    assert peaks["encoder"] == pytest.approx(5e-5) and peaks["decoder"] == pytest.approx(5e-4)
    assert not (tmp_path / "run" / "best.safetensors").exists()  # no validation: no "best"


def test_feature_loss_weights_are_calibrated_and_stored(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from decrappify.train import losses

    torch.manual_seed(0)
    vgg = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
    )
    monkeypatch.setattr(
        losses, "create_feature_loss", lambda *a, **k: losses.FeatureLoss(vgg, (1, 3), (1, 1), (1, 1))
    )
    config = tiny_config(
        photos,
        "loss={kind='feature', layer_ids=[1, 3], feature_ratios=[1.0, 2.0], gram_ratios=[0.5, 0.5]}",
        "stages=[{crop=32, batch=2, epochs=1}]",
    )
    result = train(config, run_dir=tmp_path / "run", progress=False)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["loss"]
    assert len(stored["feature_weights"]) == 2 and all(w > 0 for w in stored["gram_weights"])
    assert resume_config(tmp_path / "run").loss.feature_weights == tuple(stored["feature_weights"])
    header = (tmp_path / "run" / "steps.csv").read_text().splitlines()[0]
    assert header.endswith("pixel,feat_0,feat_1,gram_0,gram_1")
    assert all(math.isfinite(v) for v in result.losses)


def test_thread_tuner_keeps_the_faster_count_and_tries_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    from decrappify.train.threads import ThreadTuner

    threads = {"n": 2}
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads["n"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads.update(n=n))
    cost = {2: 0.9, 1: 0.4}  # a busy machine: one thread is faster
    tuner = ThreadTuner([2, 1], every_seconds=3600, trial_steps=2, skip=1)
    used = []
    for _ in range(8):
        tuner.before_step()
        used.append(threads["n"])
        tuner.after_step(cost[threads["n"]])
    assert used == [2, 2, 2, 1, 1, 1, 1, 1]  # skip one, try 2 twice, 1 twice, keep 1
    tuner.every_seconds = 0.0  # time for another trial: the load has gone
    cost[2] = 0.2
    for _ in range(5):
        tuner.before_step()
        used.append(threads["n"])
        tuner.after_step(cost[threads["n"]])
    assert used[8:] == [2, 2, 1, 1, 2]
    assert not ThreadTuner([1]).enabled


def test_a_colourisation_run_keeps_the_epoch_with_the_lowest_ab_error(photos: Path, tmp_path: Path) -> None:
    """Colourisation keeps the input's luma, so PSNR_Y says little: the a*b* error picks best.safetensors."""
    config = tiny_config(
        photos,
        "data.preset=colorize",
        "model={arch='compact', scale=1, widths=[8, 8, 8], blocks=[1, 1, 1], output='sigmoid'}",
        "stages=[{crop=32, batch=2, epochs=4}]",
    )
    recorder = Recorder()
    result = train(config, run_dir=tmp_path / "run", progress=False, callbacks=[recorder])
    errors = [r.metrics["ab_error"] for r in recorder.epochs]
    assert len(errors) == 4 and result.state.best_score == min(errors)
    with (tmp_path / "run" / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["val_ab_error"]) for r in rows] == pytest.approx(errors, rel=1e-5)
    assert result.best_path is not None and result.best_path.is_file()


def test_watermark_weight_trains_on_box_masks_and_logs_the_box_psnr(photos: Path, tmp_path: Path) -> None:
    """loss.watermark_weight weights the text boxes in the loss; validation then reports PSNR inside them."""
    stages = "stages=[{crop=32, batch=2, epochs=1}]"
    model = "model={arch='compact', scale=1, widths=[8, 8, 8], blocks=[1, 1, 1]}"
    base = [model, "data.preset=restore-x1", stages, "loss.kind=l1"]
    losses = {}
    for weight in (1.0, 20.0):
        recorder = Recorder()
        config = tiny_config(photos, *base, f"loss.watermark_weight={weight}")
        train(config, run_dir=tmp_path / f"w{weight}", progress=False, callbacks=[recorder])
        losses[weight] = [loss for _, loss in recorder.steps]
        assert "psnr_watermark" in recorder.epochs[0].metrics
    assert losses[1.0][0] != pytest.approx(losses[20.0][0])  # the same first batch, weighted differently
    with (tmp_path / "w20.0" / "log.csv").open() as handle:
        assert float(next(csv.DictReader(handle))["val_psnr_watermark"]) > 5
