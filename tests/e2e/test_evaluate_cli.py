"""`decrappify evaluate` end to end: table on stdout, JSON and report files, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decrappify.cli import main
from decrappify.evaluation.quality import brisque_available

PEERS = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "peers"


@pytest.fixture
def clean_dir(tmp_path: Path) -> Path:
    """Three small noisy-gradient images (40x36 and around)."""
    rng = np.random.default_rng(3)
    root = tmp_path / "clean"
    root.mkdir()
    for i, (w, h) in enumerate([(40, 36), (44, 36), (40, 41)]):
        y, x = np.mgrid[0:h, 0:w] / 40.0
        rgb = np.stack([x, y, (x + y) / 2], axis=-1) + rng.normal(0, 0.05, (h, w, 3))
        Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(root / f"img{i}.png")
    return root


def test_evaluate_writes_table_json_and_report(clean_dir: Path, tmp_path: Path, capsys) -> None:
    out_json, report = tmp_path / "scores.json", tmp_path / "report"
    code = main(["-q", "evaluate", str(clean_dir), "--task", "sr-x4", "--model", "bicubic", "--json", str(out_json),
                 "--report", str(report)])  # fmt: skip
    assert code == 0
    stdout = capsys.readouterr().out
    assert "sr-x4 on clean: 3 images, x4" in stdout and "| bicubic | " in stdout
    data = json.loads(out_json.read_text())
    truth = {"truth"} if brisque_available() else set()  # the truth's BRISQUE, when its optional package is there
    assert set(data) == {"task", "dataset", "scale", "results", "images", *truth} and data["scale"] == 4
    assert [row["method"] for row in data["results"]] == ["bicubic"]
    assert (report / "index.html").is_file() and len(list(report.glob("*.png"))) == 3 * 3


def test_a_broken_image_is_skipped_with_exit_1(clean_dir: Path, tmp_path: Path, capsys) -> None:
    (clean_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code = main(["evaluate", str(clean_dir), "--task", "restore-x1", "--json", str(tmp_path / "s.json")])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.jpg" in captured.err and "| input | " in captured.out
    assert json.loads((tmp_path / "s.json").read_text())["scale"] == 1


def test_unknown_task_is_a_usage_error(clean_dir: Path, capsys) -> None:
    assert main(["evaluate", str(clean_dir), "--task", "deblur"]) == 2
    err = capsys.readouterr().err
    assert "decrappify evaluate: error: unknown task 'deblur'" in err and "sr-x4" in err


def test_empty_folder_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path), "--task", "sr-x4"]) == 1
    assert "no images found" in capsys.readouterr().err


def test_peers_add_rows(clean_dir: Path, tmp_path: Path, capsys) -> None:
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn_superres") or not (PEERS / "ESPCN_x4.pb").is_file():
        pytest.skip(f"needs opencv-contrib and {PEERS / 'ESPCN_x4.pb'}")
    peers = tmp_path / "peers"
    peers.mkdir()
    (peers / "ESPCN_x4.pb").symlink_to(PEERS / "ESPCN_x4.pb")
    assert main(["-q", "evaluate", str(clean_dir), "--task", "sr-x4", "--peers", str(peers)]) == 0
    assert "| ESPCN (opencv) | " in capsys.readouterr().out


def test_ensemble_rows_are_named_and_scored(clean_dir: Path, x4_model_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.json"
    args = ["-q", "evaluate", str(clean_dir), "--task", "sr-x4", "--model", str(x4_model_file), "--no-perceptual"]
    assert main([*args, "--ensemble", "dihedral", "--json", str(out)]) == 0
    assert "| tiny-x4 +dihedral | " in capsys.readouterr().out
    methods = [row["method"] for row in json.loads(out.read_text())["results"]]
    assert methods == ["bicubic", "tiny-x4 +dihedral"]
