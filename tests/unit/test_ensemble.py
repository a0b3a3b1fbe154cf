"""Self-ensemble: the views, their exact undoing, and `Restorer(ensemble=...)` averaging them tile by tile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from decrappify.errors import ConfigError
from decrappify.inference.ensemble import ENSEMBLES, model_ensemble, self_ensemble, views_for
from decrappify.inference.restorer import Restorer


def _nearest_x2(x: torch.Tensor) -> torch.Tensor:
    """Commutes with every turn and mirror: an ensemble of it is itself."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def _with_ramp(x: torch.Tensor) -> torch.Tensor:
    """Adds a left-to-right ramp: NOT mirror-equivariant, so the views disagree."""
    ramp = torch.linspace(0, 1, x.shape[-1])
    return _nearest_x2(x + ramp)


def test_views_are_distinct_and_start_with_the_identity() -> None:
    for name, count in ENSEMBLES.items():
        views = views_for(name)
        assert len(views) == len(set(views)) == count and views[0] == (0, False)
    with pytest.raises(ConfigError, match="unknown ensemble 'x8'; choose one of: none, flip, flip4, dihedral"):
        views_for("x8")


@pytest.mark.parametrize("name", list(ENSEMBLES))
def test_every_view_is_undone_exactly(name: str) -> None:
    # Not square (the turns swap height and width); multiples of 1/256, so the sums of 8 are exact too.
    x = torch.randint(0, 256, (2, 3, 5, 7)) / 256  # a batch of two: each picture keeps its own views
    assert torch.equal(self_ensemble(_nearest_x2, name)(x), _nearest_x2(x))


def test_the_views_are_averaged() -> None:
    x = torch.rand(1, 3, 4, 6)
    mirrored = _nearest_x2(x + torch.linspace(1, 0, 6))  # the mirror view sees the ramp reversed
    expected = (_with_ramp(x) + mirrored) / 2
    assert torch.allclose(self_ensemble(_with_ramp, "flip")(x), expected, atol=1e-6)
    assert self_ensemble(_with_ramp, "none") is _with_ramp


def _with_row_pattern(x: torch.Tensor) -> torch.Tensor:
    """x4 nearest upsampling plus rows darker at phases 0-1 of every 4 than at 2-3 (restore-x4-gan's pattern)."""
    up = x.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    return up + torch.tensor([-0.5, -0.2, 0.3, 0.4]).repeat(x.shape[-2]).view(-1, 1)


def test_flip4_cancels_a_row_pattern_that_flip_keeps() -> None:
    x = torch.rand(1, 3, 5, 6)
    clean = x.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    left = self_ensemble(_with_row_pattern, "flip")(x) - clean
    assert torch.allclose(left[0, 0, :4, 0], torch.tensor([-0.5, -0.2, 0.3, 0.4]), atol=1e-6)
    # up-down views see the pattern turned over ([0.4, 0.3, -0.2, -0.5]): the average keeps only its even part
    left = self_ensemble(_with_row_pattern, "flip4")(x) - clean
    assert torch.allclose(left[0, 0, :4, 0], torch.tensor([-0.05, 0.05, 0.05, -0.05]), atol=1e-6)


def test_restorer_averages_each_tile_over_the_views(model_file: Path) -> None:
    rgb = np.random.default_rng(0).random((24, 20, 3), dtype=np.float32)
    plain = Restorer.from_pretrained(model_file, device="cpu", tile=0)
    manual = []
    for turns, mirror in views_for("dihedral"):
        view = np.rot90(rgb[:, ::-1] if mirror else rgb, turns)
        out = np.rot90(plain.restore_array(np.ascontiguousarray(view)), -turns)
        manual.append(out[:, ::-1] if mirror else out)
    ensembled = Restorer.from_pretrained(model_file, device="cpu", tile=0, ensemble="dihedral")
    got = ensembled.restore_array(rgb)
    assert got.shape == (48, 40, 3) and "ensemble='dihedral'" in repr(ensembled)
    # The restorer clamps the average, the manual one averages clamped views: equal where nothing clips.
    np.testing.assert_allclose(got, np.clip(np.mean(manual, axis=0), 0, 1), atol=2e-2)
    assert np.abs(got - plain.restore_array(rgb)).max() > 1e-4  # an untrained model is far from equivariant
    tiled = Restorer.from_pretrained(model_file, device="cpu", tile=8, tile_overlap=8, ensemble="dihedral")
    assert np.abs(tiled.restore_array(rgb) - got).max() < 0.05


def test_unknown_ensemble_is_a_config_error(model_file: Path) -> None:
    with pytest.raises(ConfigError, match="unknown ensemble"):
        Restorer.from_pretrained(model_file, device="cpu", ensemble="all")


@pytest.fixture(scope="module")
def flip_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose file asks to run as a flip ensemble, as a shipped model can."""
    from tests.conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("flip") / "tiny-flip.safetensors", ensemble="flip")


def test_the_model_file_names_the_default_and_an_option_overrides_it(flip_model_file: Path) -> None:
    assert Restorer.from_pretrained(flip_model_file, device="cpu").ensemble == "flip"
    assert Restorer.from_pretrained(flip_model_file, device="cpu", ensemble="none").ensemble == "none"
    assert model_ensemble({}) == "none"
    with pytest.raises(ConfigError, match="the model asks for an unknown ensemble 'x8'"):
        model_ensemble({"ensemble": "x8"})


def test_evaluate_names_rows_that_differ_from_the_models_own(flip_model_file: Path) -> None:
    from decrappify.evaluation.methods import ModelMethod

    assert ModelMethod(flip_model_file, 2).name == "tiny-flip"
    assert ModelMethod(flip_model_file, 2, ensemble="none").name == "tiny-flip (no ensemble)"
    assert ModelMethod(flip_model_file, 2, ensemble="dihedral").name == "tiny-flip +dihedral"


def test_benchmark_times_the_models_own_ensemble_and_counts_every_view(flip_model_file: Path) -> None:
    from decrappify.inference.benchmark import benchmark
    from decrappify.weights import load_model

    model, config, info = load_model(flip_model_file)
    common = {"config": config, "info": info, "sizes": [(32, 24)], "backends": ("torch",),
              "variants": ("fp32",), "repeats": 1, "warmup": 0, "peak_matmul_size": 64}  # fmt: skip
    own = benchmark(model, **common)
    plain = benchmark(model, **common, ensemble="none")
    assert own.ensemble == "flip" and own.gflops_per_mp == pytest.approx(2 * plain.gflops_per_mp)
    assert "as a flip self-ensemble of 2 views" in own.to_markdown()
    assert "self-ensemble" not in plain.to_markdown()


def test_models_lists_the_ensemble_a_file_runs_as(flip_model_file: Path, capsys, monkeypatch) -> None:
    from decrappify.cli import main

    monkeypatch.setattr("decrappify.inference.zoo.MODELS_DIR", flip_model_file.parent)
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny-flip |"))
    assert row.split(" | ")[5] == "flip self-ensemble"  # after name, what it does, task, scale, size
