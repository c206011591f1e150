"""Continuous batching for serving: many chat sessions' next-character steps in one LSTM step.

One step for 16 sessions costs about twice one step for one session on 2 CPU cores (fp32 or
int8; benchmarks/README.md), far less than 16 steps. A `Decoder` owns one background thread per
model. Sessions `submit` a request (the logits and (h, c) after what they have read, or a short
prompt to feed first, their own sampling settings and random generator); at every step the
thread gathers all active requests, feeds prompt characters to the rows still reading theirs,
samples the other rows each with its own settings and generator (`sample_rows`), runs one fused
step (`Stepper`) for the whole batch and hands every session its characters. Requests join and
leave between steps. A session's text equals what it would get alone with the same seed: its
draw depends only on its own logits, settings and generator (int8 rows are quantised
independently of one another, see quantize.UnitRangeInt8Linear; fp32 rows differ from batch-1
only by float rounding, which can flip a draw only when it falls within ~1e-7 of a boundary).

No gradio here: the app and the chat session use it through `Stream(..., decoder=...)`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import random
import threading
import time

import torch

from .generate import Stepper, sample_rows

_FINISHED = None
# Characters are handed to each session in pieces at most this often (and when it finishes):
# waking every session's thread at every step would cost more than the step itself.
FLUSH_SECONDS = 0.02


class Request:
    """One session's generation in the decoder: its state, settings, text so far and an outbox."""

    def __init__(self, decoder, logits, state, settings, generator, prefill=(), outbox=None):
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
        self.last_flush = time.monotonic()
        self.outbox = queue.SimpleQueue() if outbox is None else outbox  # anything with .put(item)
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

    def submit(self, logits, state, settings, generator, prefill=(), outbox=None) -> Request:
        """Add a session: the logits and (h, c) after what it has read, its settings and random
        generator, and optionally `prefill`, prompt ids to feed first (then `logits` is unused).
        Its pieces go to `request.outbox` (or to the given `outbox`)."""
        request = Request(self, logits, state, settings, generator, prefill, outbox)
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
                elif now - r.last_flush >= FLUSH_SECONDS:
                    r.outbox.put((r.text[r.sent :], h[:, i : i + 1], c[:, i : i + 1]))
                    r.sent, r.last_flush = len(r.text), now
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


# -- decoders in worker processes ----------------------------------------------------------------


class ProcessDecoder:
    """`processes` Decoders in worker processes, each stepping its share of the sessions.

    One Python process cannot step two batches at once: every torch op hands the GIL back and
    forth, and two decoder threads measured 0.3-0.7x of one. Worker processes have a GIL each, so
    on 2 cores two of them step two half-batches at the same time. Same interface as `Decoder`
    (`submit` -> a request with `.outbox` and `.cancel()`); a session's text is the same as with a
    Decoder or alone (its random generator travels with the request). Each worker holds a copy of
    the model as it was when the ProcessDecoder started (weights and `serve_int8`), and starts in a
    few seconds (importing torch); requests submitted meanwhile wait.
    """

    def __init__(self, model, processes: int = 2, max_batch: int = 64):
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self.processes = processes
        self._inboxes = [context.Queue() for _ in range(processes)]
        self._results = context.Queue()
        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        int8 = bool(getattr(model, "serve_int8", False))
        self._workers = [context.Process(target=_worker_main, name=f"lstm-decoder-{i}", daemon=True,
                                         args=(i, model.config, weights, int8, max_batch, self._inboxes[i], self._results))
                         for i in range(processes)]
        for worker in self._workers:
            worker.start()
        self._requests: dict[int, _RemoteRequest] = {}
        self._load = [0] * processes  # requests in flight per worker
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="lstm-decoder-results", daemon=True)
        self._reader.start()

    @classmethod
    def for_model(cls, model, processes: int = 2) -> "ProcessDecoder":
        decoder = getattr(model, "_process_decoder", None)
        if decoder is None or not decoder.alive():
            decoder = cls(model, processes)
            model._process_decoder = decoder
        return decoder

    def alive(self) -> bool:
        return all(w.is_alive() for w in self._workers)

    def submit(self, logits, state, settings, generator, prefill=()) -> "_RemoteRequest":
        with self._lock:
            worker = min(range(self.processes), key=self._load.__getitem__)
            self._load[worker] += 1
            request = _RemoteRequest(self, next(self._ids), worker)
            self._requests[request.id] = request
        h, c = state
        self._inboxes[worker].put(("submit", request.id, logits.detach().reshape(-1).cpu(), h.detach().cpu(),
                                   c.detach().cpu(), settings, generator.getstate(), list(prefill)))
        return request

    def _cancel(self, request: "_RemoteRequest") -> None:
        self._inboxes[request.worker].put(("cancel", request.id))

    def _read(self) -> None:
        while True:
            try:
                worker, request_id, item = self._results.get()
            except (EOFError, OSError):  # the queue was closed: the workers are gone
                item, worker = RuntimeError("The decoder processes stopped; restart the app."), None
                with self._lock:
                    waiting, self._requests = list(self._requests.values()), {}
                for request in waiting:
                    request.outbox.put(item)
                return
            with self._lock:
                request = self._requests.get(request_id)
                if request is not None and (item is None or isinstance(item, Exception)):
                    del self._requests[request_id]
                    self._load[worker] -= 1
            if request is not None:
                request.outbox.put(item)

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(("stop",))
        for worker in self._workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()


class _RemoteRequest:
    def __init__(self, decoder: ProcessDecoder, request_id: int, worker: int):
        self.decoder, self.id, self.worker = decoder, request_id, worker
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()

    def cancel(self) -> None:
        self.decoder._cancel(self)


class _Forward:
    """A worker-side outbox: pieces go back to the parent process, tagged with the request id."""

    def __init__(self, results, worker: int, request_id: int, local: dict):
        self.results, self.worker, self.request_id, self.local = results, worker, request_id, local

    def put(self, item) -> None:
        if isinstance(item, tuple):  # (piece, h, c): the states are views into the batch: copy the row
            piece, h, c = item
            item = (piece, h.clone(), c.clone())
        else:  # finished (None) or failed
            self.local.pop(self.request_id, None)
        self.results.put((self.worker, self.request_id, item))


def _worker_main(index, config, weights, int8, max_batch, inbox, results) -> None:
    """A worker process: its own model copy and Decoder, fed by `inbox`, answering on `results`."""
    torch.set_num_threads(1)
    from .model import CharLSTM

    model = CharLSTM(**config)
    model.load_state_dict(weights)
    model.eval()
    model.serve_int8 = int8
    decoder = Decoder(model, max_batch)
    local: dict = {}
    while True:
        command = inbox.get()
        if command[0] == "submit":
            _, request_id, logits, h, c, settings, generator_state, prefill = command
            generator = random.Random()
            generator.setstate(generator_state)
            local[request_id] = decoder.submit(logits, (h, c), settings, generator, prefill,
                                               outbox=_Forward(results, index, request_id, local))
        elif command[0] == "cancel":
            request = local.get(command[1])
            if request is not None:
                request.cancel()
        else:
            return


def default_processes() -> int:
    """Decoder processes for serving: one per CPU core, at most 2 (DECODER_PROCESSES overrides;
    0 or 1 means one decoder thread in the app's own process)."""
    value = os.environ.get("DECODER_PROCESSES")
    return int(value) if value is not None else min(2, os.cpu_count() or 1)
