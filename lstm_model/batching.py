"""Continuous batching: many replies' next-character steps as one LSTM step.

One step for many replies costs far less than one step for each (benchmarks/README.md, "Batched
serving"): a step's cost is mostly fixed overhead at these sizes. A `Decoder` owns one
background thread for one served model (lstm_model.serving builds it). A reply `submit`s the
logits and (h, c) it starts from, the ids it must first read (its prompt: a chat message and the
turn separator) and how many of them to score, its checked `Sampling` and its own random
generator; at every step the thread gathers all active replies, feeds each reading row its next
prompt character (scoring it against the row's prediction: the message's loss comes for free) and
samples each writing row with its own settings and generator (`sample_rows`), runs one step for
the whole batch and follows each row's text with its own `StopMatcher`. Replies join and leave
between steps, so a crowd's messages are read together, as one batch, instead of one LSTM call
each. A reply's text equals what it would get
alone with the same seed: its draw depends only on its own logits, settings and generator (int8
rows are quantised independently of one another, with a fixed input scale, see step.py; fp32 rows
differ from batch-1 only by float rounding, which can flip a draw only when it falls within ~1e-7
of a boundary).

Reading rows may also be stepped without the writers (below: "Reads go first"): a chat message
one step at a time, the rest of a long prompt in slices that take turns with the full steps. A
request with nothing to write only reads (a measurement: the message from a fresh memory) and
leaves once read; a cancelled one (its reader gone) leaves before the next step.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import torch

from .sampling import Sampling, StopMatcher, sample_rows

_FINISHED = None
# Every reply is handed its new characters together, this often (and its first character at
# once, and the rest when it finishes): waking every reply's thread at every step would cost more
# than the step itself.
FLUSH_SECONDS = 0.02
# ...and less often when many replies are active, so that all their readers together are woken
# about this many times a second (each wake-up costs their threads a few tens of microseconds).
MAX_HANDOVERS_PER_S = 250
# Reads go first: while some replies are still reading their prompts, the decoder steps those rows
# alone (a small batch, so a short step) and the writing rows wait, at most this long between their
# steps. A newcomer's message is then read at the pace of small steps instead of the crowd's full
# ones, and the writers still get a full step at least every READ_FIRST_S plus that step, faster
# than people read. 0 steps every row at every step.
READ_FIRST_S = 0.02
# ...but only a prompt's first this many characters go first: a chat message is shorter. The rest
# of a longer prompt (a pasted 20,000-character text would otherwise hold every writer to one step
# per READ_FIRST_S for the 20,000 steps of its read) takes turns with the writers: after each full
# step, the reading rows are stepped alone, in one slice of steps, for at most LONG_READ_TURN times
# as long as that full step took (1: half the decoder's time reads long prompts, half steps
# everyone, so the writers keep at least half their pace), and never longer than READ_FIRST_S
# (with nobody writing, slices of READ_FIRST_S: newcomers join between them).
READ_FIRST_CHARS = 256
LONG_READ_TURN = 1.0


@dataclass
class Read:
    """A reply's prompt has been read: the summed loss (nats) of its first `count` characters,
    each scored against the prediction before it, and the state after the whole prompt."""

    total: float
    count: int
    h: torch.Tensor
    c: torch.Tensor


class Request:
    """One reply in the decoder: its state, prompt to read, settings, text so far (a StopMatcher)
    and an outbox."""

    def __init__(self, decoder, logits, state, sampling: Sampling, generator, feed=(), score: int = 0, wake=None):
        self.decoder = decoder
        self.wake = wake  # called (from the decoder's thread) after each item put in the outbox, if given
        self.logits = logits.reshape(-1)
        self.h, self.c = state
        self.sampling = sampling
        self.generator = generator
        self.joined = self.left = None  # the decoder's step count when it joined and left the batch
        self.feed = list(feed)  # prompt ids still to read, in order
        self.fed = 0
        self.score = min(score, len(self.feed))
        self.loss = 0.0
        self.matcher = StopMatcher(sampling.stop, sampling.max_new_chars)
        self.read_only = sampling.max_new_chars <= 0  # leaves once its prompt is read (a measurement)
        self.sent = 0  # characters of the text already handed to the reply's reader
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False

    def post(self, item) -> None:
        """Hand the reply's reader an item, and wake it if it waits without blocking a thread."""
        self.outbox.put(item)
        if self.wake is not None:
            self.wake()

    def cancel(self) -> None:
        """Leave the batch before the next step (the reader has gone); safe from any thread, at any time."""
        self.cancelled = True
        self.decoder._cancelled = True  # after the request's own flag: the decoder clears, then scans


class Decoder:
    """A background thread that steps every active reply of one model together.

    `get_step` returns the generation step to use (lstm_model.serving.Serving.step: built once,
    rebuilt if the weights change); it is asked again whenever replies join."""

    def __init__(self, model, get_step, max_batch: int = 64):
        self.chars = model.vocab.chars
        self.get_step = get_step
        self.max_batch = max_batch
        self._last_flush = 0.0  # when every reply was last handed its new text
        self._pending: list[Request] = []
        self._active: list[Request] = []
        self._wake = threading.Condition()
        self._cancelled = False  # some request was cancelled since the last scan
        self._closed = False  # the thread ends once nothing is left to do
        self._thread: threading.Thread | None = None
        self.read_first_s = READ_FIRST_S
        self.read_first_chars = READ_FIRST_CHARS
        self.long_read_turn = LONG_READ_TURN
        self.clock = time.monotonic
        self._last_full = 0.0  # when every active row was last stepped
        self._full_s = 0.0  # how long that full step took (the long reads' turn is as long)
        self.steps = 0  # batched steps taken (for tests and benchmarks)
        self.read_steps = 0  # of which steps of the reading rows alone
        self.rows = 0  # characters produced

    def submit(self, logits, state, sampling: Sampling, generator, feed=(), score: int = 0, wake=None) -> Request:
        """Add a reply: the logits and (h, c) it starts from, the prompt ids `feed` to read first
        (the first `score` of them scored), its settings and random generator. With a prompt, a
        `Read` arrives in `request.outbox` first; then its pieces as (text, h, c), the last one
        (whose text may be empty) with the final state, then None (or an exception);
        `request.matcher` holds the final text and why it stopped. With `sampling.max_new_chars`
        0 the request only reads (a prompt is then required): the `Read`, the final state, None.
        `request.cancel()` takes it out before the next step. `wake`, if given, is called after
        each item is put there (from the decoder's thread): a reader that polls the outbox instead
        of blocking a thread on it (an asyncio handler) learns when to look again."""
        if sampling.max_new_chars <= 0 and not feed:
            raise ValueError("A request that only reads needs a prompt to read.")
        request = Request(self, logits, state, sampling, generator, feed, score, wake)
        with self._wake:
            self._closed = False  # a reply after close() starts the thread again
            self._pending.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lstm-decoder", daemon=True)
                self._thread.start()
            self._wake.notify()
        return request

    def close(self, wait: bool = False) -> None:
        """End the thread once the replies it is writing are done (it holds the model while it runs);
        with `wait`, return once it has ended (a script about to exit: no thread left in native code)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread  # the loop sets it to None as it ends: read it here, under the lock
        if wait and thread is not None:
            thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _take_pending(self, active: list[Request]) -> list[Request] | None:
        """The requests that join now (waiting while there is nothing to do); None once closed
        with nothing to do."""
        with self._wake:
            while not active and not self._pending:
                self._active = active
                if self._closed:
                    self._thread = None
                    return None
                self._wake.wait()
            room = self.max_batch - len(active)
            joining, self._pending = self._pending[:room], self._pending[room:]
        return joining

    def _loop(self) -> None:
        torch.set_grad_enabled(False)  # grad mode is per thread: this one only runs inference
        step = None
        active: list[Request] = []
        h = c = logits = None  # the active requests' states and next logits, one row each, in order
        while True:
            joining = self._take_pending(active) if self._pending or not active else []
            if joining is None:
                return
            try:
                if joining:  # join between steps: their rows go at the end of the batch
                    for r in joining:
                        r.joined = self.steps
                    h, c, logits = self._join(active, joining, h, c, logits)
                    step = self.get_step()
                if self._cancelled:  # after joining: a request cancelled while it waited to join leaves too
                    self._cancelled = False
                    cancelled = [i for i, r in enumerate(active) if r.cancelled]
                    if cancelled:
                        h, c, logits = self._leave(active, cancelled, h, c, logits)
                self._active = active
                if not active:
                    continue
                reading = [i for i, r in enumerate(active) if r.fed < len(r.feed)]
                alone_s = self._reads_go_first(active, reading) if reading else None
                if alone_s is not None:
                    if alone_s:  # the rest of long prompts: a slice of steps, as long as the turn allows
                        h, c, logits = self._read_slice(active, reading, h, c, logits, step, alone_s)
                    else:  # chat messages: one step at a time (newcomers join at the next), long prompts wait
                        messages = [i for i in reading if active[i].fed < self.read_first_chars]
                        h, c, logits = self._read_alone(active, messages, h, c, logits, step)
                    read = self._read_only_done(active, reading)
                    if read:
                        h, c, logits = self._leave(active, read, h, c, logits)
                    continue
                started = self.clock()
                unread = set(reading)
                # A reading row draws no random number: its text depends only on its own generator.
                ids = sample_rows(logits, [r.sampling for r in active],
                                  [0.0 if i in unread else r.generator.random() for i, r in enumerate(active)])
                if reading:
                    self._read(active, reading, ids, logits)
                logits, (h, c) = step.step(torch.tensor(ids), (h, c))
            except Exception as err:  # never leave a reply waiting forever
                for r in active + joining:
                    r.post(err)
                active, h, c, logits = [], None, None, None
                continue
            self.steps += 1
            self._last_full = self.clock()  # the writers' wait starts now
            self._full_s = self._last_full - started
            self.rows += len(active) - len(reading)
            if reading:
                self._finish_reading(active, reading, h, c)
            done = self._hand_over(active, ids, h, c, unread) + self._read_only_done(active, reading)
            if done:
                h, c, logits = self._leave(active, done, h, c, logits)

    def _reads_go_first(self, active, reading) -> float | None:
        """Whether reading rows are stepped without the others now: None for a full step of every
        row. 0.0 for one step of the rows within their prompt's first `read_first_chars` (chat
        messages), the others waiting, while they have waited less than `read_first_s` since the
        last full step. When all reading rows are further into long prompts, the seconds of a
        slice of their steps: what is left of their turn, `long_read_turn` times as long as the
        last full step took and at most `read_first_s` (with nobody writing, `read_first_s`; a
        slice ends early when a request waits to join)."""
        waited = self.clock() - self._last_full
        if any(active[i].fed < self.read_first_chars for i in reading):
            return 0.0 if len(reading) < len(active) and waited < self.read_first_s else None
        if len(reading) == len(active):
            return self.read_first_s or None
        left = min(self.read_first_s, self._full_s * self.long_read_turn) - waited
        return left if left > 0 else None

    @staticmethod
    def _read_only_done(active, reading) -> list[int]:
        """The rows among `reading` that only read (a measurement) and have read their whole prompt."""
        return [i for i in reading if active[i].read_only and active[i].fed == len(active[i].feed)]

    def _read_alone(self, active, reading, h, c, logits, step):
        """One step of the reading rows alone (the writing rows wait): their next prompt
        characters read and scored; returns the whole batch's h, c and logits, the reading rows'
        replaced (new tensors: earlier states handed over stay as they were)."""
        index = torch.tensor(reading)
        rows = [active[i] for i in reading]
        ids = [0] * len(rows)
        self._read(rows, range(len(rows)), ids, logits.index_select(0, index))
        new_logits, (new_h, new_c) = step.step(torch.tensor(ids), (h.index_select(1, index), c.index_select(1, index)))
        self.steps += 1
        self.read_steps += 1
        self._finish_reading(rows, range(len(rows)), new_h, new_c)
        return h.index_copy(1, index, new_h), c.index_copy(1, index, new_c), logits.index_copy(0, index, new_logits)

    def _read_slice(self, active, reading, h, c, logits, step, seconds: float):
        """The reading rows alone for several steps: the next prompt character of each a step,
        until `seconds` have passed, one of them has read its whole prompt, a request waits to join
        or one was cancelled. The same steps as
        `_read_alone` takes one at a time (so the same states and scores), with the batch gathered
        once and the scores computed once per slice: a long prompt costs little more than its steps."""
        index = torch.tensor(reading)
        rows = [active[i] for i in reading]
        sub_h, sub_c, sub_logits = h.index_select(1, index), c.index_select(1, index), logits.index_select(0, index)
        end = self.clock() + seconds
        predictions, scored, targets = [], [], []  # each scored character, its row and its prediction
        while True:
            ids = [r.feed[r.fed] for r in rows]
            scoring = [k for k, r in enumerate(rows) if r.fed < r.score]
            if scoring:
                predictions.append(sub_logits if len(scoring) == len(rows)
                                   else sub_logits.index_select(0, torch.tensor(scoring)))
                scored += scoring
                targets += [ids[k] for k in scoring]
            for r in rows:
                r.fed += 1
            sub_logits, (sub_h, sub_c) = step.step(torch.tensor(ids), (sub_h, sub_c))
            self.steps += 1
            self.read_steps += 1
            if any(r.fed == len(r.feed) for r in rows) or self.clock() >= end or self._pending or self._cancelled:
                break  # (a newcomer, or a reader gone: they are seen to between steps)
        if scored:  # each row's losses added in the order read, as one step at a time adds them
            losses = torch.nn.functional.cross_entropy(torch.cat(predictions).float(), torch.tensor(targets),
                                                       reduction="none").tolist()
            for k, loss in zip(scored, losses):
                rows[k].loss += loss
        self._finish_reading(rows, range(len(rows)), sub_h, sub_c)
        return h.index_copy(1, index, sub_h), c.index_copy(1, index, sub_c), logits.index_copy(0, index, sub_logits)

    @staticmethod
    def _join(active, joining, h, c, logits):
        new_h = torch.cat([r.h for r in joining], dim=1)
        new_c = torch.cat([r.c for r in joining], dim=1)
        new_logits = torch.stack([r.logits for r in joining])
        if active:
            new_h, new_c, new_logits = torch.cat([h, new_h], dim=1), torch.cat([c, new_c], dim=1), torch.cat([logits, new_logits])
        active.extend(joining)
        return new_h, new_c, new_logits

    @staticmethod
    def _read(active, reading, ids, logits) -> None:
        """Put each reading row's next prompt character in `ids`, scoring it if it is among the
        first `score` against the row's prediction (`logits`, before the step)."""
        scored = [i for i in reading if active[i].fed < active[i].score]
        if scored:
            targets = torch.tensor([active[i].feed[active[i].fed] for i in scored])
            rows = logits.index_select(0, torch.tensor(scored)).float()
            losses = torch.nn.functional.cross_entropy(rows, targets, reduction="none").tolist()
            for i, loss in zip(scored, losses):
                active[i].loss += loss
        for i in reading:
            r = active[i]
            ids[i] = r.feed[r.fed]
            r.fed += 1

    @staticmethod
    def _finish_reading(active, reading, h, c) -> None:
        """Hand a `Read` to each row that has just read the last character of its prompt."""
        for i in reading:
            r = active[i]
            if r.fed == len(r.feed):
                r.post(Read(r.loss, r.score, h[:, i : i + 1], c[:, i : i + 1]))

    def _hand_over(self, active, ids, h, c, read=()) -> list[int]:
        """Add each writing row's character to its text (the rows in `read` stepped a prompt
        character); hand the new text over (every FLUSH_SECONDS or less often, and a reply's first
        character at once); return the rows that finished."""
        done, now = [], time.monotonic()
        flush = now - self._last_flush >= max(FLUSH_SECONDS, len(active) / MAX_HANDOVERS_PER_S)
        if flush:
            self._last_flush = now
        chars = self.chars
        for i, (r, idx) in enumerate(zip(active, ids)):
            if i in read:  # a prompt character, not a written one
                continue
            if r.matcher.push(chars[idx]):
                done.append(i)
            elif flush or not r.sent:
                shown = r.matcher.shown()
                if shown > r.sent:
                    r.post((r.matcher.text[r.sent : shown], h[:, i : i + 1], c[:, i : i + 1]))
                    r.sent = shown
        return done

    def _leave(self, active, rows, h, c, logits):
        """Finish the requests at `rows` (their last state handed over) and drop their rows."""
        for i in rows:
            r = active[i]
            r.left = self.steps
            r.h, r.c = h[:, i : i + 1], c[:, i : i + 1]
            text = r.matcher.text  # the rest, possibly nothing, with the final state (after any stop)
            r.post((text[r.sent :], r.h, r.c))
            r.sent = len(text)
            r.post(_FINISHED)
        keep = [i for i in range(len(active)) if i not in set(rows)]
        active[:] = [active[i] for i in keep]
        if not keep:
            return None, None, None
        index = torch.tensor(keep)
        return h.index_select(1, index), c.index_select(1, index), logits.index_select(0, index)
