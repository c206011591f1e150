"""The app's handlers: one per action (chat, retry, undo, reset, memory, load), used by the page
and, through their type hints, by the named API endpoints; the sessions they work on and their
bounds. Options come from app.py's command line. The chat's HTML is in ui.render, the event-loop
bridging in ui.bridge, the request checks in ui.checks, the served models in ui.models and the
memory panel in ui.panel; the names tests and benchmarks import from here are re-exported.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import anyio
import gradio as gr

from lstm_model.hub import DEFAULT_MODEL, ModelLoadError, bundled_models
from lstm_model.sampling import SamplingError
from lstm_model.serving import Serving, default_step_threads
from lstm_model.session import ChatSession
from lstm_model.sources import repo_id_form

from .bridge import MAX_UPDATES_PER_S, STREAM_INTERVAL_S, acquire, paced, unblocked, waker, whole_if_direct
from .checks import (
    DEFAULTS,
    Busy,
    already_serving,
    checked_text,
    custom_models_off,
    is_local_path,
    load_error,
    path_form,
    refusal,
    sampling_from,
    serving_line,
)
from .guides import guide_for
from .models import ServedModels

# Re-exported, not used here: names that tests and benchmarks (and ui's modules before the split)
# import from ui.actions.
from .checks import RANGES  # noqa: F401
from .models import MAX_MODELS  # noqa: F401
from .panel import (  # noqa: F401
    FIGURE_WIDTH_IN,
    HEATMAP_CHOICES,
    MIN_FONT_PT,
    PANEL_PARTS,
    found_units,
    inspected_unit,
    panel_figures,
)
from .render import INLINE_FRESH_CHARS, escape, history_of, verdict_html  # noqa: F401

SESSION_TTL_S = 2 * 3600  # an idle session's memory is freed after this long
# Sessions kept at once, and their bytes together (transcripts and state snapshots): past either,
# the least recently used idle sessions are evicted first.
MAX_SESSIONS = 1000
MAX_SESSIONS_BYTES = 256 * 2**20
# Namespaces of session keys: the page's and the API's sessions are keyed by Gradio's session hash,
# the stream route's by tokens the server makes; no caller-sent value crosses from one to the other.
PAGE, STREAM = "page", "stream"
STREAM_TOKEN_BYTES = 18  # 144 random bits, 24 characters


@dataclass
class Options:
    """How the app serves: explicit choices, filled by app.py from its flags and the environment."""

    model: str | None = None
    int8: str = "auto"  # int8 generation steps: auto = where the model's int8.json allows them
    engine: str = "auto"  # the generation step's engine (lstm_model.step)
    batching: bool = True  # one decoder steps all replies of a model together (lstm_model.batching)
    concurrency: int = 256  # replies streaming at once (all in one decoder batch); beyond, "busy"
    threads: int = 1  # torch's threads (the memory measures, the torch step): the other core serves the page
    # ONNX Runtime's threads for the generation step (the decoder): both cores of a 2-vCPU machine.
    # A crowd's batched step is faster on 2 threads, one row no slower (docs/serving.md, "Threads").
    step_threads: int = field(default_factory=default_step_threads)
    custom_models: bool = True  # visitors may load Hub repos and local folders (off on a public Space)
    fresh_replies: bool = True  # after each reply, the reply a fresh memory writes (one more decoder row per turn)
    on_space: bool = False  # running on Hugging Face Spaces (SPACE_ID set)
    share: bool = False
    host: str | None = None
    port: int | None = None


# -- sessions ---------------------------------------------------------------------------------


def with_fresh_reply(session: ChatSession) -> None:
    """After a reply has streamed: the reply a fresh memory writes for the same message (through
    the same serving, so batched with other replies). A failure here leaves it out; the reply stands."""
    if session.turns and session.turns[-1].done:
        try:
            session.fresh_reply(-1)
        except Exception:  # noqa: BLE001 - the comparison is optional; the conversation goes on
            pass


class ChatState:
    """One browser (or API client) session: its served model, its ChatSession, a lock for its turns."""

    def __init__(self, serving: Serving, source: str | None = None):
        self.serving = serving
        self.source = source  # what the visitor picked (a bundled name, a repo id...): the page's guide follows it
        self.session = ChatSession(serving.model, memory=True, serving=serving)
        self.notes: list[str] = []  # notices about the last message, for the page
        self.lock = threading.Lock()
        self.changes = 0  # counts the changes to the conversation, so that a stale panel is not shown
        self.unit_chosen = False  # until the visitor picks a unit, the inspector shows the best one for DEFAULT_PATTERN
        self.used = time.monotonic()
        self.nbytes = 0  # the session's size after its last change (measured_size), for the sessions' bound

    def measure(self) -> None:
        self.nbytes = measured_size(self.session)

    def switch(self, serving: Serving, source: str | None = None) -> None:
        self.serving, self.source = serving, source
        self.session = ChatSession(serving.model, memory=self.session.memory, serving=serving)
        self.unit_chosen = False  # another model's units: the inspector picks one worth seeing again

    @property
    def guide(self):
        """What the page says about the model this session is served (ui.guides)."""
        return guide_for(self.source, self.serving.model)


def measured_size(session: ChatSession) -> int:
    """About how many bytes a conversation holds: its texts (4 bytes a character at most), its
    state snapshots and the gate traces it keeps for the panel."""
    size = session.cache_bytes()
    for turn in session.turns:
        size += 4 * (len(turn.user) + len(turn.fed) + len(turn.reply) + len(turn.fresh_reply or ""))
        for state in (turn.state_before, turn.state_after_user, turn.state_after):
            size += sum(t.numel() * t.element_size() for t in state or ())
    return size


class ChatApp:
    """The app's state (served models, sessions) and its handlers: one per action, used by the page
    and, with their type hints, by the named API endpoints (gr.api)."""

    def __init__(self, options: Options):
        self.options = options
        self.served = ServedModels(options)  # models are read-only: sessions share them
        self.default = self.served.get(options.model)
        self.default_name = options.model or DEFAULT_MODEL
        self._sessions: OrderedDict[tuple[str, str], ChatState] = OrderedDict()  # least recently used first
        self._sessions_lock = threading.Lock()
        self._streaming = 0  # replies being written now (admitted)
        self._streaming_lock = threading.Lock()

    def choices(self) -> list[str]:
        """The models a visitor can pick: the bundled ones, and the one the app was started with."""
        names = list(bundled_models())
        if self.options.model and self.options.model not in names:
            names.append(self.options.model)
        return names

    def allowed(self, source: str) -> bool:
        """Whether visitors may load `source`: anything when custom models are on, else a choice."""
        return self.options.custom_models or source in self.choices()

    @contextlib.contextmanager
    def admitted(self):
        """A reply's place among the replies streaming now: at most `options.concurrency` (all of
        them in one decoder batch, so each joins within a step); beyond that, gr.Error (busy)."""
        with self._streaming_lock:
            if self._streaming >= self.options.concurrency:
                n = self._streaming
                raise Busy(f"The server is writing {n} {'reply' if n == 1 else 'replies'} at once, as many as it "
                           "takes; your message was not sent: send it again in a few seconds.")
            self._streaming += 1
        try:
            yield
        finally:
            with self._streaming_lock:
                self._streaming -= 1

    def interval(self) -> float:
        """Seconds between a reply's streamed updates: STREAM_INTERVAL_S, longer when so many replies
        stream that their updates together would pass MAX_UPDATES_PER_S (the interval grows with the
        number of replies streaming: each update then carries more characters)."""
        return max(STREAM_INTERVAL_S, self._streaming / MAX_UPDATES_PER_S)

    def state(self, request: gr.Request | None) -> ChatState:
        """The session of this browser tab or API client, keyed by Gradio's session hash in the page's
        namespace (made on first use; idle ones expire). A call without a session hash (a bare
        `/gradio_api/run/...`) gets a new session of its own, kept by nobody after the call."""
        session_hash = getattr(request, "session_hash", None)
        if not isinstance(session_hash, str) or not session_hash:
            return ChatState(self.default, self.default_name)
        return self.state_of((PAGE, session_hash))

    def state_of(self, key: tuple[str, str]) -> ChatState:
        """The session `key` = (namespace, name) (made on first use). A full table first loses its
        idle sessions, the longest idle first; when every session is busy, Busy with a sentence."""
        now = time.monotonic()
        with self._sessions_lock:
            for old in [k for k, st in self._sessions.items() if now - st.used > SESSION_TTL_S]:
                del self._sessions[old]
            st = self._sessions.get(key)
            if st is None:
                self._make_room()
                st = self._sessions[key] = ChatState(self.default, self.default_name)
            self._sessions.move_to_end(key)
            st.used = now
            return st

    def _make_room(self) -> None:
        """Evict idle sessions, least recently used first, until one more fits within MAX_SESSIONS
        and MAX_SESSIONS_BYTES (each session's size as measured after its last change)."""
        total = sum(st.nbytes for st in self._sessions.values())
        for key in list(self._sessions):
            if len(self._sessions) < MAX_SESSIONS and total < MAX_SESSIONS_BYTES:
                return
            st = self._sessions[key]
            if st.lock.locked():  # writing a reply now: not idle
                continue
            del self._sessions[key]
            total -= st.nbytes
        if len(self._sessions) >= MAX_SESSIONS or total >= MAX_SESSIONS_BYTES:
            raise Busy("The server holds as many conversations as it can and all of them are busy; "
                       "send your message again in a minute.")

    def new_stream_session(self) -> str:
        """A new session for the plain stream route, named by the server: an unguessable token."""
        token = secrets.token_urlsafe(STREAM_TOKEN_BYTES)
        self.state_of((STREAM, token))
        return token

    def stream_session(self, token: str) -> ChatState | None:
        """The stream route's session `token`, if the server made it and it has not expired."""
        with self._sessions_lock:
            st = self._sessions.get((STREAM, token))
            if st is None or time.monotonic() - st.used > SESSION_TTL_S:
                return None
        return self.state_of((STREAM, token))

    def drop_stream_session(self, token: str) -> None:
        with self._sessions_lock:
            self._sessions.pop((STREAM, token), None)

    def forget(self, request: gr.Request) -> None:
        """A closed browser tab: free its session."""
        with self._sessions_lock:
            self._sessions.pop((PAGE, getattr(request, "session_hash", None)), None)

    # -- actions: the API endpoints, and what the page's buttons do --------------------------

    async def chat(self, message: str, temperature: float = DEFAULTS["temperature"],
                   top_k: int = DEFAULTS["top_k"], top_p: float = DEFAULTS["top_p"],
                   max_chars: int = DEFAULTS["max_chars"], seed: int = DEFAULTS["seed"], stop: str = "\\n\\n",
                   memory: bool = DEFAULTS["memory"], request: gr.Request = None) -> str:
        """Send a message; streams the reply. The LSTM memory carries over between calls of the same
        client session. Top-k 0 = off, top-p 1 = off, seed -1 = random; the stop sequence is written
        with \\n for a newline."""
        text = checked_text("The message", "" if message is None else message)
        settings = sampling_from(temperature, top_k, top_p, max_chars, seed, stop)
        st = self.state(request)
        async with contextlib.aclosing(whole_if_direct(self._write(st, settings, memory, lambda: st.session.send(text)),
                                                       request)) as replies:  # closed with this one: frees its place
            async for reply in replies:
                yield reply

    async def retry(self, temperature: float = DEFAULTS["temperature"], top_k: int = DEFAULTS["top_k"],
                    top_p: float = DEFAULTS["top_p"], max_chars: int = DEFAULTS["max_chars"],
                    seed: int = DEFAULTS["seed"], stop: str = "\\n\\n", memory: bool = DEFAULTS["memory"],
                    request: gr.Request = None) -> str:
        """Resample the last reply from the memory just after the last message; streams it."""
        settings = sampling_from(temperature, top_k, top_p, max_chars, seed, stop)
        st = self.state(request)
        async with contextlib.aclosing(whole_if_direct(self._write(st, settings, memory, st.session.retry, notes=False),
                                                       request)) as replies:
            async for reply in replies:
                yield reply

    async def send(self, st: ChatState, message: str, memory: bool = True, **settings):
        """The chat action for a caller outside Gradio's queue (ui/stream.py): its session `st`, the
        same checks, admission, decoder and fresh reply as `chat`; the reply so far, paced. Notes on
        the message are left in the session's `notes`, not shown as toasts."""
        text = checked_text("The message", message)
        values = {**DEFAULTS, "stop": "\\n\\n", **settings}
        checked = sampling_from(*(values[k] for k in ("temperature", "top_k", "top_p", "max_chars", "seed", "stop")))
        async with contextlib.aclosing(self._write(st, checked, memory, lambda: st.session.send(text),
                                                   warn=False)) as texts:
            async for reply in texts:
                yield reply

    async def _write(self, st: ChatState, settings: dict, memory, start, notes: bool = True, warn: bool = True):
        """Admit a reply, then under the session's lock apply its settings (so that two turns sent at
        once in one session each keep their own), start it (`start()`: the session's send or retry),
        stream it paced, then (in a thread) what a fresh memory writes instead. Notes on the message
        are kept in `st.notes` and, with `warn`, shown as Gradio toasts."""
        if not isinstance(memory, bool):
            raise refusal("memory is true or false.", "memory")
        with self.admitted():
            await acquire(st.lock)
            try:
                st.session.memory = memory
                try:
                    st.session.update_settings(**settings)
                except SamplingError as err:
                    raise refusal(str(err), "settings") from None
                wake, event = waker()
                st.session.wake = wake  # read when the reply's stream is made, in start()
                try:
                    reply = start()
                finally:
                    st.session.wake = None
                st.changes += 1
                if reply is None:
                    raise refusal("Nothing to retry: send a message first.", "retry")
                if notes:
                    st.notes = st.session.notices()
                    for note in st.notes if warn else ():
                        gr.Warning(note)
                try:
                    async for text in paced(unblocked(reply, event), self.interval):
                        yield text
                finally:
                    reply.close()  # a reader that left early: the turn keeps the reply so far
                if self.options.fresh_replies:  # the reply is out: now what a fresh memory writes instead
                    await anyio.to_thread.run_sync(with_fresh_reply, st.session)
            finally:
                st.measure()
                st.lock.release()

    def undo(self, request: gr.Request = None) -> str:
        """Forget the last turn and restore the exact memory from before it."""
        st = self.state(request)
        with st.lock:
            done = st.session.undo()
            st.changes += 1
            st.measure()
        return "Undid the last turn: the memory is back to its state before it." if done else "Nothing to undo."

    def reset(self, request: gr.Request = None) -> str:
        """Start a fresh conversation: transcript and memory cleared."""
        st = self.state(request)
        with st.lock:
            st.session.reset()
            st.unit_chosen = False  # units found on the old conversation no longer apply
            st.changes += 1
            st.measure()
        return "Fresh conversation: transcript and memory cleared."

    def memory(self, request: gr.Request = None) -> dict:
        """The memory report: settings, and per turn the text, state norms and memory benefit."""
        return self.state(request).session.memory_report()

    def model(self, source: str, request: gr.Request = None) -> str:
        """Switch this session to another model: a bundled model's name (shakespeare, timemachine,
        babi), a Hub repo id user/name[@revision] or a local model folder. Resets the conversation;
        naming the model the session already serves changes nothing."""
        return self.switch_model(source, request)[0]

    def switch_model(self, source: str, request: gr.Request = None) -> tuple[str, bool]:
        """The model action's sentence, and whether the session switched (False: it already served
        that model, and its conversation goes on). gr.Error with one sentence when refused."""
        wanted = checked_text("The model", "" if source is None else source).strip()
        if not wanted:
            raise refusal("Pick a model in the list, or type a Hub repo id such as user/name.", "model")
        st = self.state(request)
        if wanted == st.source:
            return already_serving(wanted), False
        if not self.allowed(wanted):
            raise refusal(custom_models_off(self.choices()), "model")
        if wanted not in self.choices() and not repo_id_form(wanted) and not path_form(wanted):
            raise refusal("That is neither a model of this app nor a Hub repo id: a Hub repo id looks like user/name "
                          "(or user/name@revision), and a local folder like ./path.", "model")
        try:
            # A visitor's repo id is a Hub repo id, never a folder of that name (is_local_path).
            serving = self.served.get(wanted, hub_only=wanted not in self.choices() and not is_local_path(wanted))
        except ModelLoadError as err:
            raise refusal(f"{load_error(wanted, err)} The current model keeps working.", "model") from None
        with st.lock:
            if serving is st.serving:  # another spelling of the model it serves
                return already_serving(wanted), False
            st.switch(serving, wanted)
            st.changes += 1
            st.measure()
        return serving_line(wanted, serving) + "; the conversation was reset.", True
