"""tools/deepen_model.py: the deeper model computes exactly what the trained one did, and refuses bad requests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from decrappify.nn import create_model
from decrappify.weights import load_model, save_model

TOOL = Path(__file__).resolve().parents[2] / "tools" / "deepen_model.py"
CONFIG = {"arch": "compact", "scale": 2, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, check=False
    )


def _trained(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model(CONFIG)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # not the fresh init: every weight matters
    return save_model(model, tmp_path / "small.safetensors", CONFIG)


def test_the_deeper_model_gives_the_same_output(tmp_path: Path) -> None:
    source, out = _trained(tmp_path), tmp_path / "deep.safetensors"
    result = _run(source, "--blocks", 3, 2, 1, "-o", out)
    assert result.returncode == 0, result.stderr
    small, _, _ = load_model(source)
    deep, config, info = load_model(out)
    assert config["blocks"] == [3, 2, 1] and "deepened_from" in info
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in small.parameters())
    x = torch.rand(1, 3, 21, 18)
    with torch.no_grad():
        assert torch.equal(small(x), deep(x))


def test_it_refuses_to_shrink_or_overwrite(tmp_path: Path) -> None:
    source = _trained(tmp_path)
    shrink = _run(source, "--blocks", 0, 1, 1, "-o", tmp_path / "x.safetensors")
    assert shrink.returncode != 0 and "at least the current [1, 1, 1]" in shrink.stderr
    before = source.read_bytes()
    overwrite = _run(source, "--blocks", 2, 1, 1, "-o", source)
    assert overwrite.returncode != 0 and "already exists" in overwrite.stderr
    assert source.read_bytes() == before
