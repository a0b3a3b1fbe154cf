"""Self-ensemble: the views, their exact undoing, and `Restorer(ensemble=...)` averaging them tile by tile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from decrappify.ensemble import ENSEMBLES, self_ensemble, views_for
from decrappify.errors import ConfigError
from decrappify.infer import Restorer


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
    with pytest.raises(ConfigError, match="unknown ensemble 'x8'; choose one of: none, flip, dihedral"):
        views_for("x8")


@pytest.mark.parametrize("name", list(ENSEMBLES))
def test_every_view_is_undone_exactly(name: str) -> None:
    # Not square (the turns swap height and width); multiples of 1/256, so the sums of 8 are exact too.
    x = torch.randint(0, 256, (1, 3, 5, 7)) / 256
    assert torch.equal(self_ensemble(_nearest_x2, name)(x), _nearest_x2(x))


def test_the_views_are_averaged() -> None:
    x = torch.rand(1, 3, 4, 6)
    mirrored = _nearest_x2(x + torch.linspace(1, 0, 6))  # the mirror view sees the ramp reversed
    expected = (_with_ramp(x) + mirrored) / 2
    assert torch.allclose(self_ensemble(_with_ramp, "flip")(x), expected, atol=1e-6)
    assert self_ensemble(_with_ramp, "none") is _with_ramp


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
