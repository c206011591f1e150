"""Serving: how one model's replies are computed, decided once from explicit arguments.

A `Serving` is built for one model with the engine ("auto", "onnxruntime", "torch"), the int8
mode ("auto", "on", "off") and the model's measured int8 check (`int8.json`, read by
lstm_model.hub.load_int8_check), whether replies are batched, and ONNX Runtime's threads. It
owns what follows from them: the int8 decision, the generation step (built on first use, rebuilt
when the weights change) and, with batching, the decoder thread. The model itself holds weights
and config only. Nothing here reads the environment: app.py and the command lines pass the
choices in.

The int8 rule: a model serves in int8 only if, on held-out text, its loss with int8 steps is at
most MAX_LOSS_RISE (0.01 nats/char) above its loss with fp32 steps (measured by
lstm_model.evaluate.check_int8); "on" forces int8, "off" never uses it.
"""

from __future__ import annotations

import math
import os
import threading

from .batching import Decoder
from .step import EngineError, make_step, pick_engine, weights_version

INT8_MODES = ("auto", "on", "off")
MAX_LOSS_RISE = 0.01  # nats/char


def default_step_threads() -> int:
    """ONNX Runtime's threads for a served model's steps unless told otherwise: two, or the CPUs if
    fewer (a crowd's batched step is faster on two, a single reply no slower: docs/serving.md,
    "Threads", and benchmarks/README.md for the figures)."""
    return min(2, os.cpu_count() or 1)


def decide_int8(mode: str, check: dict | None, engine: str) -> tuple[bool, str]:
    """Whether int8 steps serve, and why, in words."""
    if mode not in INT8_MODES:
        raise EngineError(f"The int8 mode must be one of {', '.join(INT8_MODES)}; got {mode!r}.")
    rise = check.get("loss_rise") if isinstance(check, dict) else None
    if not (isinstance(rise, (int, float)) and not isinstance(rise, bool) and math.isfinite(rise)):
        rise = None
    if mode == "off":
        return False, "fp32 steps: int8 turned off"
    if engine != "onnxruntime":
        return False, "fp32 steps: int8 needs the model on CPU and onnxruntime"
    if mode == "on":
        measured = f" (measured loss rise {rise:+.4f} nats/char)" if rise is not None else " (not measured for this model)"
        return True, "int8 steps, forced on" + measured
    if rise is None:
        return False, "fp32 steps: int8 not measured for this model (python -m lstm_model.quantize --write)"
    if rise <= MAX_LOSS_RISE:
        return True, f"int8 steps: measured loss rise {rise:+.4f} nats/char <= {MAX_LOSS_RISE}"
    return False, f"fp32 steps: int8 would raise the loss by {rise:+.4f} nats/char > {MAX_LOSS_RISE}"


class Serving:
    """How `model`'s replies are computed. Raises EngineError (one sentence) for an engine or int8
    mode that cannot serve here."""

    def __init__(self, model, *, engine: str = "auto", int8: str = "off", int8_check: dict | None = None,
                 batching: bool = False, threads: int | None = None, max_batch: int = 64):
        self.model = model
        self.engine = pick_engine(model, engine)
        self.int8, self.int8_reason = decide_int8(int8, int8_check, self.engine)
        self.int8_check = int8_check
        self.batching = batching
        self.threads = threads
        self.max_batch = max_batch
        self._step = None
        self._decoder: Decoder | None = None
        self._lock = threading.Lock()

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp32"

    def step(self):
        """The generation step (step.TorchStep or step.OrtStep), rebuilt if the weights changed."""
        with self._lock:
            if self._step is None or self._step.version != weights_version(self.model):
                self._step = make_step(self.model, self.engine, self.int8, self.threads)
            return self._step

    @property
    def decoder(self) -> Decoder | None:
        """The batching decoder shared by every reply of this serving (None without batching)."""
        if not self.batching:
            return None
        with self._lock:
            if self._decoder is None:
                self._decoder = Decoder(self.model, self.step, self.max_batch)
            return self._decoder

    def close(self, wait: bool = False) -> None:
        """Let the decoder thread end (once its replies are done): the serving no longer holds
        the model alive through it. A later reply starts it again. With `wait`, return once it has
        ended."""
        with self._lock:
            decoder = self._decoder
        if decoder is not None:
            decoder.close(wait)

    def describe(self) -> str:
        """One line for people: the precision and why, and the engine."""
        engine = "ONNX Runtime" if self.engine == "onnxruntime" else "torch"
        return f"{self.int8_reason}; steps on {engine}"
