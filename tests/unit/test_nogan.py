"""NoGAN: the four stages run, each resumes where it stopped (same result as an uninterrupted run), the switcher
alternates as fastai's, and a non-finite loss stops a stage with its checkpoint intact."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from decrappify.errors import ConfigError, TrainingError
from decrappify.train import Callback, gan_generated, resume_config, train
from decrappify.train.config import config_from_dict
from decrappify.train.gan import STATE_FILE, AdaptiveSwitcher
from decrappify.train.trainer import TrainResult
from decrappify.weights import load_model

THRESHOLD = 0.65


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 96x96 colourful pictures with edges and noise."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:96] / 96.0
    for i in range(6):
        rgb = np.stack([x, y, 0.5 + 0.4 * np.sin(8 * x * y + i)], axis=-1)
        rgb[20 + i * 5 : 50, 30:70] = rng.uniform(0, 1, 3)
        rgb += rng.normal(0, 0.04, rgb.shape)
        Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(root / f"p{i}.png")
    return root


def _config(photos: Path, **gan):
    data = {
        "name": "tiny-gan",
        "seed": 3,
        "model": {"arch": "compact", "scale": 4, "widths": [8, 8, 8], "blocks": [1, 1, 1]},
        "data": {"preset": "sr-x4", "paths": [str(photos)], "val_size": 1, "augment": "hflip"},
        "loss": {"kind": "l1"},
        "optim": {"lr": 1e-3},
        "stages": [{"crop": 32, "batch": 2, "epochs": 1}],
        "train": {
            "checkpoint_steps": 1,
            "checkpoint_minutes": 0,
            "samples": 1,
            "device": "cpu",
            "threads": 1,
        },
        "gan": {
            "enabled": True,
            "critic": {"arch": "patch", "width": 8},
            "crop": 64,
            "batch": 2,
            "critic_steps": 4,
            "critic_lr": 2e-3,
            "steps": 8,
            "lr": 1e-3,
            "checkpoint_steps": 2,
            **gan,
        },
    }
    return config_from_dict(data)


def _run(config, run_dir: Path, *, resume: bool = False, callbacks=()):
    return train(config, run_dir=run_dir, resume=resume, progress=False, callbacks=callbacks)


@pytest.fixture(scope="module")
def reference_result(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """An uninterrupted run."""
    return _run(_config(photos), tmp_path_factory.mktemp("runs") / "reference")


@pytest.fixture(scope="module")
def reference(reference_result: TrainResult) -> Path:
    return reference_result.run_dir


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_all_four_stages_leave_their_results(reference: Path) -> None:
    summary = json.loads((reference / STATE_FILE).read_text())
    assert list(summary["stages"]) == ["generator", "generate", "critic", "gan"]
    assert len(list((reference / "generated").glob("*.png"))) == summary["stages"]["generate"]["count"] == 5
    accuracy = summary["stages"]["critic"]["heldout_accuracy"]
    assert 0.0 <= accuracy <= 1.0 and (reference / "critic" / "critic.safetensors").is_file()
    snapshots = sorted(p.name for p in (reference / "gan" / "snapshots").glob("*.safetensors"))
    assert snapshots == [f"step{s:06d}.safetensors" for s in (2, 4, 6, 8)]
    rows = _rows(reference / "gan" / "log.csv")
    assert [r["snapshot"] for r in rows] == ["", *snapshots]  # row 0: the pretrained generator
    _model, config, info = load_model(reference / "model.safetensors")
    assert config["arch"] == "compact" and info["gan"]["iterations"] == 8
    assert info["gan"]["generator_steps"] + info["gan"]["critic_steps"] == 8


def test_the_snapshot_nearest_the_truth_on_held_out_images_is_kept_as_best(reference: Path) -> None:
    rows = _rows(reference / "gan" / "log.csv")
    distances = {r["snapshot"]: float(r["val_vgg_dist"]) for r in rows}
    assert all(d > 0 for d in distances.values())
    nearest = min((name for name in distances if name), key=distances.get)
    best = json.loads((reference / STATE_FILE).read_text())["stages"]["gan"]["best"]
    assert best["snapshot"] == nearest and best["heldout_vgg_dist"] == pytest.approx(
        distances[nearest], rel=1e-5
    )
    assert best["generator_heldout_vgg_dist"] == pytest.approx(distances[""], rel=1e-5)
    kept, snapshot = (
        load_file(reference / "best.safetensors"),
        load_file(reference / "gan" / "snapshots" / nearest),
    )
    assert all(torch.equal(kept[k], snapshot[k]) for k in snapshot)


def test_the_result_names_the_files_the_run_wrote(reference_result: TrainResult) -> None:
    run_dir = reference_result.run_dir
    assert reference_result.model_path == run_dir / "model.safetensors"
    picked = json.loads((run_dir / STATE_FILE).read_text())["stages"]["gan"]["best"]  # None without VGG weights
    assert reference_result.best_path == (run_dir / "best.safetensors" if picked else None)
    assert reference_result.best_path is None or reference_result.best_path.is_file()
    again = _run(resume_config(run_dir), run_dir, resume=True)  # finished: nothing to do, the same files
    assert (again.model_path, again.best_path) == (reference_result.model_path, reference_result.best_path)


def test_the_switcher_alternates_as_fastai() -> None:
    switcher = AdaptiveSwitcher(critic_threshold=THRESHOLD)
    assert not switcher.generator_mode  # the critic goes first
    modes = [switcher.update(loss) for loss in (0.9, 0.7, 0.6, 5.0, 0.66, 0.64, 0.1)]
    # critic 0.9, 0.7 (stay), 0.6 (< 0.65: hand over), generator (one batch), critic 0.66 (stay), 0.64 (hand over)
    assert modes == [False, False, True, False, False, True, False]
    gated = AdaptiveSwitcher(critic_threshold=THRESHOLD, generator_threshold=1.0, generator_mode=True)
    assert [gated.update(loss) for loss in (2.0, 1.5, 0.5)] == [True, True, False]


def test_the_gan_loop_follows_the_switcher(reference: Path) -> None:
    rows = _rows(reference / "gan" / "steps.csv")
    assert len(rows) == 8 and rows[0]["mode"] == "critic"
    for row, following in itertools.pairwise(rows):
        if row["mode"] == "generator":
            assert following["mode"] == "critic"  # one generator batch at a time
        else:  # the critic keeps the batch stream until its loss falls below the threshold
            assert following["mode"] == ("generator" if float(row["loss"]) < THRESHOLD else "critic")


class CrashAt(Callback):
    """Raises once, after step `step` of NoGAN stage `stage` (0-3; the Trainer's stage 0 is NoGAN stage 0)."""

    def __init__(self, stage: int, step: int):
        self.stage, self.step = stage, step

    def on_step(self, record) -> None:
        if (record.stage, record.step) == (self.stage, self.step):
            raise RuntimeError(f"crash at stage {self.stage} step {self.step}")


def test_every_stage_resumes_where_it_stopped(photos, reference, tmp_path, monkeypatch) -> None:
    run_dir, config = tmp_path / "run", _config(photos)
    with pytest.raises(RuntimeError, match="stage 0"):
        _run(config, run_dir, callbacks=[CrashAt(0, 1)])  # generator pretraining, after its 1st step
    real_save = gan_generated.save_png
    calls = []

    def flaky_save(image, path):
        calls.append(path.name)
        if len(calls) == 3:
            raise RuntimeError("crash while generating")
        return real_save(image, path)

    monkeypatch.setattr(gan_generated, "save_png", flaky_save)
    with pytest.raises(RuntimeError, match="generating"):
        _run(resume_config(run_dir), run_dir, resume=True)
    assert len(list((run_dir / "generated").glob("*.png"))) == 2
    with pytest.raises(RuntimeError, match="stage 2"):
        _run(resume_config(run_dir), run_dir, resume=True, callbacks=[CrashAt(2, 3)])  # critic, after step 3
    assert calls[3:] == ["00002.png", "00003.png", "00004.png"]  # only the missing pictures were made again
    with pytest.raises(RuntimeError, match="stage 3"):
        _run(resume_config(run_dir), run_dir, resume=True, callbacks=[CrashAt(3, 5)])  # GAN, after step 5
    assert (run_dir / "gan" / "checkpoints" / "last").is_dir() and not (
        run_dir / "model.safetensors"
    ).exists()
    _run(resume_config(run_dir), run_dir, resume=True)
    for name in ("generator/model.safetensors", "critic/critic.safetensors", "model.safetensors"):
        resumed, uninterrupted = load_file(run_dir / name), load_file(reference / name)
        assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted), name
    assert _rows(run_dir / "gan" / "steps.csv") == _rows(reference / "gan" / "steps.csv")


def test_a_non_finite_loss_stops_the_stage_and_keeps_its_checkpoint(photos, tmp_path) -> None:
    run_dir = tmp_path / "run"
    config = _config(photos)
    config = config_from_dict(
        {**config.to_dict(), "train": {**config.to_dict()["train"], "debug_nan_step": 3}}
    )
    with pytest.raises(TrainingError, match="non-finite critic loss at NoGAN critic step 3.*step 2"):
        _run(config, run_dir)
    summary = json.loads((run_dir / STATE_FILE).read_text())
    assert "critic" not in summary["stages"] and (run_dir / "critic" / "checkpoints" / "last").is_dir()
    stale = run_dir / "critic" / "checkpoints" / ".last.0123abcd.tmp"  # a save killed half-way
    stale.mkdir()
    (stale / "optim.pt").write_bytes(b"half")
    result = _run(resume_config(run_dir, ["train.debug_nan_step=0"]), run_dir, resume=True)
    assert result.model_path.is_file() and not stale.exists()


def test_gan_config_is_checked(photos) -> None:
    with pytest.raises(ConfigError, match="gan.critic_threshold"):
        _config(photos, critic_threshold=0.0)
    with pytest.raises(ConfigError, match="unknown key 'lamda'"):
        _config(photos, lamda=1.0)
    with pytest.raises(ConfigError, match="gan.crop"):
        _config(photos, crop=30)


class CtrlCAt(Callback):
    """Sends SIGINT to this process after step `step` of NoGAN stage `stage`, as Ctrl-C would."""

    def __init__(self, stage: int, step: int):
        self.stage, self.step = stage, step

    def on_step(self, record) -> None:
        if (record.stage, record.step) == (self.stage, self.step):
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_a_checkpoint_at_once_and_resume_finishes(photos, tmp_path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(_config(photos), run_dir, callbacks=[CtrlCAt(2, 1)])  # critic pretraining, after step 1
    checkpoint = json.loads((run_dir / "critic" / "checkpoints" / "last" / "state.json").read_text())
    assert checkpoint["state"]["step"] == 1  # saved at the interrupted step, not at the next multiple of 2
    assert _run(resume_config(run_dir), run_dir, resume=True).model_path.is_file()


def test_generation_stops_between_pictures_when_asked(photos, tmp_path) -> None:
    from decrappify.data.degrade import create_preset
    from decrappify.data.pairs import ImageStore
    from decrappify.nn import create_model

    model = create_model({"arch": "compact", "scale": 4, "widths": [8, 8, 8], "blocks": [0, 0, 0]})
    store = ImageStore(sorted(photos.glob("*.png"))[:4])
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) > 2

    with pytest.raises(KeyboardInterrupt):
        gan_generated.generate_outputs(model, store, create_preset("sr-x4"), tmp_path, seed=0,
                                       device=torch.device("cpu"), stop=stop)  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["00000.png", "00001.png"]
