"""Build a module from a registry of classes and a plain config ``{"arch": name, **keyword arguments}``.

Generators (:mod:`decrappify.nn.models`) and critics (:mod:`decrappify.nn.critic`) are both chosen this way, and
their configs are stored in model files and training configs, so a typo must fail loudly and say what would
have been accepted. The keys a class accepts are read from its ``__init__`` signature: adding an argument to a
class is all it takes to make it configurable, and no second list of option names can fall out of step with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import nn

from decrappify.errors import ConfigError

#: A registry: the names a config's ``"arch"`` may take, and the class each one builds.
Registry = Mapping[str, type[nn.Module]]

# *args / **kwargs are not config keys: a config can only name parameters.
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def registry_options(registry: Registry, arch: object, *, arch_label: str = "arch") -> list[str]:
    """The config keys ``registry[arch]`` accepts besides ``arch``: its ``__init__`` parameters, in order.

    ``arch_label`` names the choice in the error for an unknown ``arch`` ("unknown critic arch 'x'; ...").
    """
    if not isinstance(arch, str) or arch not in registry:
        raise ConfigError(f"unknown {arch_label} {arch!r}; choose one of: {', '.join(registry)}")
    params = inspect.signature(registry[arch].__init__).parameters
    return [name for name, param in params.items() if name != "self" and param.kind not in _VARIADIC]


def build_from_registry(kind: str, registry: Registry, config: Mapping, *, arch_label: str = "arch") -> nn.Module:
    """A randomly initialised ``registry[config["arch"]]`` built with the config's other keys.

    ``kind`` names the config in messages ("model config needs an 'arch' key"), ``arch_label`` the choice
    ("arch 'compact'", "critic arch 'patch'"). Every mistake is a ``ConfigError`` that lists what is valid:
    no ``arch``, an unknown ``arch``, keys the class does not take, and values its constructor rejects
    (a ``TypeError`` or ``ValueError`` from it).
    """
    if not isinstance(config, Mapping) or "arch" not in config:
        raise ConfigError(f"{kind} config needs an 'arch' key; choose one of: {', '.join(registry)}")
    kwargs = dict(config)
    arch = kwargs.pop("arch")
    valid = registry_options(registry, arch, arch_label=arch_label)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {arch_label} '{arch}'; valid options: {', '.join(valid)}"
        )
    try:
        return registry[arch](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config for {arch_label} '{arch}': {exc}") from exc
