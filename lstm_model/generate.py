"""Sampling from a CharLSTM: temperature, top-k, top-p, greedy, seeds, stop sequences, streaming.

`generate(...) -> (text, state)` and `stream(...)` (yields text pieces as they are sampled; the
final state is `.state` once the stream is exhausted). A long prompt goes through the LSTM in one
call, a short one (<= PREFILL_CHARS) through the fused step; then one step per sampled character.
A stop sequence ends the reply: it is *not* included in the returned text, but it *is* fed through
the LSTM, so the returned state has read it (the next turn continues after the blank line, as in
the corpus).

Characters of the prompt that the vocabulary lacks are skipped and reported (`Stream.skipped`,
and a warning from `generate`).

Step-wise inference uses a fused LSTM step from the model's own weights (the layer-0 input
projection precomputed as a table): on ONNX Runtime where it is installed and the model is on CPU
(lstm_model.onnx_step; fp32, or int8 where measured harmless), else `Stepper` in torch
(`Stepper.for_model` picks). oneDNN, which makes one-step nn.LSTM calls ~8x slower on CPU, is not
involved.

CLI (like char-rnn's sample.lua):
    python -m lstm_model.generate --model assets/shakespeare --prompt "ROMEO:" --length 500 --temperature 0.8 --top-k 40 --seed 1
    python -m lstm_model.generate --chat     # a terminal chat carrying the state; /reset /undo /retry /memory /quit
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


MAX_NEW_CHARS_LIMIT = 20_000
# Prompts up to this many characters are fed by the fused step (Stepper), one character at a time:
# alone that costs about what one nn.LSTM call does (~0.3-0.6 ms a character on 1 CPU thread),
# and with a decoder it runs inside the batched steps, shared with the other sessions. Longer
# prompts go through nn.LSTM in one call, which is faster per character. Both paths use the same
# rule, so a session's text is the same alone or batched.
PREFILL_CHARS = 32


class SamplingError(ValueError):
    """Sampling settings that cannot be used; the message says the valid range."""


@dataclass
class Sampling:
    """Sampling settings, checked."""

    max_new_chars: int = 500
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    seed: int | None = None
    stop: str | list[str] | None = None

    def check(self, vocab_size: int) -> "Sampling":
        def number(name, value, kind=float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is float and not math.isfinite(value)):
                raise SamplingError(f"{name} must be a number; got {value!r}.")
            if kind is int and float(value) != int(value):
                raise SamplingError(f"{name} must be a whole number; got {value!r}.")
            return kind(value)

        self.max_new_chars = number("max_new_chars", self.max_new_chars, int)
        if not 0 <= self.max_new_chars <= MAX_NEW_CHARS_LIMIT:
            raise SamplingError(f"max_new_chars must be between 0 and {MAX_NEW_CHARS_LIMIT}; got {self.max_new_chars}.")
        self.temperature = number("temperature", self.temperature)
        if self.temperature <= 0 and not self.greedy:
            raise SamplingError(f"temperature must be above 0 (use greedy for the most likely character); got {self.temperature}.")
        if self.top_k is not None:
            self.top_k = number("top_k", self.top_k, int)
            if not 1 <= self.top_k:
                raise SamplingError(f"top_k must be at least 1 (or None for no limit); got {self.top_k}.")
            self.top_k = min(self.top_k, vocab_size)
        if self.top_p is not None:
            self.top_p = number("top_p", self.top_p)
            if not 0.0 < self.top_p <= 1.0:
                raise SamplingError(f"top_p must be in (0, 1]; got {self.top_p}.")
        if self.seed is not None:
            self.seed = number("seed", self.seed, int)
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not isinstance(s, str) for s in stops):
            raise SamplingError("stop must be a string or a list of strings.")
        self.stop = [s for s in stops if s]
        return self


def make_generator(seed: int | None) -> random.Random:
    """A session's own random numbers (seeded, or from the OS). One uniform number per character:
    Python's generator draws it in ~0.1 us, torch.rand(1) in ~5 us (which, for 16 sessions in one
    batched step, was 6% of the step)."""
    return random.Random(seed)


def sample_rows(logits, settings: list[Sampling], uniforms: list[float]) -> list[int]:
    """One character id per row of (batch, vocab) logits, each row with its own settings.

    Inverse-CDF sampling with one uniform number per row (drawn from that row's own generator),
    so a row's draw depends only on its own logits, settings and generator: batched or alone,
    the same seed gives the same text. In numpy: on arrays this small its operations cost ~1 us
    each, torch's ~5, and every step samples.
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


def sample_next(logits: torch.Tensor, s: Sampling, generator: random.Random) -> int:
    """One character id from 1-D logits with the given settings (sample_rows for one row)."""
    return sample_rows(logits.reshape(1, -1), [s], [generator.random()])[0]


class Stepper:
    """One LSTM step for a batch of characters, fused for inference from the model's own weights.

    The same equations as nn.LSTM (DESIGN.md) with three savings for batch-size-1 decoding: layer
    0's input projection X_t W_x* + b is a lookup table (vocab x 4H, the one-hot product
    precomputed), each upper layer multiplies [H_below, H_prev] by its two weight matrices
    stacked (one matmul instead of two), and nothing is allocated for gradients.

    This is the torch step (fp32; any device) and the reference. Serving uses `for_model`, which
    runs the same fused weights on ONNX Runtime when it is installed and the model is on CPU
    (lstm_model.onnx_step: one native call a step, fp32 or int8).
    """

    int8 = False

    def __init__(self, model):
        lstm, h = model.lstm, model.hidden_size
        self.hidden_size, self.num_layers = h, model.num_layers
        self.version = _weights_version(model)
        with torch.no_grad():
            self.table0 = (nn.functional.linear(model.embedding.weight, lstm.weight_ih_l0, lstm.bias_ih_l0)
                           + lstm.bias_hh_l0).contiguous()
            self.w_hh0_t = lstm.weight_hh_l0.t().contiguous()
            self.w_t, self.b = [None], [None]
            for layer in range(1, model.num_layers):
                w = torch.cat([getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")], dim=1)
                self.w_t.append(w.t().contiguous())
                self.b.append(getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
            self.head_w_t = model.head.weight.t().contiguous()
            self.head_b = model.head.bias.detach().clone()

    @classmethod
    def for_model(cls, model):
        """The cached serving step of `model`: `onnx_step.OrtStepper` (int8 when `model.serve_int8`)
        where `step_engine(model)` is "onnxruntime", else a Stepper. Rebuilt when the weights
        change; one per engine, precision and thread count, so switching back costs nothing."""
        engine = step_engine(model)
        int8 = engine == "onnxruntime" and bool(getattr(model, "serve_int8", False))
        cache = getattr(model, "_steppers", None)
        if cache is None:
            cache = model._steppers = {}
        key = (engine, int8, torch.get_num_threads() if engine == "onnxruntime" else 0)
        cached = cache.get(key)
        if cached is None or cached.version != _weights_version(model):
            cached = cache[key] = make_stepper(model, engine, int8)
        return cached

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state):
        """ids (batch,) -> next-character logits (batch, vocab) and the new (h, c)."""
        h_prev, c_prev = state
        hs, cs, below = [], [], None
        for layer in range(self.num_layers):
            if layer == 0:
                rows = self.table0.index_select(0, ids)  # X_t W_x + b for each row's character
                z = torch.addmm(rows, h_prev[0], self.w_hh0_t)
            else:
                x = torch.cat([below, h_prev[layer]], dim=1)
                z = torch.addmm(self.b[layer], x, self.w_t[layer])
            z = z.view(z.shape[0], 4, self.hidden_size)
            gates = torch.sigmoid(z)  # input, forget, (unused), output
            c = gates[:, 1] * c_prev[layer] + gates[:, 0] * torch.tanh(z[:, 2])
            below = gates[:, 3] * torch.tanh(c)
            hs.append(below)
            cs.append(c)
        logits = torch.addmm(self.head_b, below, self.head_w_t)
        return logits, (torch.stack(hs), torch.stack(cs))

    @torch.no_grad()
    def feed(self, ids: list[int], state):
        """Step through `ids` (one sequence) from `state`: the last logits (1, vocab) and the state."""
        one = torch.zeros(1, dtype=torch.long, device=state[0].device)
        for idx in ids:
            one[0] = idx
            logits, state = self.step(one, state)
        return logits, state


STEP_ENGINES = ("auto", "onnxruntime", "torch")


def step_engine(model) -> str:
    """Which engine serves `model`'s generation steps: "onnxruntime" when it is installed and the
    model is on CPU (unless the environment variable LSTM_STEP_ENGINE=torch asks otherwise),
    else "torch"."""
    from . import onnx_step

    wanted = os.environ.get("LSTM_STEP_ENGINE", "auto")
    if wanted not in STEP_ENGINES:
        raise ValueError(f"LSTM_STEP_ENGINE must be one of {', '.join(STEP_ENGINES)}; got {wanted!r}.")
    if wanted != "torch" and model.head.weight.device.type == "cpu" and onnx_step.available():
        return "onnxruntime"
    return "torch"


def make_stepper(model, engine: str = "torch", int8: bool = False):
    """A new step of `model` on `engine` ("torch": fp32 Stepper; "onnxruntime": OrtStepper, fp32
    or int8)."""
    if engine == "onnxruntime":
        from .onnx_step import OrtStepper

        return OrtStepper(model, int8=int8)
    if int8:
        raise ValueError("Int8 steps run on ONNX Runtime: pip install onnxruntime onnx.")
    return Stepper(model)


def _weights_version(model) -> tuple:
    return tuple((id(p), p._version) for p in model.parameters())


def _first_stop(text: str, stops: list[str], seen: int) -> tuple[str | None, int]:
    """The stop sequence that ends first among those completed after text[:seen], and where it starts."""
    best, at = None, -1
    for stop in stops:
        i = text.find(stop, max(0, seen - len(stop) + 1))
        if i >= 0 and (best is None or i + len(stop) < at + len(best)):
            best, at = stop, i
    return best, at


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could still be the start of a stop sequence."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                best = max(best, k)
                break
    return best


class Stream:
    """An iterator of text pieces; after it is exhausted, `.text`, `.state`, `.stopped_by` are final.

    `.skipped` lists the prompt characters the vocabulary lacks (they were not fed).
    """

    def __init__(self, model, prompt: str = "", state=None, decoder=None, **settings):
        self.model = model
        self.decoder = decoder  # a batching.Decoder: step together with other sessions
        self.settings = Sampling(**settings).check(model.vocab_size)
        encoded = model.vocab.encode_report(prompt or "")
        self.prompt_ids = encoded.ids
        self.skipped = encoded.skipped
        self.state = state
        self.text = ""
        self.stopped_by: str | None = None  # "stop", "length" or None while running
        self.stop_text = ""  # the stop sequence that ended the text (fed to the LSTM, not in .text)
        self._iter = self._run()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def _alone(self, logits, state, generator):
        """Characters sampled one step at a time in this thread (batch of one)."""
        s, chars, stepper = self.settings, self.model.vocab.chars, Stepper.for_model(self.model)
        next_id = torch.zeros(1, dtype=torch.long, device=self.model.head.weight.device)
        for _ in range(s.max_new_chars):
            with torch.no_grad():
                idx = sample_next(logits, s, generator)
                next_id[0] = idx
                step_logits, state = stepper.step(next_id, state)
                logits = step_logits[0]
            self.state = state
            yield chars[idx]

    def _batched(self, logits, state, generator, prefill):
        """Characters from the shared decoder, which steps this session with all the others (and
        first feeds it `prefill`, a short prompt, in the same batched steps)."""
        request = self.decoder.submit(logits, state, self.settings, generator, prefill)
        try:
            while True:
                item = request.outbox.get()
                if isinstance(item, Exception):
                    raise item
                if item is None:
                    return
                piece, h, c = item
                self.state = (h, c)  # the state after the piece's last character
                yield piece
        finally:
            request.cancel()

    def _run(self):
        model, s = self.model, self.settings
        generator = make_generator(s.seed)
        device = model.head.weight.device
        # Grad mode is set around each computation, never across a yield, so that the code reading
        # the stream runs unaffected.
        state = self.state if self.state is not None else model.begin_state(1, device)
        prompt, prefill = self.prompt_ids, []
        with torch.no_grad():
            if len(prompt) > PREFILL_CHARS:  # a long prompt in one call (oneDNN: faster per character)
                ids = torch.tensor([prompt], dtype=torch.long, device=device)
                out, state = model.lstm(model.embedding(ids), state)
                logits = model.head(out[0, -1])
            elif prompt and (self.decoder is None or s.max_new_chars == 0):
                logits, state = Stepper.for_model(model).feed(prompt, state)
                logits = logits[0]
            else:  # no prompt, or a short one that the decoder feeds in its batched steps
                logits, prefill = model.logits_from_state(state)[0], prompt
        self.state = state
        if s.max_new_chars == 0:
            self.stopped_by = "length"
            return
        if self.decoder:
            source = self._batched(logits, state, generator, prefill)
        else:
            source = self._alone(logits, state, generator)
        emitted = 0  # characters of self.text already yielded
        try:
            for piece in source:  # one character when stepping alone, a few when batched
                seen = len(self.text)
                self.text += piece
                stop, at = _first_stop(self.text, s.stop, seen)
                if stop is not None:
                    self.text = self.text[:at]
                    self.stopped_by, self.stop_text = "stop", stop
                    if len(self.text) > emitted:
                        yield self.text[emitted:]
                    return
                ready = len(self.text) - _held_back(self.text, s.stop) if s.stop else len(self.text)
                if ready > emitted:
                    yield self.text[emitted:ready]
                    emitted = ready
        finally:
            source.close()
        self.stopped_by = "length"
        if len(self.text) > emitted:
            yield self.text[emitted:]


def stream(model, prompt: str = "", state=None, max_new_chars: int = 500, temperature: float = 1.0, top_k=None,
           top_p=None, greedy: bool = False, seed=None, stop=None, decoder=None) -> Stream:
    """Like `generate`, but yields the text in pieces as it is sampled; `.state` holds the final state.

    With `decoder` (a batching.Decoder), the steps run batched with other sessions' streams."""
    return Stream(model, prompt, state, decoder=decoder, max_new_chars=max_new_chars, temperature=temperature,
                  top_k=top_k, top_p=top_p, greedy=greedy, seed=seed, stop=stop)


def generate(model, prompt: str = "", state=None, max_new_chars: int = 500, temperature: float = 1.0, top_k=None,
             top_p=None, greedy: bool = False, seed=None, stop=None):
    """Sample up to `max_new_chars` characters after `prompt` (fed from `state`, default fresh).

    Returns (text, state): the sampled text without the prompt (and without a stop sequence that
    ended it) and the LSTM state after everything fed and sampled.
    """
    s = stream(model, prompt, state, max_new_chars, temperature, top_k, top_p, greedy, seed, stop)
    for _ in s:
        pass
    if s.skipped:
        warnings.warn(f"The prompt's characters {s.skipped!r} are not in the model's vocabulary and were skipped.",
                      stacklevel=2)
    return s.text, s.state


# -- CLI ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lstm_model.generate", description="Sample from a CharLSTM, or chat with it.")
    p.add_argument("--model", default=None, help="local folder or Hub repo id user/name[@revision] (default: bundled)")
    p.add_argument("--prompt", default="", help="text to start from")
    p.add_argument("--length", type=int, default=500, help="characters to sample (default 500)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely character")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", default=None, help="stop at this text (default: none; in --chat, the model's stop sequence)")
    p.add_argument("--chat", action="store_true", help="terminal chat that carries the LSTM state from line to line")
    p.add_argument("--no-memory", action="store_true", help="in --chat, start every turn from a fresh state")
    p.add_argument("--int8", choices=["auto", "on", "off"], default="auto",
                   help="int8 generation steps: auto = when the model's int8.json shows a loss rise <= 0.01 nats/char "
                        "(lstm_model.quantize); default auto")
    return p


def main(argv=None) -> int:
    from .hub import ModelLoadError, load_model
    from .quantize import resolve_int8

    args = _parser().parse_args(argv)
    try:
        model = load_model(args.model)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    resolve_int8(model, args.int8)
    settings = dict(max_new_chars=args.length, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    greedy=args.greedy, seed=args.seed)
    try:
        if args.chat:
            return _chat(model, settings, args)
        s = stream(model, args.prompt, stop=args.stop, **settings)
        sys.stdout.write(args.prompt)
        for piece in s:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if s.skipped:
            print(f"note: skipped characters not in the vocabulary: {s.skipped!r}", file=sys.stderr)
    except SamplingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _chat(model, settings, args) -> int:
    from .session import ChatSession

    if args.stop is not None:
        settings["stop"] = args.stop
    session = ChatSession(model, memory=not args.no_memory, **settings)
    print("Chat with the LSTM. Commands: /reset /undo /retry /memory /quit", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command = line.strip()
        if command == "/quit":
            return 0
        if command == "/reset":
            session.reset()
            print("(fresh conversation: memory cleared)")
            continue
        if command == "/undo":
            print("(undid the last turn)" if session.undo() else "(nothing to undo)")
            continue
        if command == "/memory":
            print(json.dumps(session.memory_report(), indent=2, ensure_ascii=False))
            continue
        reply = session.retry() if command == "/retry" else session.send(line)
        if reply is None:
            print("(nothing to retry)")
            continue
        for piece in reply:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        for notice in session.notices():
            print(f"note: {notice}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
