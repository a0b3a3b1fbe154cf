"""Training config: TOML in, overrides, JSON round trip, and errors that name the key and list the valid ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decrappify.errors import ConfigError
from decrappify.train.config import (
    Config,
    StageConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
)

REPO = Path(__file__).resolve().parents[2]

RECIPE = """
name = "tiny"
seed = 3

[model]
arch = "compact"
scale = 4
widths = [8, 8, 8]

[data]
preset = "sr-x4"
val_size = 2

[optim]
lr = 3e-3
betas = [0.9, 0.95]

[[stages]]
crop = 32
batch = 2
epochs = 1

[[stages]]
crop = 48
batch = 1
epochs = 0.5
freeze_encoder = true
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


def test_toml_is_read_into_typed_dataclasses(recipe: Path) -> None:
    config = load_config(recipe)
    assert config.name == "tiny" and config.seed == 3
    assert config.model == {"arch": "compact", "scale": 4, "widths": [8, 8, 8]}
    assert config.optim.lr == 3e-3 and config.optim.betas == (0.9, 0.95)
    assert config.stages == (StageConfig(32, 2, 1.0), StageConfig(48, 1, 0.5, freeze_encoder=True))
    assert config.data.val_size == 2 and config.data.crops_per_image == 1  # default kept
    assert config.scale == 4


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my-recipe.toml"
    path.write_text('[model]\narch = "compact"\nscale = 4\n', encoding="utf-8")
    assert load_config(path).name == "my-recipe"


def test_overrides_use_dotted_keys_and_toml_values(recipe: Path) -> None:
    config = load_config(
        recipe,
        [
            "optim.lr=1e-4",
            "stages.1.batch=4",
            "data.preset=restore-x4",  # not TOML: taken as a bare string
            "train.amp=false",
            "stages=[{crop=64, batch=8, epochs=2}]",
            "model.widths=[4, 4, 4]",
        ],
    )
    assert config.optim.lr == 1e-4
    assert config.data.preset == "restore-x4"
    assert config.train.amp is False
    assert config.stages == (StageConfig(64, 8, 2.0),)  # the later override replaced the whole list
    assert config.model["widths"] == [4, 4, 4]


def test_an_int_is_accepted_where_a_float_is_expected() -> None:
    assert apply_overrides(Config(), ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1", "unknown key 'lrr' in [optim]; valid keys: lr, weight_decay"),
        ("nope=1", "unknown key 'nope'; valid keys: name, seed, model"),
        ("optim.lr=fast", "optim.lr: expected float, got 'fast'"),
        ("train.log_every=true", "train.log_every: expected int"),
        ("optim.betas=[0.9]", "optim.betas: expected a list of 2 values"),
        ("stages.5.crop=64", "bad index '5' for stages: it has 1 entries"),
        ("stages.0.crop=30", "stages.0.crop: must be >= 8 and a multiple of the scale 4"),
        ("optim.schedule=linear", "optim.schedule: unknown value 'linear'; choose one of: onecycle, cosine"),
        ("loss.kind=gan", "loss.kind: unknown value 'gan'; choose one of: l1, mse, feature"),
        ("optim.lr=-1", "optim.lr: must be > 0"),
        ("loss.watermark_weight=0", "loss.watermark_weight: must be > 0"),
        ("justakey", "bad override 'justakey'; expected key=value"),
        ("optim.lr.x=1", "optim.lr is a single value; it has no key 'x'"),
    ],
)
def test_bad_overrides_name_the_key_and_the_choices(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="^" + expected.replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(Config(), [override])


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[optim]\nlearning_rate = 1e-3\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"bad\.toml: unknown key 'learning_rate' in \[optim\]; valid keys: lr"
    ):
        load_config(path)


def test_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[optim\nlr = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.toml: cannot read config"):
        load_config(broken)


def test_json_round_trip_is_exact(recipe: Path) -> None:
    config = load_config(recipe, ["loss.feature_weights=[0.1, 0.2, 0.3]"])
    again = config_from_dict(json.loads(config.to_json()))
    assert again == config


def test_parse_override_keeps_strings_with_equals_signs() -> None:
    assert parse_override("init.weights=a=b.safetensors") == (["init", "weights"], "a=b.safetensors")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_recipes_load_and_name_real_presets(path: Path) -> None:
    from decrappify.data.degrade import PRESETS
    from decrappify.nn.models import arch_options

    config = load_config(path)
    # <name>-cpu.toml is the CPU recipe of the shipped model <name>: same name, so runs and files match it
    assert config.name == path.stem.removesuffix("-cpu")
    assert config.data.preset in PRESETS
    assert set(config.model) - {"arch"} <= set(arch_options(config.model["arch"]))


def test_the_four_recipes_exist() -> None:
    assert {p.stem for p in (REPO / "configs").glob("*.toml")} >= {
        "sr-x4",
        "restore-x4",
        "restore-x1",
        "colorize",
    }


def test_watermark_weight_is_for_pixel_losses_only() -> None:
    assert apply_overrides(Config(), ["loss.watermark_weight=4"]).loss.watermark_weight == 4.0
    for other in ("loss.kind=feature", "gan.enabled=true"):
        with pytest.raises(ConfigError, match="^loss.watermark_weight: only for loss.kind l1 or mse without"):
            apply_overrides(Config(), [other, "loss.watermark_weight=4"])
