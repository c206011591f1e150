"""The models the app serves: one Serving per source however it is spelled, loaded on first use,
bounded in number and parameters, the least recently used leaving first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

from lstm_model.hub import ModelLoadError, load_int8_check, load_model, source_key
from lstm_model.serving import Serving
from lstm_model.step import EngineError

MAX_MODELS = 4  # models served at once; the least recently used leaves first
MAX_PARAMETERS = 200_000_000  # all served models together (~800 MB of fp32 weights)
LOADS_AT_ONCE = 2  # models being loaded at the same moment


class LoadOptions(Protocol):
    """What loading a model reads of the app's Options (ui.actions): engine, int8 and the decoder's."""

    int8: str
    engine: str
    batching: bool
    concurrency: int
    step_threads: int


class ServedModels:
    """The models the app serves, one per source however it is spelled (`hub.source_key`): at
    most MAX_MODELS and MAX_PARAMETERS together, the least recently used leaving first (its
    decoder thread ends; sessions still using it keep it alive until they switch or expire); at
    most LOADS_AT_ONCE loads at a time."""

    def __init__(self, options: LoadOptions):
        self.options = options
        self._servings: OrderedDict[str, Serving] = OrderedDict()
        self._lock = threading.Lock()
        self._loads = threading.BoundedSemaphore(LOADS_AT_ONCE)

    def __len__(self) -> int:
        return len(self._servings)

    def get(self, source: str | None, hub_only: bool = False) -> Serving:
        """The serving of `source` (with `hub_only`, a Hub repo id whatever the disk holds: see
        hub.load_model), loaded on first use. ModelLoadError with one sentence."""
        key = source_key(source, hub_only)
        with self._lock:
            if key in self._servings:
                self._servings.move_to_end(key)
                return self._servings[key]
        with self._loads:
            with self._lock:  # loaded meanwhile by another request?
                if key in self._servings:
                    return self._servings[key]
            serving = self._load(source, hub_only)
            with self._lock:
                self._servings[key] = serving
                self._evict()
        return serving

    def _load(self, source: str | None, hub_only: bool) -> Serving:
        o = self.options
        try:
            return Serving(load_model(source, hub_only=hub_only), engine=o.engine, int8=o.int8,
                           int8_check=load_int8_check(source, hub_only),
                           batching=o.batching, threads=o.step_threads, max_batch=o.concurrency)
        except EngineError as err:
            raise ModelLoadError(str(err)) from None

    def _evict(self) -> None:
        def total():
            return sum(s.model.num_parameters() for s in self._servings.values())

        while len(self._servings) > 1 and (len(self._servings) > MAX_MODELS or total() > MAX_PARAMETERS):
            _, old = self._servings.popitem(last=False)
            old.close()
