"""The service's video jobs (upload -> job id -> poll -> download), its limits, and strength and outscale."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from decrappify.inference.video import describe_clip  # noqa: E402
from decrappify.nn.models import create_model  # noqa: E402
from decrappify.serve import ServeSettings, create_app  # noqa: E402
from decrappify.weights import save_model  # noqa: E402
from tests.video_clips import make_clip, require_av  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SCALE = 4


def make_client(model: Path, **overrides) -> TestClient:
    return TestClient(create_app(ServeSettings(models=(str(model),), device="cpu", **overrides)))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    require_av()
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=6, size=(32, 24))


def wait_for(client: TestClient, job: dict, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = client.get(job["status_url"]).json()
    return job


def test_a_video_job_from_upload_to_download(x4_model_file, clip, tmp_path):
    with make_client(x4_model_file) as client:
        video = client.get("/v1/models").json()["video"]
        assert video["max_video_seconds"] == 60 and video["max_video_frames"] == 1800
        response = client.post("/v1/jobs", files={"video": ("clip.mp4", clip.read_bytes(), "video/mp4")})
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/v1/jobs/{job['id']}" and job["frames_total"] == 6
        job = wait_for(client, job)
        assert job["status"] == "done" and job["frames_done"] == 6, job
        assert job["output"] == {"width": 32 * SCALE, "height": 24 * SCALE}
        result = client.get(job["result"]["url"])
        assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
        assert 'filename="clip-tiny-x4.mp4"' in result.headers["content-disposition"]
        (tmp_path / "out.mp4").write_bytes(result.content)
        restored, source = describe_clip(tmp_path / "out.mp4"), describe_clip(clip)
        assert restored["frames"] == source["frames"] and restored["audio"] == source["audio"]
        assert restored["size"] == "128x96"
        assert client.delete(f"/v1/jobs/{job['id']}").json()["deleted"] is True
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_video_limits_and_bad_uploads(x4_model_file, clip):
    with make_client(x4_model_file, max_video_frames=4, max_video_bytes=200_000) as client:
        too_long = client.post("/v1/jobs", files={"video": ("clip.mp4", clip.read_bytes(), "video/mp4")})
        assert too_long.status_code == 413 and "6 frames, the limit is 4" in too_long.json()["error"]
        junk = client.post("/v1/jobs", files={"video": ("clip.mp4", b"not a video at all", "video/mp4")})
        assert junk.status_code == 400 and "not a video" in junk.json()["error"]
        huge = client.post("/v1/jobs", files={"video": ("big.mp4", b"0" * 400_000, "video/mp4")})
        assert huge.status_code == 413
        assert client.get("/v1/jobs/nope").status_code == 404
        strength = client.post("/v1/jobs", data={"strength": "0.5"},
                               files={"video": ("clip.mp4", clip.read_bytes(), "video/mp4")})  # fmt: skip
        assert strength.status_code == 400 and "no pair" in strength.json()["error"]
    with make_client(x4_model_file, max_video_frames=0) as client:  # video jobs off
        assert client.get("/v1/models").json()["video"] is None
        assert client.post("/v1/jobs", files={"video": ("a.mp4", b"x", "video/mp4")}).status_code in (404, 405)


def _pair(folder: Path) -> Path:
    config = {"arch": "compact", "scale": SCALE, "widths": [8, 8, 8], "blocks": [1, 1, 1]}
    for seed, name, info in ((0, "soft", {"strength_pair": "sharp.safetensors"}), (1, "sharp", {})):
        torch.manual_seed(seed)
        save_model(create_model(config), folder / f"{name}.safetensors", config,
                   {"name": name, "task": "restore", "scale": SCALE, **info})  # fmt: skip
    return folder / "soft.safetensors"


def test_strength_and_outscale_on_pictures(tmp_path):
    client = make_client(_pair(tmp_path))
    (entry,) = client.get("/v1/models").json()["models"]
    assert entry["strength"] == {"pair": "sharp", "mode": "interpolate"}
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buffer, "PNG")
    upload = {"image": ("a.png", buffer.getvalue(), "image/png")}
    half = client.post("/v1/restore", files=upload, data={"strength": "0.5", "outscale": "2.5"})
    assert half.status_code == 200, half.text
    assert half.headers["x-decrappify-model"] == "soft+sharp@0.5"
    assert Image.open(io.BytesIO(half.content)).size == (60, 50)
    plain = client.post("/v1/restore", files=upload)
    assert plain.headers["x-decrappify-model"] == "soft" and plain.content != half.content
    assert client.post("/v1/restore", files=upload, data={"outscale": "9"}).status_code == 400
