"""Sampling settings (checked once, when they are made), row sampling, and the one stop matcher.

A `Sampling` is valid from the moment it exists: its constructor checks every field, and the code
downstream (generate, the batching decoder, the chat session) trusts it. `sample_rows` draws one
character per row of logits, each row with its own settings and its own uniform number, so a
row's draw never depends on the rows batched with it. `StopMatcher` follows one reply character
by character: where a stop sequence completes, where the length cap ends it, and how much of the
text can be shown without showing the start of a stop sequence. Both the lone path and the
batching decoder use it (ARCHITECTURE.md, "From a message to a character").
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np
import torch

MAX_NEW_CHARS_LIMIT = 20_000


class SamplingError(ValueError):
    """Sampling settings that cannot be used; the message says the valid range."""


def as_number(name, value, kind=float):
    """`value` as a finite float or a whole int (exact, however large), or SamplingError with one
    sentence naming `name`."""
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SamplingError(f"{name} must be {'a whole number' if kind is int else 'a number'}; got {value!r}.")
    if kind is int and float(value) != int(value):
        raise SamplingError(f"{name} must be a whole number; got {value!r}.")
    return kind(value)


@dataclass(frozen=True)
class Sampling:
    """How a reply is sampled. Checked when made: an invalid value raises SamplingError.

    `top_k` None = no limit; `top_p` None = no nucleus cut; `seed` None = random; `stop` a string
    or a list of strings (stored as a tuple of the non-empty ones). Change a field with
    `sampling.replace(...)`, which checks again.
    """

    max_new_chars: int = 500
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    seed: int | None = None
    stop: str | list[str] | tuple[str, ...] | None = None

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        put("max_new_chars", as_number("max_new_chars", self.max_new_chars, int))
        if not 0 <= self.max_new_chars <= MAX_NEW_CHARS_LIMIT:
            raise SamplingError(f"max_new_chars must be between 0 and {MAX_NEW_CHARS_LIMIT}; got {self.max_new_chars}.")
        put("greedy", bool(self.greedy))
        put("temperature", as_number("temperature", self.temperature))
        if self.temperature <= 0 and not self.greedy:
            raise SamplingError(f"temperature must be above 0 (use greedy for the most likely character); got {self.temperature}.")
        if self.top_k is not None:
            put("top_k", as_number("top_k", self.top_k, int))
            if self.top_k < 1:
                raise SamplingError(f"top_k must be at least 1 (or None for no limit); got {self.top_k}.")
        if self.top_p is not None:
            put("top_p", as_number("top_p", self.top_p))
            if not 0.0 < self.top_p <= 1.0:
                raise SamplingError(f"top_p must be in (0, 1]; got {self.top_p}.")
        if self.seed is not None:
            put("seed", as_number("seed", self.seed, int))
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not isinstance(s, str) for s in stops):
            raise SamplingError("stop must be a string or a list of strings.")
        put("stop", tuple(s for s in stops if s))

    def replace(self, **changes) -> "Sampling":
        """A copy with some fields changed, checked again."""
        return dataclasses.replace(self, **changes)


def make_generator(seed: int | None) -> random.Random:
    """A reply's own random numbers (seeded, or from the OS). One uniform number per character:
    Python's generator is used because a single draw from it costs far less than torch.rand(1)."""
    return random.Random(seed)


def sample_rows(logits, settings: list[Sampling], uniforms: list[float]) -> list[int]:
    """One character id per row of (batch, vocab) logits, each row with its own settings.

    Inverse-CDF sampling with one uniform number per row (drawn from that row's own generator),
    so a row's draw depends only on its own logits, settings and generator: batched or alone,
    the same seed gives the same text. In numpy: on arrays this small each of its operations costs
    a fraction of torch's, and every step samples.
    """
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    logits = np.asarray(logits, dtype=np.float32)
    rows, vocab = logits.shape
    temperatures = [1.0 if st.greedy else st.temperature for st in settings]
    if len(set(temperatures)) == 1:  # the common case takes scalar paths
        scaled = logits / np.float32(temperatures[0])
    else:
        scaled = logits / np.array(temperatures, np.float32)[:, None]
    ks = [min(st.top_k or vocab, vocab) for st in settings]
    if min(ks) < vocab:
        if len(set(ks)) == 1:  # each row's k-th largest value
            kth = -np.partition(-scaled, ks[0] - 1, axis=1)[:, ks[0] - 1 : ks[0]]
        else:
            kth = np.take_along_axis(-np.sort(-scaled, axis=1), np.array(ks)[:, None] - 1, axis=1)
        scaled = np.where(scaled < kth, np.float32(-np.inf), scaled)
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))  # unnormalised: the CDF's end is the total
    ps = [st.top_p if st.top_p is not None else 1.0 for st in settings]
    if min(ps) < 1.0:
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        cumulative = np.cumsum(sorted_probs, axis=1)
        limit = np.array(ps, np.float32)[:, None] * cumulative[:, -1:]
        kept = np.where(cumulative - sorted_probs >= limit, np.float32(0), sorted_probs)  # the smallest prefix reaching top_p
        probs = np.zeros_like(probs)
        np.put_along_axis(probs, order, kept, axis=1)
    cdf = np.cumsum(probs, axis=1)
    targets = np.array(uniforms, np.float32)[:, None] * cdf[:, -1:]
    ids = np.minimum((cdf <= targets).sum(axis=1), vocab - 1).tolist()
    for i, st in enumerate(settings):
        if st.greedy:
            ids[i] = int(np.argmax(logits[i]))
    return ids


class StopMatcher:
    """One reply's text as it is sampled, character by character.

    `push(char)` adds a character and says whether the reply is finished: by a stop sequence
    (`stopped_by == "stop"`; the stop is cut from `.text` and kept in `.stop_text`) or by the
    length cap (`"length"`). `shown()` is the length of `.text` that is safe to show: the text
    minus a tail that could still become a stop sequence.
    """

    __slots__ = ("stops", "max_chars", "text", "stopped_by", "stop_text")

    def __init__(self, stops: tuple[str, ...], max_chars: int):
        self.stops, self.max_chars = tuple(stops), max_chars
        self.text = ""
        self.stopped_by: str | None = None  # "stop", "length", or None while running
        self.stop_text = ""
        if max_chars <= 0:
            self.stopped_by = "length"

    def push(self, char: str) -> bool:
        self.text += char
        if self.stops and self.text.endswith(self.stops):
            self.stop_text = next(s for s in self.stops if self.text.endswith(s))
            self.text = self.text[: len(self.text) - len(self.stop_text)]
            self.stopped_by = "stop"
            return True
        if len(self.text) >= self.max_chars:
            self.stopped_by = "length"
            return True
        return False

    def shown(self) -> int:
        if self.stopped_by is not None or not self.stops:
            return len(self.text)
        held = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:k]):
                    held = k
                    break
        return len(self.text) - held
