"""Colourisation as classification over a*b* bins: CIELAB in torch, the bins, soft targets, rebalancing, the
annealed mean, the `ab-unet` model's two outputs, its loss, its config checks, and a run through the trainer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from skimage.color import lab2rgb, rgb2lab

from decrappify.errors import ConfigError
from decrappify.evaluation.metrics import ab_error
from decrappify.inference.restorer import Restorer, luma
from decrappify.nn import ab_bins
from decrappify.nn.models import create_model, training_output
from decrappify.train import train
from decrappify.train.config import load_config
from decrappify.train.losses import AbClassificationLoss, ab_prior
from decrappify.weights import load_model, save_model

#: a small ab-unet for tests: a ResNet-18 encoder 4 channels wide (EfficientNet-Lite0 has one width only)
TINY = {"arch": "ab-unet", "encoder": "resnet18", "encoder_width": 4}


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------------ colour maths


def test_cielab_in_torch_matches_scikit_image_both_ways():
    rgb = data.astronaut()[::8, ::8].astype(np.float32) / 255.0
    lab = ab_bins.rgb_to_lab(_tensor(rgb))
    assert np.abs(_array(lab) - rgb2lab(rgb)).max() < 1e-3
    assert np.abs(_array(ab_bins.lab_to_rgb(lab)) - rgb).max() < 1e-5
    reference = rgb2lab(rgb)
    assert np.abs(_array(ab_bins.lab_to_rgb(_tensor(reference))) - lab2rgb(reference)).max() < 1e-5


def test_bins_cover_the_srgb_gamut_on_a_10_unit_grid():
    centres = ab_bins.ab_bin_centres()
    assert centres.shape == (261, 2)
    assert torch.all(torch.remainder(centres, 10) == 0) and not torch.signbit(centres).logical_and(centres == 0).any()
    assert [0.0, 0.0] in centres.tolist()
    # every colour of a photo is within half a diagonal of some bin
    ab = ab_bins.rgb_to_lab(_tensor(data.coffee()[::8, ::8] / 255.0))[0, 1:].reshape(2, -1).t()
    assert torch.cdist(ab, centres).min(dim=1).values.max() <= 5 * math.sqrt(2) + 1e-4


def test_soft_targets_are_the_nearest_bins_with_gaussian_weights():
    centres = ab_bins.ab_bin_centres()
    ab = torch.tensor([[0.0, 0.0], [23.0, -41.0]])
    indices, weights = ab_bins.soft_encode(ab, centres)
    assert indices.shape == weights.shape == (2, 5)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2))
    assert centres[indices[0, 0]].tolist() == [0.0, 0.0] and centres[indices[1, 0]].tolist() == [20.0, -40.0]
    assert torch.all(weights[:, :-1] >= weights[:, 1:])  # nearest first
    # sigma 5: a bin 10 units away weighs exp(-100 / 50) of the centre's
    assert weights[0, 1] / weights[0, 0] == pytest.approx(math.exp(-2.0), rel=1e-4)


def test_rebalancing_favours_rare_colours_and_keeps_the_mean_at_one():
    centres = ab_bins.ab_bin_centres()
    counts = torch.ones(len(centres), dtype=torch.float64)
    grey = int(((centres == 0).all(dim=1)).nonzero())
    counts[grey] = 1e4  # grey everywhere: the common colour
    weights = ab_bins.rebalance_weights(counts, centres, rebalance=0.5)
    assert weights[grey] < 0.2 < 1 < weights.max()
    prior = counts / counts.sum()
    kernel = torch.exp(-torch.cdist(centres, centres).double().square() / 50.0)
    smoothed = kernel @ prior
    assert float((smoothed / smoothed.sum() * weights.double()).sum()) == pytest.approx(1.0, rel=1e-5)
    flat = ab_bins.rebalance_weights(counts, centres, rebalance=1.0)  # lambda 1: no rebalancing
    assert torch.allclose(flat, torch.ones_like(flat), atol=1e-5)


def test_annealed_mean_goes_from_the_mean_to_the_mode():
    centres = torch.tensor([[0.0, 0.0], [60.0, 0.0], [0.0, 60.0]])
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).view(1, 3, 1, 1)
    mean = ab_bins.annealed_mean(logits, centres, temperature=1.0)[0, :, 0, 0]
    assert mean.tolist() == pytest.approx([18.0, 12.0], abs=1e-4)
    sharper = ab_bins.annealed_mean(logits, centres, temperature=0.38)[0, :, 0, 0]
    mode = ab_bins.annealed_mean(logits, centres, temperature=0.01)[0, :, 0, 0]
    assert mode.tolist() == pytest.approx([0.0, 0.0], abs=1e-3)
    assert 0 < sharper[0] < mean[0]


# ------------------------------------------------------------------------------------------------ the model


def test_model_gives_logits_in_training_and_rgb_on_the_input_lightness_in_eval():
    torch.manual_seed(0)
    model = create_model(TINY)
    assert training_output(model) == "ab_logits" and training_output({"arch": "compact"}) == "rgb"
    grey = np.repeat(luma(data.chelsea()[::8, ::8] / 255.0)[..., None], 3, axis=2)  # 38 x 57, off the stride grid
    logits = model.train()(_tensor(grey))
    assert logits.shape == (1, model.num_bins, 10, 15)  # ceil(38 / 4), ceil(57 / 4)
    with torch.no_grad():
        rgb = model.eval()(_tensor(grey))
    assert rgb.shape == (1, 3, 38, 57) and rgb.min() >= 0 and rgb.max() <= 1
    lightness = rgb2lab(_array(rgb).astype(np.float64))[..., 0]
    # the colour is put on the input's L* (exactly, but where the colour leaves sRGB at that lightness and is clipped)
    assert np.mean(np.abs(lightness - rgb2lab(grey)[..., 0]) < 1e-3) > 0.9


def test_eval_output_is_the_annealed_mean_of_the_logits():
    torch.manual_seed(0)
    model = create_model(dict(TINY, temperature=0.5)).eval()
    grey = torch.full((1, 3, 32, 40), 0.5)  # L* 53.4, where a*b* (60, 50) is inside sRGB
    with torch.no_grad():
        logits = model.logits(grey)
        logits[:, :] = -10.0
        red = int(torch.cdist(torch.tensor([[60.0, 50.0]]), model.bin_centres).argmin())
        logits[:, red] = 10.0  # every pixel sure of one reddish bin
        rgb = model.colourise(grey, logits)
    lab = rgb2lab(_array(rgb).astype(np.float64))
    assert np.abs(lab[..., 1:] - model.bin_centres[red].numpy()).max() < 0.01
    assert np.abs(lab[..., 0] - rgb2lab(np.full((1, 1, 3), 0.5))[0, 0, 0]).max() < 0.01


def test_model_file_round_trip_keeps_bins_and_temperature(tmp_path: Path):
    torch.manual_seed(0)
    config = dict(TINY, temperature=0.3)
    model = create_model(config)
    path = save_model(model, tmp_path / "ab.safetensors", config, {"task": "colorize"}, dtype=torch.float16)
    loaded, stored, _ = load_model(path)
    assert stored == config and loaded.temperature == 0.3
    assert torch.equal(loaded.bin_centres, model.bin_centres)
    with pytest.raises(ConfigError, match="temperature must be a number from 0.01 to 10"):
        create_model(dict(TINY, temperature=0))
    with pytest.raises(ConfigError, match="out_stride must be one of 2, 4, 8"):
        create_model(dict(TINY, out_stride=3))


def test_bf16_autocast_forward_keeps_colour_arithmetic_in_fp32():
    torch.manual_seed(0)
    model = create_model(TINY).eval()
    grey = torch.rand(1, 1, 32, 32).expand(1, 3, 32, 32)
    with torch.no_grad():
        reference = model(grey)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(grey)
    assert bf16.dtype == torch.float32 and (bf16 - reference).abs().max() < 0.05


# ------------------------------------------------------------------------------------------------ the loss


def test_loss_prefers_the_true_colour_and_weights_rare_colours():
    centres = ab_bins.ab_bin_centres()
    hq = torch.zeros(1, 3, 8, 8)
    hq[0, 0] = 0.8  # red
    hq[0, 1:] = 0.2
    true_ab = ab_bins.rgb_to_lab(hq)[0, 1:, 0, 0]
    nearest = int(torch.cdist(true_ab[None], centres).argmin())
    uniform = torch.zeros(1, len(centres), 2, 2)
    confident = uniform.clone()
    confident[:, nearest] = 8.0
    loss = AbClassificationLoss(centres, torch.ones(len(centres)))
    total, terms = loss(confident, hq)
    assert total < loss(uniform, hq)[0] and set(terms) == {"ce"}
    assert loss(uniform, hq)[0] == pytest.approx(math.log(len(centres)), rel=1e-5)
    weights = torch.ones(len(centres))
    weights[nearest] = 3.0
    assert AbClassificationLoss(centres, weights)(uniform, hq)[0] == pytest.approx(3 * math.log(len(centres)))
    with pytest.raises(ConfigError, match="needs 261 bin logits per pixel"):
        loss(torch.zeros(1, 3, 8, 8), hq)


def test_prior_counts_the_training_colours_by_bin():
    centres = ab_bins.ab_bin_centres()
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 200
    counts = ab_prior([red, np.full((8, 8, 3), 128, np.uint8)], centres, shrink=4)
    assert counts.sum() == 8  # two 2 x 2 pictures after shrinking
    grey = int(((centres == 0).all(dim=1)).nonzero())
    assert counts[grey] == 4 and counts.max() == 4


# ------------------------------------------------------------------------------------------------ training


def test_config_pairs_the_model_with_its_loss():
    base = ["data.preset=colorize", "model={arch='ab-unet', encoder='resnet18', encoder_width=4}"]
    load_config(None, [*base, "loss.kind=ab_classification"])
    with pytest.raises(ConfigError, match="an 'ab-unet' model trains with loss.kind 'ab_classification'"):
        load_config(None, [*base, "loss.kind=l1"])
    with pytest.raises(ConfigError, match="that loss needs an 'ab-unet' model"):
        load_config(None, ["data.preset=colorize", "model={arch='compact', scale=1}", "loss.kind=ab_classification"])
    with pytest.raises(ConfigError, match="an 'ab-unet' model colourises"):
        load_config(None, ["model={arch='ab-unet'}", "loss.kind=ab_classification"])
    with pytest.raises(ConfigError, match="NoGAN trains picture models"):
        load_config(None, [*base, "loss.kind=ab_classification", "gan.enabled=true"])


def test_configs_colorize_effnet_recipe_is_valid():
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "colorize-effnet.toml")
    assert config.model["arch"] == "ab-unet" and config.model["encoder"] == "efficientnet-lite0"
    assert config.init.encoder_weights == "efficientnet-lite0" and config.loss.kind == "ab_classification"
    assert config.stages[0].freeze_encoder and not config.stages[1].freeze_encoder


@pytest.fixture(scope="module")
def colour_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colour")
    for i, name in enumerate(("chelsea", "coffee", "astronaut", "rocket", "chelsea", "coffee")):
        image = Image.fromarray(getattr(data, name)()).resize((64, 48), Image.Resampling.BOX)
        image.rotate(90 * (i // 4)).save(root / f"{i}.png")
    return root


def test_a_run_trains_on_logits_validates_on_rgb_and_restores(colour_photos: Path, tmp_path: Path):
    config = load_config(None, [
        "data.preset=colorize", f"data.paths=['{colour_photos}']", "data.val_size=2",
        "model={arch='ab-unet', encoder='resnet18', encoder_width=4}", "loss.kind=ab_classification",
        "stages=[{crop=32, batch=2, epochs=1, freeze_encoder=true}, {crop=32, batch=2, epochs=1}]",
        "train.threads=1", "train.precision=bf16", "train.log_every=1",
    ])  # fmt: skip
    result = train(config, run_dir=tmp_path / "run", progress=False)
    assert all(math.isfinite(loss) for loss in result.losses) and len(result.losses) == 4
    assert 0 < result.state.best_score < 100  # the a*b* error of the eval-mode (RGB) output
    restorer = Restorer.from_pretrained(result.model_path, precision="fp32")
    assert restorer.task == "colorize"
    sepia = data.coffee()[::8, ::8].astype(np.float32) / 255.0 * np.array([1.0, 0.85, 0.6], dtype=np.float32)
    out = restorer.restore_array(sepia, levels=255)
    assert out.shape == sepia.shape
    assert np.abs(np.rint(luma(out) * 255) - np.rint(luma(sepia) * 255)).max() == 0  # the luma is the input's
    assert ab_error(out, sepia) >= 0


def test_onnx_export_keeps_odd_sizes_and_restores(tmp_path: Path):
    """The logits' ceil and TF-style padding stay arithmetic on the input's size in the traced graph."""
    pytest.importorskip("onnxruntime")
    from decrappify.inference.export import create_session, export_onnx, parity

    torch.manual_seed(0)
    for config in (TINY, {"arch": "ab-unet"}):  # the ResNet and the EfficientNet encoder
        model = create_model(config).eval()
        path = export_onnx(model, tmp_path / "ab.onnx", config=config, info={"task": "colorize"})
        assert parity(model, create_session(path), ((37, 53), (5, 3))) < 1e-4
    restorer = Restorer.from_pretrained(path)  # an ONNX file: its memory estimate builds the model on "meta"
    grey = np.full((20, 30, 3), 0.5, np.float32)
    assert restorer.backend == "onnx" and restorer.restore_array(grey).shape == (20, 30, 3)
