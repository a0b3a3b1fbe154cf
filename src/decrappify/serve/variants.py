"""Served models at a strength: `strength` on /v1/restore and /v1/jobs, the web page's slider.

A served model whose file names a pair (`inference.strength`: the `strength_pair` info key) is loaded once more
with its pair at start-up; a request's strength then builds the mix (network interpolation: one model's cost)
and keeps the last few mixes, so moving the page's slider back and forth costs nothing after the first use.
A pair that is not installed only turns the slider off for that model (a warning), never the service.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from decrappify.errors import ConfigError, WeightsError
from decrappify.inference.restorer import Restorer
from decrappify.inference.strength import ModelPair, find_pair
from decrappify.serve.errors import ApiError
from decrappify.serve.settings import ServeSettings

log = logging.getLogger(__name__)

#: Mixes kept ready (model, strength); a slider step of 0.05 has 21 positions.
CACHE_SIZE = 8


class StrengthVariants:
    """The pairs of the served models, and their mixes at the strengths asked for."""

    def __init__(self, settings: ServeSettings, sources: Mapping[str, str]):
        self.settings = settings
        self.pairs: dict[str, ModelPair] = {}
        for name, source in sources.items():
            try:
                pair = find_pair(source)
                if pair is not None:
                    self.pairs[name] = ModelPair(source, pair)
            except (ConfigError, WeightsError) as error:
                log.warning("model %s: no strength slider: %s", name, error)
        self._cache: OrderedDict[tuple[str, float], Restorer] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self, name: str) -> dict[str, Any] | None:
        """What /v1/models says of a model's strength: its pair and how they mix, or None."""
        pair = self.pairs.get(name)
        return None if pair is None else {"pair": pair.second.name, "mode": pair.mode}

    def at(self, name: str, restorer: Restorer, strength: float | None) -> Restorer:
        """`restorer` (the model `name`, maybe with a request's smaller tile) mixed at `strength` (None: as is);
        `ApiError` 400 for a model without a pair."""
        if strength is None:
            return restorer
        pair = self.pairs.get(name)
        if pair is None:
            raise ApiError(400, f"strength: model '{name}' has no pair to mix with; leave strength out")
        key = (name, round(float(strength), 3))
        with self._lock:
            mixed = self._cache.get(key)
            if mixed is not None:
                self._cache.move_to_end(key)
        if mixed is None:
            mixed = pair.restorer_at(key[1], device=self.settings.device, tile=self.settings.tile,
                                     precision=self.settings.precision)  # fmt: skip
            with self._lock:
                self._cache[key] = mixed
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        if mixed.tile != restorer.tile:
            mixed = copy.copy(mixed)  # restorers keep no state between calls: the copy shares the model
            mixed.tile = restorer.tile
        return mixed
