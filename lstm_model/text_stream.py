"""generate() and stream(): sample text from a CharLSTM, from a prompt and a state.

`generate(...) -> (text, state)`; `stream(...)` yields the text in pieces as it is sampled, and
has `.text`, `.state`, `.stopped_by` and `.skipped` once exhausted. The prompt is read first:
with the serving's batching decoder, by the decoder (one character a step, batched with the
other replies; with `max_new_chars=0` the stream only reads); alone, a short one (up to
PROMPT_STEP_CHARS) by the generation step one character at a time, a longer one by the model's
recurrent module (nn.LSTM, nn.GRU or nn.RNN) in one call, faster per character. Then one step
per sampled character, alone or in the decoder. A stop sequence ends the text: it is *not*
included in the returned text, but it *is* fed through the model, so the returned state has
read it (the next turn continues after the blank line, as in the corpus).

Characters of the prompt that the vocabulary lacks are skipped and reported (`Stream.skipped`,
and a warning from `generate`).

How the steps run (engine, int8, batching) is the `serving`'s business (lstm_model.serving);
without one, fp32 steps on the best engine here, stepping alone. The terminal sampler and chat
(`python -m lstm_model.generate`) live in lstm_model.terminal; lstm_model.generate keeps these
names under the module name they were first published with.
"""

from __future__ import annotations

import functools
import queue
import warnings

import torch

from .batching import Read
from .evaluate import Loss, text_loss
from .sampling import Sampling, StopMatcher, make_generator, sample_rows
from .serving import Serving

# Prompts up to this many characters are fed by the generation step, one character at a time:
# alone that costs about what one call of the recurrent module does (its fixed cost per call
# dominates). Longer prompts go through the module in one call, which is faster per character.
PROMPT_STEP_CHARS = 32

# What a Stream made with `wake` yields besides text (an asyncio reader, which must not block its
# event loop on the decoder): WAIT, nothing to read yet (call again once `wake` has been called);
# SLOW, the rest may block for a while (the prompt read alone, the steps without a decoder, or the
# work after the last piece): call on from a thread.
WAIT = type("Wait", (), {"__repr__": lambda self: "WAIT"})()
SLOW = type("Slow", (), {"__repr__": lambda self: "SLOW"})()


@functools.lru_cache(maxsize=4)
def default_serving(model) -> Serving:
    """What generate() and stream() use without a serving: fp32 steps on the best engine here,
    no batching. One per model (the last four models used), so its step is built once."""
    return Serving(model)


class Stream:
    """An iterator of text pieces; after it is exhausted, `.text`, `.state`, `.stopped_by` are final.

    `.skipped` lists the prompt characters the vocabulary lacks (they were not fed);
    `.stop_text` is the stop sequence that ended the text (fed to the LSTM, not in `.text`).
    `.read` is the reading of the prompt once done (before the first piece): an
    evaluate.Loss of its first `score` characters, each scored against the prediction before it,
    with the state after the whole prompt; `.read_by_step` says whether the generation step read
    it (batched with other replies, or alone for a short prompt) rather than one call of the
    recurrent module (nn.LSTM, nn.GRU or nn.RNN).
    """

    def __init__(self, serving: Serving, prompt: str = "", state=None, sampling: Sampling = Sampling(),
                 score: int = 0, wake=None):
        self.serving, self.model, self.sampling = serving, serving.model, sampling
        self.wake = wake  # given: never block on the decoder; yield WAIT and SLOW (above) instead
        encoded = self.model.vocab.encode_report(prompt or "")
        self.prompt_ids, self.skipped = encoded.ids, encoded.skipped
        self.score = min(score, len(self.prompt_ids))
        self.read: Loss | None = None
        self.read_by_step = False
        self.steps: int | None = None  # batched: the decoder's steps from joining to leaving (prompt + text)
        self.state = state
        self.text = ""
        self.stopped_by: str | None = None  # "stop", "length" or None while running
        self.stop_text = ""
        self._iter = self._run()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._iter)

    def close(self) -> None:
        """Stop here: with a decoder, this reply's row leaves the batch before the decoder's next
        step. Call it when a reader leaves early: an unfinished stream holds its own generator (a
        reference cycle), so without it the row would step on until the garbage collector ran."""
        self._iter.close()

    def _read_prompt(self, state):
        """The logits for the first character and the state after the prompt, read here (alone)
        by the loss loop, which scores its first `score` characters on the way: a short prompt
        through the generation step, a long one through the recurrent module (oneDNN: faster per
        character)."""
        model, prompt = self.model, self.prompt_ids
        self.read_by_step = 0 < len(prompt) <= PROMPT_STEP_CHARS
        ids = torch.tensor(prompt, dtype=torch.long, device=state[0].device)
        step = self.serving.step() if self.read_by_step else None
        self.read = text_loss(model, ids, state, scored=self.score, step=step)
        with torch.no_grad():
            return model.logits_from_state(self.read.state)[0], self.read.state

    def _run(self):
        # Grad mode is set around each computation, never across a yield, so that the code reading
        # the stream runs unaffected.
        s = self.sampling
        state = self.state if self.state is not None else self.model.begin_state(1)
        generator = make_generator(s.seed)
        decoder = self.serving.decoder
        feed = ()
        if decoder is not None and self.prompt_ids:
            # The decoder reads the prompt, batched with every other reply's steps (and with no
            # text to write, only reads it: a measurement, taking turns like any other row).
            with torch.no_grad():
                logits = self.model.logits_from_state(state)[0]
            self.state, self.read_by_step, feed = state, True, self.prompt_ids
        else:
            if self.wake is not None and (decoder is None or self.prompt_ids):
                yield SLOW  # read here, and without a decoder stepped here too
            logits, self.state = self._read_prompt(state)
            if s.max_new_chars == 0:
                self.stopped_by = "length"
                return
        if decoder is not None:
            matcher = yield from self._batched(decoder, logits, generator, feed)
        else:
            matcher = StopMatcher(s.stop, s.max_new_chars)
            yield from self._alone(matcher, logits, generator)
        self.text, self.stopped_by, self.stop_text = matcher.text, matcher.stopped_by, matcher.stop_text

    def _alone(self, matcher: StopMatcher, logits, generator):
        """Step one character at a time in this thread (a batch of one)."""
        s, chars, step = self.sampling, self.model.vocab.chars, self.serving.step()
        next_id = torch.zeros(1, dtype=torch.long, device=logits.device)
        state, sent, done = self.state, 0, False
        while not done:
            with torch.no_grad():
                idx = sample_rows(logits.reshape(1, -1), [s], [generator.random()])[0]
                next_id[0] = idx
                step_logits, state = step.step(next_id, state)
                logits = step_logits[0]
            self.state = state
            done = matcher.push(chars[idx])
            self.text = matcher.text
            shown = matcher.shown()
            if shown > sent:
                yield matcher.text[sent:shown]
                sent = shown

    def _batched(self, decoder, logits, generator, feed=()):
        """Characters from the shared decoder, which steps this reply with all the others (after
        reading `feed`, the prompt's ids, if any)."""
        request = decoder.submit(logits, self.state, self.sampling, generator, feed, self.score, self.wake)
        try:
            while True:
                if self.wake is None:
                    item = request.outbox.get()
                else:
                    try:
                        item = request.outbox.get_nowait()
                    except queue.Empty:
                        yield WAIT
                        continue
                if isinstance(item, Exception):
                    raise item
                if item is None:
                    self.steps = request.left - request.joined
                    if self.wake is not None:
                        yield SLOW  # the reader's own bookkeeping follows
                    return request.matcher
                if isinstance(item, Read):
                    self.state = (item.h, item.c)
                    self.read = Loss(item.total, item.count, self.state)
                    continue
                piece, h, c = item
                self.state = (h, c)  # the state after the last character stepped
                if piece:
                    self.text += piece
                    yield piece
        finally:
            request.cancel()


def stream(model, prompt: str = "", state=None, max_new_chars: int = 500, temperature: float = 1.0, top_k=None,
           top_p=None, greedy: bool = False, seed=None, stop=None, serving: Serving | None = None) -> Stream:
    """Like `generate`, but yields the text in pieces as it is sampled; `.state` holds the final state.

    `serving` (a lstm_model.serving.Serving of this model) sets the engine, int8 and batching."""
    sampling = Sampling(max_new_chars=max_new_chars, temperature=temperature, top_k=top_k, top_p=top_p,
                        greedy=greedy, seed=seed, stop=stop)
    if serving is None:
        serving = default_serving(model)
    elif serving.model is not model:
        raise ValueError("The serving was built for another model; build a Serving for this one.")
    return Stream(serving, prompt, state, sampling)


def generate(model, prompt: str = "", state=None, max_new_chars: int = 500, temperature: float = 1.0, top_k=None,
             top_p=None, greedy: bool = False, seed=None, stop=None, serving: Serving | None = None):
    """Sample up to `max_new_chars` characters after `prompt` (fed from `state`, default fresh).

    Returns (text, state): the sampled text without the prompt (and without a stop sequence that
    ended it) and the LSTM state after everything fed and sampled.
    """
    s = stream(model, prompt, state, max_new_chars, temperature, top_k, top_p, greedy, seed, stop, serving)
    for _ in s:
        pass
    if s.skipped:
        warnings.warn(f"The prompt's characters {s.skipped!r} are not in the model's vocabulary and were skipped.",
                      stacklevel=2)
    return s.text, s.state
