"""The README's CLI tour, run top to bottom as written, on a fresh folder with a small `../shared` beside it.

The commands are read from the README (between `<!-- tour -->` and `<!-- /tour -->`), so the README cannot drift
from what works. Only budgets are made tiny: training commands get a tiny model and one short epoch appended
(later overrides win), the demo shows one task, and the VGG distance is left out. `../shared` holds a few crops of
the real photos under the same names, so every path in the tour is the real one.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decrappify.cli import main

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
TINY_TRAIN = [
    "model={arch='compact', scale=4, widths=[8, 8, 8], blocks=[1, 1, 1]}",
    "stages=[{crop=32, batch=2, epochs=1}]",
    "data.crops_per_image=1",
    "data.val_size=2",
    "train.time_budget_minutes=0",
    "train.threads=1",
]
#: Extra arguments per subcommand that keep the run short; they change how much is done, never what.
TINY = {"demo": ["--task", "restore-x1", "--no-perceptual"], "evaluate": ["--no-perceptual"]}


def tour_commands(readme: Path = REPO / "README.md") -> list[list[str]]:
    """The tour's commands as argument lists (continuation lines joined, comments dropped)."""
    text = readme.read_text(encoding="utf-8")
    block = text.split("<!-- tour -->", 1)[1].split("<!-- /tour -->", 1)[0]
    block = block.split("```bash", 1)[1].rsplit("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def _photo(source: Path | None, target: Path, size: tuple[int, int], seed: int) -> None:
    """A crop of the real photo when there is one, else a smooth random picture; saved as `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source is not None and source.is_file():
        with Image.open(source) as image:
            image.convert("RGB").crop((0, 0, *size)).save(target, quality=95)
        return
    rng = np.random.default_rng(seed)
    small = rng.random((size[1] // 8, size[0] // 8, 3))
    Image.fromarray(np.rint(small * 255).astype(np.uint8)).resize(size, Image.BICUBIC).save(target, quality=95)


@pytest.fixture()
def fresh_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/clone (the working folder) and tmp/shared with the tour's data, a few small pictures each."""
    clone, shared = tmp_path / "clone", tmp_path / "shared"
    clone.mkdir()
    (clone / "configs").symlink_to(REPO / "configs")  # a clone has the recipes; the tour names them from its root
    real = SHARED / "data"
    for i, name in enumerate(["100007.jpg", "100039.jpg", "100099.jpg"]):
        _photo(real / "bsds500" / "test" / name, shared / "data" / "bsds500" / "test" / name, (96, 80), i)
    for i in range(6):
        name = f"{i}.jpg"
        _photo(None, shared / "data" / "bsds500" / "train" / name, (64, 64), 10 + i)
    for i, name in enumerate(["baby.png", "bird.png"]):
        _photo(real / "benchmarks" / "Set5" / name, shared / "data" / "benchmarks" / "Set5" / name, (48, 48), 20 + i)
    (shared / "models").mkdir(parents=True)
    if (SHARED / "models" / "peers").is_dir():
        (shared / "models" / "peers").symlink_to(SHARED / "models" / "peers")
    monkeypatch.chdir(clone)
    threads = torch.get_num_threads()  # `restore --threads 2` sets torch's global pool: put it back
    yield clone
    torch.set_num_threads(threads)


def _tiny(argv: list[str], peers: bool) -> list[str]:
    command = argv[0]
    argv = argv + TINY.get(command, [])
    if command == "train" and "--config" in argv:
        argv += TINY_TRAIN
    if command == "evaluate" and not peers:
        index = argv.index("--peers")
        del argv[index : index + 2]
    return argv


def test_the_readme_tour_runs_top_to_bottom(fresh_clone: Path, capsys) -> None:
    commands = tour_commands()
    assert [argv[0] for argv in commands].count("decrappify") == len(commands)
    peers = (fresh_clone.parent / "shared" / "models" / "peers").exists()
    for argv in commands:
        args = _tiny(argv[1:], peers)
        status = main(["-q", *args])
        assert status == 0, f"{shlex.join(argv)} exited {status}: {capsys.readouterr().err}"
    clone = fresh_clone
    for made in ["demo/index.html", "pairs/manifest.json", "out/100007.png", "out/100007_sr.png",
                 "pairs/100007_fp32.png", "runs/my-sr/model.safetensors", "runs/my-sr-ddp/model.safetensors",
                 "runs/lr/lr_find.png", "set5.json", "set5-report/index.html", "my-sr.onnx",
                 "out-onnx/100007.png"]:  # fmt: skip
        assert (clone / made).is_file(), made
    table = (clone / "set5-report" / "index.html").read_text()
    assert "<td>my-sr</td>" in table and "<td>ddp</td>" in table and "<td>sr-x4</td>" in table
    # Issue 21, point 8: what a teammate or a web server reads has ordinary permissions (io/atomic.py's).
    umask = os.umask(0)
    os.umask(umask)
    for shared_file in ["demo/index.html", "set5-report/index.html", "set5.json", "runs/my-sr/model.safetensors",
                        "runs/lr/lr_find.csv", "runs/lr/lr_find.png", "out/100007.png", "my-sr.onnx"]:  # fmt: skip
        assert stat.S_IMODE((clone / shared_file).stat().st_mode) == 0o666 & ~umask, shared_file
