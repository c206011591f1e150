"""The app's handlers: one per action (chat, retry, undo, reset, memory, load), used by the page
and, through their type hints, by the named API endpoints; the sessions and served models they
work on; the memory panel's figures for a session. Options come from app.py's command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import anyio
import gradio as gr

from lstm_model import views
from lstm_model.gates import DEFAULT_PATTERN, units_following
from lstm_model.text_stream import SLOW, WAIT
from lstm_model.hub import (
    DEFAULT_MODEL,
    ModelLoadError,
    bundled_models,
    load_int8_check,
    load_model,
    source_key,
)
from lstm_model.sampling import SamplingError, as_number
from lstm_model.serving import Serving, default_step_threads
from lstm_model.session import ChatSession, is_fresh
from lstm_model.sources import repo_id_form
from lstm_model.step import EngineError
from lstm_model.vocab import unescape

from .guides import guide_for

SESSION_TTL_S = 2 * 3600  # an idle session's memory is freed after this long
# Sessions kept at once, and their bytes together (transcripts and state snapshots): past either,
# the least recently used idle sessions are evicted first.
MAX_SESSIONS = 1000
MAX_SESSIONS_BYTES = 256 * 2**20
# Namespaces of session keys: the page's and the API's sessions are keyed by Gradio's session hash,
# the stream route's by tokens the server makes; no caller-sent value crosses from one to the other.
PAGE, STREAM = "page", "stream"
STREAM_TOKEN_BYTES = 18  # 144 random bits, 24 characters
log = logging.getLogger("lstm_memory_chat")
RECENT_CHARS = 1500  # characters of the conversation shown in the unit inspector
STREAM_INTERVAL_S = 0.04  # a streamed reply is updated at most 25 times a second...
MAX_UPDATES_PER_S = 200  # ...and all of them together about this often: each costs Gradio time on its event loop
DEFAULTS = dict(temperature=0.8, top_k=40, top_p=1.0, max_chars=500, seed=-1, memory=True)
MAX_MODELS = 4  # models served at once; the least recently used leaves first
MAX_PARAMETERS = 200_000_000  # all served models together (~800 MB of fp32 weights)
LOADS_AT_ONCE = 2  # models being loaded at the same moment
# The ranges of the sampling controls, for the page's sliders and for values sent to the API.
RANGES = dict(temperature=(0.05, 2.0), top_p=(0.05, 1.0), max_chars=(1, 5000))


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


# -- text helpers -----------------------------------------------------------------------------


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def as_text(text: str) -> str:
    """Text for the Chatbot, which renders HTML: escaped, so that tags and scripts show as typed."""
    return html.escape(text, quote=False)


INLINE_FRESH_CHARS = 40  # a fresh-memory reply up to this long is shown beside the reply, not behind a click


def fresh_reply_html(turn, started_fresh: bool = False) -> str:
    """Under a reply: a badge saying how the turn started (from the carried memory, from a fresh one
    because nothing was carried yet, or with the memory off) and, when the memory was carried, the
    reply a fresh memory writes instead: beside the reply when short, else collapsed, greyed, where
    it departs marked."""
    if not turn.memory:
        return '<div class="memory-note"><span class="memory-badge off">memory off</span> this turn started fresh</div>'
    if started_fresh:
        return ('<div class="memory-note"><span class="memory-badge fresh">fresh memory</span> '
                "nothing carried yet (the first turn, or the first after Reset)</div>")
    badge = '<span class="memory-badge on">memory on</span>'
    fresh = turn.fresh_reply
    if fresh is None:
        return f'<div class="memory-note">{badge}</div>'
    if fresh == turn.reply:
        return f'<div class="memory-note">{badge} a fresh memory writes the same reply</div>'
    if len(fresh) <= INLINE_FRESH_CHARS:  # an answer: both side by side, nothing to open
        carried = (f'with memory: <span class="carried-inline">{as_text(turn.reply)}</span> · '
                   if len(turn.reply) <= INLINE_FRESH_CHARS else "")
        return (f'<div class="memory-note">{badge} {carried}fresh memory: '
                f'<span class="fresh-inline" title="what a fresh memory writes for the same message">'
                f"{as_text(fresh) or '(nothing)'}</span></div>")
    same = 0
    while same < min(len(fresh), len(turn.reply)) and fresh[same] == turn.reply[same]:
        same += 1
    where = "from its first character" if same == 0 else f"after {same} same character{'s' if same != 1 else ''}"
    body = (as_text(fresh[:same]) + '<span class="fork" title="the replies part here">▸</span>'
            + f'<span class="differs">{as_text(fresh[same:]) or "(nothing more)"}</span>')
    return (f'<div class="memory-note">{badge}<details class="fresh-reply"><summary>a fresh memory writes '
            f'another reply ({where})</summary><div class="fresh-text">{body}</div></details></div>')


def started_fresh(turn) -> bool:
    """Whether a turn sent with the memory on had nothing to carry: it began from the all-zero
    state (the first turn, the first after Reset). Unknown, so False, once its snapshot is dropped."""
    return turn.memory and turn.state_before is not None and is_fresh(turn.state_before)


VERDICT_CHARS = 80  # an answer is a few words: a longer reply is cut in the verdict (the chat has it whole)


def verdict_html(guide, reply: str, fresh: str, sure: float | None) -> str:
    """The memory test's verdict: the question, what the carried memory and a fresh memory answered,
    each judged against the guide's answer, side by side so that the difference is the memory's."""
    def row(who: str, answer: str, extra: str = "") -> str:
        right = guide.test_answer and answer.strip() == guide.test_answer
        mark = ("" if not guide.test_answer else '<span class="verdict-mark">✓ right</span>' if right
                else f'<span class="verdict-mark">✗ wrong</span> (the answer is “{as_text(guide.test_answer)}”)')
        kind = "" if not guide.test_answer else " right" if right else " wrong"
        shown = answer if len(answer) <= VERDICT_CHARS else answer[:VERDICT_CHARS] + "…"
        return (f'<div class="verdict-row{kind}"><span class="verdict-who">{who}</span> '
                f'<b class="verdict-answer">{as_text(shown) or "(nothing)"}</b> {mark}{extra}</div>')

    told, question = " ".join(guide.test[:-1]), guide.test[-1]
    sure_text = f" (sure: {100 * sure:.0f}%)" if sure is not None else ""
    return (f'<div class="verdict"><div class="verdict-told">Told it: {as_text(told)} Asked: '
            f"<b>{as_text(question)}</b></div>"
            + row("with its memory", reply, sure_text)
            + row("from a fresh memory", fresh)
            + '<div class="verdict-why">Same model, same question: only the memory differs (a fresh memory is '
              "what Reset leaves).</div></div>")


def sureness_html(turn) -> str:
    """Beside a short reply (an answer): how sure the model was of it, so that a guess looks like one."""
    p = turn.measures.get("reply_probability")
    if p is None:
        return ""
    return (f' <span class="reply-sure" title="the probability the model gave to writing exactly this reply">'
            f'(sure: {100 * p:.0f}%)</span>')


def history_of(session: ChatSession, streaming: str | None = None) -> list[dict]:
    """The chat transcript as Chatbot messages (the session is the source of truth); under each
    finished reply, what the memory changed (fresh_reply_html)."""
    messages = []
    for i, turn in enumerate(session.turns):
        messages.append({"role": "user", "content": as_text(turn.user) if turn.user.strip() else "(empty message)"})
        live = streaming is not None and i == len(session.turns) - 1
        reply = streaming if live else turn.reply
        content = as_text(reply) if reply else "…"
        if turn.closed_with and not live:  # cut by the length cap, then closed by the stop
            content += "  [cut at the length cap]"
        if turn.done and not live:
            content += sureness_html(turn) + fresh_reply_html(turn, started_fresh(turn))
        messages.append({"role": "assistant", "content": content})
    return messages


def with_fresh_reply(session: ChatSession) -> None:
    """After a reply has streamed: the reply a fresh memory writes for the same message (through
    the same serving, so batched with other replies). A failure here leaves it out; the reply stands."""
    if session.turns and session.turns[-1].done:
        try:
            session.fresh_reply(-1)
        except Exception:  # noqa: BLE001 - the comparison is optional; the conversation goes on
            pass


LOCK_POLL_S = 0.01  # how often a handler looks again at a session lock another action holds
_END = object()


def waker():
    """(wake, event): `wake()`, safe to call from any thread (the decoder's), sets `event` on this
    event loop; calls that come before the loop has run the last one are merged into it."""
    loop, event, pending = asyncio.get_running_loop(), asyncio.Event(), [False]

    def ready():
        pending[0] = False
        event.set()

    def wake():
        if not pending[0]:
            pending[0] = True
            try:
                loop.call_soon_threadsafe(ready)
            except RuntimeError:  # the loop has closed: nobody reads this reply any more
                pass
    return wake, event


async def unblocked(pieces, event: asyncio.Event):
    """A reply stream made with `wake` (ChatSession.wake), read without blocking the event loop:
    on WAIT it awaits the decoder's next item, after SLOW it reads on in a worker thread. So a
    streaming reply holds no thread while the decoder writes it."""
    in_thread = False
    while True:
        item = await anyio.to_thread.run_sync(next, pieces, _END) if in_thread else next(pieces, _END)
        if item is _END:
            return
        if item is WAIT:
            await event.wait()
            event.clear()
        elif item is SLOW:
            in_thread = True
        else:
            yield item


async def paced(pieces, interval=lambda: STREAM_INTERVAL_S):
    """The reply so far, at most once per `interval()` seconds (and at once for the first piece,
    and at the end): each update costs Gradio more than sampling a character does."""
    text, last = "", None
    async for piece in pieces:
        text += piece
        now = time.monotonic()
        if last is None or now - last >= interval():
            yield text
            last = now
    yield text


async def acquire(lock: threading.Lock) -> None:
    """Take a session's lock without blocking the event loop (another action may hold it a while:
    the memory panel's figures, a fresh reply)."""
    while not lock.acquire(blocking=False):
        await asyncio.sleep(LOCK_POLL_S)


def sampling_from(temperature, top_k, top_p, max_chars, seed, stop) -> dict:
    """ChatSession's sampling settings from the controls' values (or the API's), or gr.Error with
    one sentence for a value out of range or of the wrong type."""

    def number(label, value, kind, default):
        if value is None or value == "":
            return default
        if isinstance(value, str):  # raw JSON may carry numbers as text ("0.8", "NaN")
            try:
                value = float(value)
            except ValueError:
                pass  # as_number says what is wrong with it
        try:
            return as_number(label, value, kind)
        except SamplingError as err:
            raise refusal(str(err), "settings") from None

    def within(label, value, name):
        low, high = RANGES[name]
        if not low <= value <= high:
            raise refusal(f"{label} must be from {low:g} to {high:g}; got {value:g}.", "settings")
        return value

    temperature = within("Temperature", number("Temperature", temperature, float, DEFAULTS["temperature"]), "temperature")
    top_p = within("Top-p", number("Top-p", top_p, float, DEFAULTS["top_p"]), "top_p")
    max_chars = within("Max characters", number("Max characters", max_chars, int, DEFAULTS["max_chars"]), "max_chars")
    top_k, seed = number("Top-k", top_k, int, DEFAULTS["top_k"]), number("Seed", seed, int, DEFAULTS["seed"])
    if top_k < 0:
        raise refusal(f"Top-k must be 0 (off) or more; got {top_k}.", "settings")
    settings = dict(temperature=temperature, top_k=top_k or None, top_p=top_p if top_p < 1 else None,
                    max_new_chars=max_chars, seed=seed if seed >= 0 else None)
    if stop is not None:
        settings["stop"] = unescape(checked_text("The stop sequence", stop)) or None
    return settings


# -- models and sessions ------------------------------------------------------------------------


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


class ServedModels:
    """The models the app serves, one per source however it is spelled (`hub.source_key`): at
    most MAX_MODELS and MAX_PARAMETERS together, the least recently used leaving first (its
    decoder thread ends; sessions still using it keep it alive until they switch or expire); at
    most LOADS_AT_ONCE loads at a time."""

    def __init__(self, options: Options):
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


def is_local_path(source: str) -> bool:
    """Whether a visitor's model source is a path on this server's disk, told by its spelling alone:
    not a bundled name, and not of a Hub repo id's form (user/name[@revision]): it starts with ".",
    "/", "~" or a backslash, or has a number of slashes other than one. A source of the repo id's
    form is always looked up on the Hub, whatever the disk holds, so that no answer tells a visitor
    whether a file of that name exists."""
    return source not in bundled_models() and not repo_id_form(source)


def load_error(source: str, err: Exception) -> str:
    """A model loading error for a visitor: nothing about what exists on the server's disk."""
    if is_local_path(source):
        return ("Could not load a model from that local path; the app loads a folder written by save_pretrained() "
                "that it can read, a bundled model's name or a Hub repo id (user/name[@revision]).")
    from huggingface_hub import constants

    return str(err).replace(constants.HF_HUB_CACHE, "the Hub cache")


class Busy(gr.Error):
    """The server is writing as many replies as it takes (or holds as many sessions as it can):
    the message was not sent."""

    def __init__(self, message: str):
        super().__init__(message, print_exception=False)
        log.info("refused: busy")


def refusal(sentence: str, what: str) -> gr.Error:
    """A visitor's request refused with one sentence: no traceback in the log, and a log line that
    names only what was refused (`what`), never the visitor's text."""
    log.info("refused: %s", what)
    return gr.Error(sentence, print_exception=False)


def checked_text(label: str, value) -> str:
    """Text a visitor sent, checked where it enters: a string that UTF-8 can carry (a lone surrogate,
    which JSON can spell, could be fed and stored but never sent back)."""
    if not isinstance(value, str):
        raise refusal(f"{label} must be text.", "not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise refusal(f"{label} holds a lone surrogate (half of a character); remove it and send again.",
                      "lone surrogate") from None
    return value


def direct_call(request: gr.Request | None) -> bool:
    """Whether the request is a direct POST to /gradio_api/run/<name> (or /api/<name>): Gradio answers
    those with a handler's first output and drops the rest, where its queue streams them all."""
    try:
        parts = request.request.url.path.rstrip("/").split("/")
    except AttributeError:
        return False
    return len(parts) >= 2 and parts[-2] in ("run", "api")


async def whole_if_direct(texts, request: gr.Request | None):
    """A reply's updates; for a direct call, only the whole reply (see direct_call)."""
    async with contextlib.aclosing(texts):
        if not direct_call(request):
            async for text in texts:
                yield text
            return
        text = None
        async for text in texts:
            pass
        if text is not None:
            yield text


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


def already_serving(name: str) -> str:
    return f"Already serving **{name}**: nothing changed, and the conversation goes on."


def path_form(source: str) -> bool:
    """Whether a visitor's text is spelled as a path: it starts as one does (".", "/", "~", a
    backslash, a drive letter) or holds a slash. Anything else that is neither a model's name nor
    a Hub repo id is answered with what a repo id looks like, not looked for on the disk."""
    return (source.startswith((".", "/", "~", "\\")) or "/" in source or "\\" in source
            or (len(source) > 1 and source[1] == ":" and source[0].isalpha()))


def custom_models_off(choices: list[str]) -> str:
    names = ", ".join(choices[:-1]) + f" and {choices[-1]}" if len(choices) > 1 else ", ".join(choices)
    return (f"This app serves only {names}: loading other Hub repos or local folders is switched off here, so pick "
            "one of those, or run the app on your own machine to load your own model.")


def serving_line(name: str, serving: Serving) -> str:
    return f"Serving **{name}** ({serving.model.num_parameters():,} parameters; {serving.describe()})"


# -- the memory panel ---------------------------------------------------------------------------


# The memory panel's parts, by name: panel_figures returns one value (or gr.skip()) for each, and
# ui.layout lists the components of the same names as the refresh's outputs.
PANEL_PARTS = ("timeline", "heatmap", "highlights", "report", "unit", "layer", "status", "benefit_sentence", "benefit",
               "quantity", "explanation")
# The heatmap's choices per cell, in the order the page offers them (the cell's memory first).
HEATMAP_CHOICES = {"lstm": ("cell", "forget", "input", "output", "hidden"),
                   "gru": ("hidden", "update", "reset", "candidate"), "rnn": ("hidden",)}


def memory_words(cell: str) -> str:
    """What a unit's memory is called for this cell: an LSTM's cell state C, else the hidden state H."""
    return "cell state" if cell == "lstm" else "hidden state H"


def cell_parts(model, quantity: str) -> dict:
    """The panel parts that follow the served model's cell: the heatmap's choices and the guide."""
    choices = HEATMAP_CHOICES.get(model.cell, HEATMAP_CHOICES["lstm"])
    return {"quantity": gr.update(choices=list(choices), value=quantity if quantity in choices else choices[0]),
            "explanation": views.explanation(model.cell)}


def panel_figures(st: ChatState, quantity: str, unit, layer) -> dict:
    """The panel's figures after the latest turn (or empty ones before the first), by part name
    (PANEL_PARTS)."""
    changes, session, model = st.changes, st.session, st.serving.model
    if quantity not in HEATMAP_CHOICES.get(model.cell, HEATMAP_CHOICES["lstm"]):
        quantity = HEATMAP_CHOICES.get(model.cell, HEATMAP_CHOICES["lstm"])[0]
    if not session.turns:
        return {"timeline": readable(views.timeline_figure({"turns": []})), "heatmap": views.heatmap_html(None),
                "highlights": "", "report": {"turns": []}, "unit": gr.skip(), "layer": gr.skip(),
                "status": "No turns yet: the memory is fresh (all zeros).", "benefit_sentence": "", "benefit": "",
                **cell_parts(model, quantity)}
    turn = session.turns[-1]
    benefits = session.char_benefits(-1) if turn.memory else None  # before the report: it adds reply_benefit_bpc
    replies_only = st.guide.replies_only
    if replies_only:  # the timeline charts every turn's reply benefit: measure turns sent without a refresh
        for index, earlier in enumerate(session.turns[:-1]):
            if earlier.memory and earlier.measures.get("reply_benefit_bpc") is None:
                session.char_benefits(index)
    report = session.memory_report()
    layer_index = layer_of(layer, model)
    recent = session.trace_recent(max_chars=RECENT_CHARS)  # one trace serves every view
    last = recent.tail(len(session.turn_text(session.turns[-1])))
    unit = clamp_unit(unit, model.hidden_size)
    status = (f"Memory panel after turn {len(report['turns'])}"
              + ("" if session.memory else " (memory off: every turn starts fresh)") + ".")
    if not st.unit_chosen:  # show a unit worth seeing: the one that best follows DEFAULT_PATTERN here
        ranked = units_following(recent, DEFAULT_PATTERN, layer=layer_index, k=1)
        if ranked:
            unit = ranked[0][0]
            status += (f" The unit inspector shows unit {unit}, whose {memory_words(model.cell)} best follows "
                       f"“{DEFAULT_PATTERN}” "
                       f"here (r = {ranked[0][1]:+.2f}); pick another number, or Find units.")
    if st.changes != changes:  # the conversation changed meanwhile: its own refresh follows
        return dict.fromkeys(PANEL_PARTS, gr.skip())
    return {"timeline": readable(views.timeline_figure(report, replies_only)),
            "heatmap": views.heatmap_html(last, quantity, layer_index, message_chars=len(turn.fed)),
            "highlights": unit_view(st, recent, unit, layer_index), "report": rounded(report),
            "unit": unit_update(unit, model.hidden_size),
            "layer": gr.update(choices=[str(i + 1) for i in range(model.num_layers)]), "status": status,
            "benefit_sentence": views.benefit_sentence(benefits, turn.memory, replies_only),
            "benefit": views.benefit_html(benefits, replies_only), **cell_parts(model, quantity)}


# The timeline as the page shows it: the image is scaled down to the column's width, narrowest on
# a phone, so its text is sized against the figure's width: a narrower figure with text of at
# least MIN_FONT_PT points keeps every label at 11 CSS pixels or more in a phone's column
# (tests/test_browser.py looks at the page on a 390-pixel-wide screen).
FIGURE_WIDTH_IN = 4.4
MIN_FONT_PT = 11


def readable(fig):
    """A timeline figure resized for the page's column, no text in it smaller than MIN_FONT_PT."""
    from matplotlib.text import Text

    width, height = fig.get_size_inches()
    fig.set_size_inches(FIGURE_WIDTH_IN, height * max(1.0, FIGURE_WIDTH_IN / width))
    for text in fig.findobj(Text):
        if text.get_text() and text.get_fontsize() < MIN_FONT_PT:
            text.set_fontsize(MIN_FONT_PT)
    fig.tight_layout()
    return fig


def layer_of(layer, model) -> int:
    """The Layer control's value (1-based) as an index into the model's layers."""
    return min(int(layer) - 1, model.num_layers - 1)


def unit_view(st: ChatState, recent, unit: int, layer_index: int) -> str:
    """The unit inspector: `unit`'s activation over the recent conversation (`recent`, its trace)."""
    return views.unit_html(recent, st.session.recent_roles(RECENT_CHARS), unit, layer_index)


def inspected_unit(st: ChatState, unit, layer) -> tuple:
    """The unit the visitor typed or clicked (clamped), shown from now on: the inspector and the Unit box."""
    st.unit_chosen = True  # the visitor's unit stays through later refreshes
    model = st.serving.model
    unit = clamp_unit(unit, model.hidden_size)
    if not st.session.turns:
        return "", unit_update(unit, model.hidden_size)
    recent = st.session.trace_recent(max_chars=RECENT_CHARS)
    return unit_view(st, recent, unit, layer_of(layer, model)), unit_update(unit, model.hidden_size)


def rounded(value, digits: int = 4):
    """The report as the panel shows it: floats to `digits` decimals (the API's /memory keeps them whole)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def clamp_unit(unit, hidden_size: int) -> int:
    """A unit number from the page (any number, or nothing) within 0..hidden_size-1."""
    try:
        return max(0, min(int(float(unit or 0)), hidden_size - 1))
    except (TypeError, ValueError, OverflowError):
        return 0


def unit_update(unit: int, hidden_size: int):
    """The Unit box showing the unit in use and the range it takes (no Gradio minimum or maximum:
    a number outside them would be refused before any handler runs, leaving the panel in error)."""
    return gr.update(value=unit, label=f"Unit (0-{hidden_size - 1})")


def found_units(st: ChatState, pattern_name: str, layer) -> tuple:
    """The units that best follow a pattern over the conversation, the best one's activation, and
    the found units as choices to click."""
    if not st.session.turns:
        return gr.skip(), "Chat first: units are found on the conversation's text.", gr.skip(), gr.skip()
    layer_index = layer_of(layer, st.serving.model)
    recent = st.session.trace_recent(max_chars=RECENT_CHARS)
    ranked = units_following(recent, pattern_name, layer=layer_index, k=5)
    if not ranked:
        return (gr.skip(), f"The pattern “{pattern_name}” does not vary over this conversation yet.", gr.skip(),
                gr.skip())
    rows = ", ".join(f"unit {u} (r = {r:+.2f})" for u, r in ranked)
    best = ranked[0][0]
    st.unit_chosen = True
    return (best, f"Units whose {memory_words(st.serving.model.cell)} follows “{pattern_name}”: {rows}. Showing unit {best}; click another below.",
            unit_view(st, recent, best, layer_index),
            gr.update(choices=[(f"unit {u} (r = {r:+.2f})", str(u)) for u, r in ranked], value=str(best), visible=True))

