"""Continuous batching for serving: many chat sessions' next-character steps in one LSTM step.

One step for 16 sessions costs about twice one step for one session on 2 CPU cores (1.7x fp32,
2.4x int8 on ONNX Runtime; benchmarks/README.md), far less than 16 steps. A `Decoder` owns one
background thread per model. Sessions `submit` a request (the logits and (h, c) after what they
have read, or a short prompt to feed first, their own sampling settings and random generator);
at every step the thread gathers all active requests, feeds prompt characters to the rows still
reading theirs, samples the other rows each with its own settings and generator (`sample_rows`),
runs one fused step (`Stepper.for_model`: ONNX Runtime where installed) for the whole batch and
hands every session its characters. Requests join and leave between steps. A session's text
equals what it would get alone with the same seed: its draw depends only on its own logits,
settings and generator (int8 rows are quantised independently of one another, with a fixed input
scale, see onnx_step; fp32 rows differ from batch-1 only by float rounding, which can flip a
draw only when it falls within ~1e-7 of a boundary).

No gradio here: the app and the chat session use it through `Stream(..., decoder=...)`.
"""

from __future__ import annotations

import queue
import threading
import time

import torch

from .generate import Stepper, sample_rows

_FINISHED = None
# Every session is handed its new characters together, this often (and its first character at
# once, and the rest when it finishes): waking every session's thread at every step would cost
# more than the step itself.
FLUSH_SECONDS = 0.02


class Request:
    """One session's generation in the decoder: its state, settings, text so far and an outbox."""

    def __init__(self, decoder, logits, state, settings, generator, prefill=()):
        self.decoder = decoder
        self.logits = logits.reshape(-1)
        self.prefill = list(prefill)  # prompt characters to feed before sampling (no draws for them)
        self.fed = 0
        self.h, self.c = state
        self.settings = settings
        self.generator = generator
        self.text = ""
        self.sent = 0  # characters of .text already handed to the session
        self.stops = tuple(settings.stop)
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False
        self.stopped_by: str | None = None

    def cancel(self) -> None:
        self.cancelled = True
        self.decoder._cancelled = True  # after the request's own flag: the decoder clears, then scans


class Decoder:
    """A background thread that steps every active request of one model together."""

    def __init__(self, model, max_batch: int = 64):
        self.model = model
        self.max_batch = max_batch
        self._last_flush = 0.0  # when every session was last handed its new text
        self._pending: list[Request] = []
        self._active: list[Request] = []
        self._wake = threading.Condition()
        self._cancelled = False  # some request was cancelled since the last scan
        self._thread: threading.Thread | None = None
        self.steps = 0  # batched steps taken (for tests and benchmarks)
        self.rows = 0  # characters produced

    @classmethod
    def for_model(cls, model) -> "Decoder":
        decoder = getattr(model, "_decoder", None)
        if decoder is None:
            decoder = cls(model)
            model._decoder = decoder
        return decoder

    def submit(self, logits, state, settings, generator, prefill=()) -> Request:
        """Add a session: the logits and (h, c) after what it has read, its settings and random
        generator, and optionally `prefill`, prompt ids to feed first (then `logits` is unused).
        Its pieces arrive in `request.outbox` as (text, h, c), then None (or an exception)."""
        request = Request(self, logits, state, settings, generator, prefill)
        with self._wake:
            self._pending.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lstm-decoder", daemon=True)
                self._thread.start()
            self._wake.notify()
        return request

    def _loop(self) -> None:
        torch.set_grad_enabled(False)  # grad mode is per thread: this one only runs inference
        chars, stepper = self.model.vocab.chars, None
        active: list[Request] = []
        h = c = logits = None  # the active requests' states and next logits, one row each, in order
        prefilling = False  # some active row is still reading its prompt
        while True:
            joining: list[Request] = []
            if self._pending or not active:
                with self._wake:
                    while not active and not self._pending:
                        self._active = active
                        self._wake.wait()
                    room = self.max_batch - len(active)
                    joining, self._pending = self._pending[:room], self._pending[room:]
            try:
                if self._cancelled:
                    self._cancelled = False
                    cancelled = [i for i, r in enumerate(active) if r.cancelled]
                    if cancelled:
                        h, c, logits = self._leave(active, cancelled, h, c, logits, "cancelled")
                if joining:  # join between steps: their rows go at the end of the batch
                    new_h = torch.cat([r.h for r in joining], dim=1)
                    new_c = torch.cat([r.c for r in joining], dim=1)
                    new_logits = torch.stack([r.logits for r in joining])
                    h = new_h if not active else torch.cat([h, new_h], dim=1)
                    c = new_c if not active else torch.cat([c, new_c], dim=1)
                    logits = new_logits if not active else torch.cat([logits, new_logits])
                    active = active + joining
                    prefilling = prefilling or any(r.prefill for r in joining)
                    stepper = Stepper.for_model(self.model)  # rebuilt only if the weights changed
                self._active = active
                if not active:
                    continue
                feeding = {i for i, r in enumerate(active) if r.fed < len(r.prefill)} if prefilling else set()
                if not feeding:
                    prefilling = False
                    ids = sample_rows(logits, [r.settings for r in active], [r.generator.random() for r in active])
                else:
                    ids = self._prefill_ids(active, feeding, logits)
                logits, (h, c) = stepper.step(torch.tensor(ids), (h, c))
            except Exception as err:  # never leave a session waiting forever
                for r in active + joining:
                    r.outbox.put(err)
                active, h, c, logits = [], None, None, None
                continue
            self.steps += 1
            self.rows += len(active)
            done, now = [], time.monotonic()
            flush = now - self._last_flush >= FLUSH_SECONDS  # every session's new text, together
            if flush:
                self._last_flush = now
            for i, (r, idx) in enumerate(zip(active, ids)):
                if feeding and i in feeding:
                    continue  # a prompt character was fed: nothing to emit
                r.text += chars[idx]
                if r.stops and r.text.endswith(r.stops):
                    r.stopped_by = "stop"
                    done.append(i)
                elif len(r.text) >= r.settings.max_new_chars:
                    r.stopped_by = "length"
                    done.append(i)
                elif flush or not r.sent:  # the first character at once, then with the others
                    r.outbox.put((r.text[r.sent :], h[:, i : i + 1], c[:, i : i + 1]))
                    r.sent = len(r.text)
            if done:
                h, c, logits = self._leave(active, done, h, c, logits, None)

    @staticmethod
    def _prefill_ids(active, feeding, logits) -> list[int]:
        """This step's input ids when some rows are still reading their prompt: their next prompt
        character, and a sampled one (drawn from their own generator) for the others."""
        ids = [0] * len(active)
        for i in feeding:
            r = active[i]
            ids[i] = r.prefill[r.fed]
            r.fed += 1
        sampling = [i for i in range(len(active)) if i not in feeding]
        if sampling:
            drawn = sample_rows(logits.index_select(0, torch.tensor(sampling)), [active[i].settings for i in sampling],
                                [active[i].generator.random() for i in sampling])
            for i, idx in zip(sampling, drawn):
                ids[i] = idx
        return ids

    def _leave(self, active, rows, h, c, logits, why):
        """Finish the requests at `rows` (their last state handed over) and drop their rows."""
        for i in rows:
            r = active[i]
            r.h, r.c = h[:, i : i + 1], c[:, i : i + 1]
            self._finish(r, why or r.stopped_by)
        keep = [i for i in range(len(active)) if i not in set(rows)]
        active[:] = [active[i] for i in keep]
        if not keep:
            return None, None, None
        index = torch.tensor(keep)
        return h.index_select(1, index), c.index_select(1, index), logits.index_select(0, index)

    @staticmethod
    def _finish(request: Request, why: str) -> None:
        request.stopped_by = why
        if len(request.text) > request.sent:
            request.outbox.put((request.text[request.sent :], request.h, request.c))
            request.sent = len(request.text)
        request.outbox.put(_FINISHED)

