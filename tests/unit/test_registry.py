"""One config check for every registry: an arch name, the class's own keyword arguments, errors listing choices."""

from __future__ import annotations

import pytest
from torch import nn

from decrappify.errors import ConfigError
from decrappify.nn.registry import build_from_registry, registry_options


class Tiny(nn.Module):
    def __init__(self, channels: int = 4, bias: bool = True):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.conv = nn.Conv2d(3, channels, 1, bias=bias)


class Other(nn.Module):
    def __init__(self, *layers: int, **extra: int):
        super().__init__()


REGISTRY = {"tiny": Tiny, "other": Other}


def test_builds_the_named_class_with_the_other_keys():
    module = build_from_registry("thing", REGISTRY, {"arch": "tiny", "channels": 2, "bias": False})
    assert isinstance(module, Tiny) and module.conv.out_channels == 2 and module.conv.bias is None


def test_options_are_the_signature_without_self_or_variadics():
    assert registry_options(REGISTRY, "tiny") == ["channels", "bias"]
    assert registry_options(REGISTRY, "other") == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"channels": 2}, "thing config needs an 'arch' key; choose one of: tiny, other"),
        ("tiny", "thing config needs an 'arch' key"),
        ({"arch": "tiyn"}, "unknown thing arch 'tiyn'; choose one of: tiny, other"),
        ({"arch": ["tiny"]}, r"unknown thing arch \['tiny'\]; choose one of"),
        (
            {"arch": "tiny", "chanels": 2, "biass": 1},
            r"unknown option\(s\) biass, chanels for thing arch 'tiny'; valid options: channels, bias",
        ),
        ({"arch": "tiny", "channels": 0}, "invalid config for thing arch 'tiny': channels must be >= 1"),
    ],
)
def test_every_mistake_is_a_config_error_listing_what_is_valid(config, message):
    with pytest.raises(ConfigError, match=message):
        build_from_registry("thing", REGISTRY, config, arch_label="thing arch")
