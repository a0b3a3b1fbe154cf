"""Model files round-trip exactly; foreign and broken files fail with a WeightsError naming the file."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from decrappify import weights
from decrappify.errors import WeightsError
from decrappify.io.model_metadata import read_model_metadata
from decrappify.nn.backbones import create_backbone
from decrappify.nn.models import create_model
from decrappify.nn.state_dict import clean_state_dict
from decrappify.weights import (
    PRETRAINED,
    default_vgg16_weights,
    load_model,
    load_state_dict_file,
    load_vgg16_features,
    resolve_vgg16_weights,
    save_model,
    update_model_info,
)

CONFIG = {"arch": "compact", "scale": 2, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(CONFIG)
    with torch.no_grad():  # a non-trivial head so outputs depend on every weight
        model.head.conv.weight.normal_(0, 0.1)
    return model.eval()


def test_save_and_load_model_give_identical_outputs(tmp_path):
    model = _model()
    path = save_model(model, tmp_path / "m.safetensors", CONFIG, {"name": "tiny", "task": "sr"})
    loaded, config, info = load_model(path)
    assert config == CONFIG and info == {"name": "tiny", "task": "sr"}
    assert not loaded.training and loaded.scale == 2
    x = torch.rand(1, 3, 19, 13, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_fp16_storage_loads_back_as_fp32(tmp_path):
    model = _model()
    full = save_model(model, tmp_path / "full.safetensors", CONFIG)
    half = save_model(model, tmp_path / "half.safetensors", CONFIG, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _, _ = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=2e-3)


def test_save_model_overwrites_atomically(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(_model(), path, CONFIG, {"version": 1})
    save_model(_model(), path, CONFIG, {"version": 2})
    assert read_model_metadata(path)[1] == {"version": 2}


def test_model_info_can_be_updated_without_touching_the_weights(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(_model(), path, CONFIG, {"name": "m", "precision": "bf16"}, dtype=torch.float16)
    before = {k: v.clone() for k, v in load_model(path)[0].state_dict().items()}
    assert update_model_info(path, {"precision": "fp32", "name": None}) == {"precision": "fp32"}
    model, config, info = load_model(path)
    assert (config, info) == (CONFIG, {"precision": "fp32"})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "content", [None, b"", b"not a model at all", b"\x08\x00\x00\x00\x00\x00\x00\x00{bad"]
)
def test_missing_or_corrupt_model_file_names_the_file(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match="broken.safetensors"):
        load_model(path)


def test_safetensors_without_config_or_with_bad_config(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, plain)
    with pytest.raises(WeightsError, match="plain.safetensors: no 'decrappify.config'"):
        load_model(plain)
    bad = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, bad, metadata={"decrappify.config": json.dumps({"arch": "nope"})})
    with pytest.raises(
        WeightsError, match="bad.safetensors: stored config cannot build a model: unknown arch"
    ):
        load_model(bad)


def test_weights_that_do_not_fit_the_stored_config(tmp_path):
    path = save_model(_model(), tmp_path / "m.safetensors", dict(CONFIG, widths=[8, 8, 16]))
    with pytest.raises(WeightsError, match="m.safetensors: weights do not fit CompactUnet: shape mismatches"):
        load_model(path)


def test_pth_checkpoints_are_unwrapped_and_cleaned(tmp_path):
    state = {"module.conv.weight": torch.ones(2), "_orig_mod.bn.bias": torch.zeros(2)}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = clean_state_dict(load_state_dict_file(path))
    assert sorted(loaded) == ["bn.bias", "conv.weight"]


def test_non_weights_files_are_rejected(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="notes.pth: not a safetensors or torch weights file"):
        load_state_dict_file(text)
    other = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], other)
    with pytest.raises(WeightsError, match="list.pth: does not hold a state dict"):
        load_state_dict_file(other)
    with pytest.raises(WeightsError, match="absent.pth: weights file not found"):
        load_state_dict_file(tmp_path / "absent.pth")


def test_sha256_prefix_is_checked_on_local_files(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="does not start with 00000000"):
        load_state_dict_file(path, sha256_prefix="00000000")


def test_pretrained_registry_hashes_match_the_file_names():
    assert {"resnet18", "resnet34", "resnet50", "vgg16", "vgg16_bn", "vgg19"} <= set(PRETRAINED)
    for entry in PRETRAINED.values():
        assert entry.url.rsplit("-", 1)[-1] == f"{entry.sha256_prefix}.pth"


def test_default_vgg16_weights_come_only_from_the_environment(tmp_path, monkeypatch):
    """No folder is searched: a VGG16 file beside the working directory, as ../shared once was, is not picked up."""
    monkeypatch.delenv(weights.VGG_WEIGHTS_ENV, raising=False)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    beside = tmp_path / "shared" / "weights" / "vgg16_hed_bsds500.safetensors"
    beside.parent.mkdir(parents=True)
    beside.write_bytes(b"x")
    (work / "vgg16_hed_bsds500.safetensors").write_bytes(b"x")
    assert default_vgg16_weights() is None
    monkeypatch.setenv(weights.VGG_WEIGHTS_ENV, "")
    assert default_vgg16_weights() is None

    chosen = tmp_path / "mine.safetensors"
    chosen.write_bytes(b"x")
    monkeypatch.setenv(weights.VGG_WEIGHTS_ENV, str(chosen))
    assert default_vgg16_weights() == chosen
    monkeypatch.setenv(weights.VGG_WEIGHTS_ENV, str(tmp_path / "gone.safetensors"))
    with pytest.raises(WeightsError, match="gone.safetensors"):
        default_vgg16_weights()


def test_missing_vgg16_weights_say_what_for_and_how(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.VGG_WEIGHTS_ENV, raising=False)
    expected = "for the thing: give --flag, or set the environment variable DECRAPPIFY_VGG_WEIGHTS"
    with pytest.raises(WeightsError, match=expected):
        resolve_vgg16_weights(None, needed_for="the thing", how="--flag")
    given = tmp_path / "given.safetensors"
    assert resolve_vgg16_weights(given, needed_for="the thing", how="--flag") == given
    with pytest.raises(WeightsError, match="given.safetensors: weights file not found"):
        load_vgg16_features(given)


def test_vgg16_features_load_a_full_torchvision_file_frozen(tmp_path):
    """A whole torchvision VGG16 file (features and classifier) loads; the classifier is dropped."""
    torch.manual_seed(0)
    source = create_backbone("vgg16")
    state = {**source.state_dict(), "classifier.0.weight": torch.zeros(2, 2)}
    save_file(state, tmp_path / "vgg16.safetensors")
    vgg = load_vgg16_features(tmp_path / "vgg16.safetensors")
    assert torch.equal(vgg.features[28].weight, source.features[28].weight)
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())


def test_urls_are_cached_and_hash_checked_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    source = tmp_path / "w.pth"
    torch.save({"x": torch.arange(3.0)}, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    good = source.rename(tmp_path / f"tiny-{digest[:8]}.pth")
    loaded = load_state_dict_file(good.as_uri())  # the hash prefix comes from the file name
    assert torch.equal(loaded["x"], torch.arange(3.0))
    assert (tmp_path / "hub" / "checkpoints" / good.name).is_file()

    bad = tmp_path / "tiny-00000000.pth"
    bad.write_bytes(good.read_bytes())
    with pytest.raises(WeightsError, match="tiny-00000000.pth: download failed"):
        load_state_dict_file(bad.as_uri())
