"""`run_demo`: each shipped model on its own task, restore-x4 first, one main page; bicubic alone without models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from decrappify.cli import main
from decrappify.errors import ConfigError
from decrappify.evaluation import demo as demo_module
from decrappify.evaluation.demo import run_demo
from decrappify.inference import zoo
from decrappify.nn import create_model
from decrappify.weights import save_model

TINY_X4 = {"arch": "compact", "scale": 4, "widths": [8, 8, 8], "blocks": [1, 1, 1]}
TINY_X1 = {"arch": "compact", "scale": 1, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


def save_tiny_model(path: Path, config: dict, **info) -> Path:
    """An untrained, seeded model file whose metadata names its task (what `zoo.list_models` reads)."""
    torch.manual_seed(0)
    return save_model(create_model(config), path, config, {"name": path.stem, **info})


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny x4 and a tiny x1 model; named so that sorting by name would put the x1 one first."""
    folder = tmp_path_factory.mktemp("shipped")
    save_tiny_model(folder / "tiny-restore-x4.safetensors", TINY_X4, task="restore-x4", scale=4)
    save_tiny_model(folder / "tiny-restore-x1.safetensors", TINY_X1, task="restore-x1", scale=1,
                    description="a same-size test model")  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def shown(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> demo_module.DemoResult:
    out = tmp_path_factory.mktemp("demo")
    (out / "000-00-input.png").write_bytes(b"a crop an older, single-report demo left here")
    return run_demo(out, models_dir=models_dir, perceptual=False, peer=False)


def test_every_shipped_task_is_shown_restore_x4_first(shown: demo_module.DemoResult) -> None:
    assert [item.task for item in shown.tasks] == ["restore-x4", "restore-x1"]
    assert [item.result.methods for item in shown.tasks] == [
        ["bicubic", "tiny-restore-x4"],
        ["input", "tiny-restore-x1"],
    ]
    assert [item.heading for item in shown.tasks] == [
        "restore-x4: model tiny-restore-x4 vs bicubic",
        "restore-x1: model tiny-restore-x1 vs input",
    ]


@pytest.mark.skipif(not demo_module.peer_installed(), reason="Real-ESRGAN's weights: decrappify[bench]")
def test_restore_x4_shows_real_esrgan_beside_our_models(models_dir: Path, tmp_path: Path) -> None:
    shown = run_demo(tmp_path / "out", tasks=["restore-x4", "restore-x1"], models_dir=models_dir,
                     perceptual=False)  # fmt: skip
    assert [item.result.methods for item in shown.tasks] == [
        ["bicubic", "tiny-restore-x4", "Real-ESRGAN x4plus"],
        ["input", "tiny-restore-x1"],
    ]
    assert "Real-ESRGAN x4plus" in (tmp_path / "out" / "restore-x4" / "index.html").read_text()


def test_main_page_links_and_embeds_every_task(shown: demo_module.DemoResult) -> None:
    out = shown.page.parent
    assert shown.page == out / "index.html"
    page = shown.page.read_text(encoding="utf-8")
    for task in ("restore-x4", "restore-x1"):
        assert (out / task / "index.html").is_file()
        assert f'href="{task}/index.html"' in page
    assert page.index("restore-x4: model tiny-restore-x4") < page.index("restore-x1: model tiny-restore-x1")
    assert "<td>tiny-restore-x4</td>" in page and "<td>tiny-restore-x1</td>" in page  # the summary tables
    assert "a same-size test model" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 * 4 * 4  # two tasks, four photos, input / baseline / model / truth
    assert all((out / src).is_file() for src in sources)
    for caption in ("input (1/4 size)", "bicubic", "tiny-restore-x4", "input", "truth"):
        assert f'alt="{caption}"' in page
    assert not (out / "000-00-input.png").exists()  # stale crops from an earlier page are gone


def test_without_shipped_models_shows_bicubic_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    shown = run_demo(tmp_path / "out", models_dir=empty, perceptual=False)
    assert [(item.task, item.result.methods) for item in shown.tasks] == [("restore-x4", ["bicubic"])]
    assert "no shipped model" in shown.tasks[0].heading
    assert "no shipped model" in shown.page.read_text(encoding="utf-8")
    assert "no shipped model is installed" in caplog.text


def test_chosen_tasks_keep_their_order_and_models(models_dir: Path, tmp_path: Path) -> None:
    shown = run_demo(
        tmp_path, tasks=["sr-x4", "restore-x1", "sr-x4"], models_dir=models_dir, perceptual=False
    )
    assert [(item.task, item.result.methods) for item in shown.tasks] == [
        ("sr-x4", ["bicubic"]),
        ("restore-x1", ["input", "tiny-restore-x1"]),
    ]
    with pytest.raises(ConfigError, match="choose one of"):
        run_demo(tmp_path, tasks=["restore-x3"], models_dir=models_dir)


@pytest.mark.parametrize(
    ("perceptual", "expected"), [(None, [None, False]), (True, [True, True]), (False, [False, False])]
)
def test_vgg_distance_only_on_the_first_task_by_default(
    perceptual: bool | None, expected: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The VGG distance is the slow part: by default only the first task pays for it."""
    asked, real_evaluate = [], demo_module.evaluate

    def recording_evaluate(*args, perceptual=None, **kwargs):
        asked.append(perceptual)
        return real_evaluate(*args, perceptual=False, **kwargs)

    monkeypatch.setattr(demo_module, "evaluate", recording_evaluate)
    empty = tmp_path / "none"
    empty.mkdir()
    run_demo(tmp_path / "out", tasks=["restore-x4", "restore-x1"], models_dir=empty, perceptual=perceptual)
    assert asked == expected


def test_cli_prints_a_headed_table_per_task_and_the_page(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(zoo, "MODELS_DIR", models_dir)
    assert main(["-q", "demo", "-o", str(tmp_path), "--task", "restore-x1", "--no-perceptual"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        "## restore-x1: model tiny-restore-x1 vs input\n\nrestore-x1 on scikit-image-samples"
    )
    assert "| tiny-restore-x1 |" in printed and "restore-x4" not in printed
    assert re.search(rf"Page: {re.escape(str(tmp_path / 'index.html'))}  \(\d+\.\d s\)", printed)
