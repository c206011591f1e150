"""Continuous batching for serving: many chat sessions' next-character steps in one LSTM step.

A batch-1 LSTM step is bound by reading the weights, so stepping 16 sessions together costs
little more than stepping one. A `Decoder` owns one background thread per model. Sessions
`submit` a request (the logits and (h, c) after their prompt, their own sampling settings and
random generator); at every step the thread gathers all active requests, samples each row with
its own settings and generator (`sample_rows`), stacks their states into one batch, runs one
fused step (`Stepper`) and hands every session its character. Requests join and leave between
steps. A session's text equals what it would get alone with the same seed: its draw depends only
on its own logits, settings and generator (up to float rounding of the batched product, which can
flip a draw only when it falls within ~1e-7 of a boundary).

No gradio here: the app and the chat session use it through `Stream(..., decoder=...)`.
"""

from __future__ import annotations

import queue
import threading

import torch

from .generate import Stepper, draw_uniform, sample_rows

_FINISHED = None


class Request:
    """One session's generation in the decoder: its state, settings, text so far and an outbox."""

    def __init__(self, logits, state, settings, generator):
        self.logits = logits.reshape(-1)
        self.h, self.c = state
        self.settings = settings
        self.generator = generator
        self.text = ""
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False
        self.stopped_by: str | None = None

    @property
    def state(self):
        return self.h, self.c

    def cancel(self) -> None:
        self.cancelled = True


class Decoder:
    """A background thread that steps every active request of one model together."""

    def __init__(self, model, max_batch: int = 64):
        self.model = model
        self.max_batch = max_batch
        self._pending: list[Request] = []
        self._active: list[Request] = []
        self._wake = threading.Condition()
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

    def submit(self, logits, state, settings, generator) -> Request:
        request = Request(logits, state, settings, generator)
        with self._wake:
            self._pending.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lstm-decoder", daemon=True)
                self._thread.start()
            self._wake.notify()
        return request

    def _loop(self) -> None:
        chars = self.model.vocab.chars
        while True:
            with self._wake:
                while not self._active and not self._pending:
                    self._wake.wait()
                room = self.max_batch - len(self._active)
                self._active.extend(self._pending[:room])
                del self._pending[:room]
            self._active = [r for r in self._active if not r.cancelled or self._finish(r, "cancelled")]
            if not self._active:
                continue
            active = self._active
            try:
                with torch.no_grad():
                    ids = sample_rows(torch.stack([r.logits for r in active]), [r.settings for r in active],
                                      torch.cat([draw_uniform(r.generator) for r in active]))
                    h = torch.cat([r.h for r in active], dim=1)
                    c = torch.cat([r.c for r in active], dim=1)
                    logits, (h, c) = Stepper.for_model(self.model).step(torch.tensor(ids), (h, c))
            except Exception as err:  # never leave a session waiting forever
                for r in active:
                    r.outbox.put(err)
                self._active = []
                continue
            self.steps += 1
            self.rows += len(active)
            still = []
            for i, (r, idx) in enumerate(zip(active, ids)):
                r.h, r.c, r.logits = h[:, i : i + 1], c[:, i : i + 1], logits[i]
                r.text += chars[idx]
                r.outbox.put(chars[idx])
                if any(r.text.endswith(st) for st in r.settings.stop):
                    self._finish(r, "stop")
                elif len(r.text) >= r.settings.max_new_chars:
                    self._finish(r, "length")
                else:
                    still.append(r)
            self._active = still

    @staticmethod
    def _finish(request: Request, why: str) -> bool:
        request.stopped_by = why
        request.outbox.put(_FINISHED)
        return False
