"""LSTM Memory Chat: chat with a character-level LSTM that keeps its memory across turns, and
watch that memory. The Gradio app: its command line and environment, one handler per action
(shared by the page and the scripting API), and the page's layout, one function per section.
The model logic is in lstm_model/ (ARCHITECTURE.md has the map).

    python app.py [--model PATH_OR_REPO[@revision]] [--share] [--host HOST] [--port PORT] [--int8 auto|on|off]

Environment variables (read here and nowhere else): INT8 (as --int8), LSTM_STEP_ENGINE (auto,
onnxruntime or torch), BATCHING (0 = every reply steps alone), CHAT_CONCURRENCY (replies
generated at once, default 16), TORCH_THREADS (default 1); Gradio's own GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

import gradio as gr
import torch

from lstm_model import views
from lstm_model.gates import PATTERNS, units_following
from lstm_model.hub import ModelLoadError, bundled_models, load_int8_check, load_model
from lstm_model.sampling import SamplingError
from lstm_model.serving import INT8_MODES, Serving
from lstm_model.session import ChatSession
from lstm_model.step import ENGINES, EngineError

SESSION_TTL_S = 2 * 3600  # an idle session's memory is freed after this long
RECENT_CHARS = 1500  # characters of the conversation shown in the unit inspector
STREAM_INTERVAL_S = 0.04  # the streamed reply is updated at most 25 times a second
DEFAULTS = dict(temperature=0.8, top_k=40, top_p=1.0, max_chars=500, seed=-1, memory=True)
# The ranges of the sampling controls, for the page's sliders and for values sent to the API.
RANGES = dict(temperature=(0.05, 2.0), top_p=(0.05, 1.0), max_chars=(1, 5000))


# -- configuration: the command line and the environment ----------------------------------------


@dataclass
class Options:
    """How the app serves, from the command line and the environment (`options_from`)."""

    model: str | None = None
    int8: str = "auto"  # int8 generation steps: auto = where the model's int8.json allows them
    engine: str = "auto"  # the generation step's engine (lstm_model.step)
    batching: bool = True  # one decoder steps all replies of a model together (lstm_model.batching)
    concurrency: int = 16  # replies generated at once; the others queue
    threads: int = 1  # torch's and ONNX Runtime's threads: the other core serves the page
    share: bool = False
    host: str | None = None
    port: int | None = None


def parse_args(argv=None, environ=None) -> Options:
    """Options from the flags, then the environment, then the defaults. SystemExit(2) with one
    sentence for a bad value."""
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(description="LSTM Memory Chat: chat with an LSTM and watch its memory.")
    p.add_argument("--model", default=None, help="local folder or Hub repo id user/name[@revision] (default: bundled)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1, or GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or GRADIO_SERVER_PORT)")
    p.add_argument("--int8", choices=list(INT8_MODES), default=None,
                   help="int8 generation steps: auto (default, or INT8) = when the model's int8.json shows a loss "
                        "rise <= 0.01 nats/char; on; off")
    args = p.parse_args(argv)
    options = Options(model=args.model, share=args.share, host=args.host, port=args.port,
                      int8=args.int8 or env.get("INT8", "auto"), engine=env.get("LSTM_STEP_ENGINE", "auto"),
                      batching=env.get("BATCHING", "1") != "0")
    if options.int8 not in INT8_MODES:
        p.error(f"INT8 must be one of {', '.join(INT8_MODES)}; got {options.int8!r}.")
    if options.engine not in ENGINES:
        p.error(f"LSTM_STEP_ENGINE must be one of {', '.join(ENGINES)}; got {options.engine!r}.")
    for name, field_name in (("CHAT_CONCURRENCY", "concurrency"), ("TORCH_THREADS", "threads")):
        value = env.get(name, str(getattr(options, field_name)))
        if not value.isdigit() or int(value) < 1:
            p.error(f"{name} must be a whole number of at least 1; got {value!r}.")
        setattr(options, field_name, int(value))
    return options


# -- text helpers -----------------------------------------------------------------------------


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def as_text(text: str) -> str:
    """Text for the Chatbot, which renders HTML: escaped, so that tags and scripts show as typed."""
    return html.escape(text, quote=False)


def history_of(session: ChatSession, streaming: str | None = None) -> list[dict]:
    """The chat transcript as Chatbot messages (the session is the source of truth)."""
    messages = []
    for i, turn in enumerate(session.turns):
        messages.append({"role": "user", "content": as_text(turn.user) if turn.user.strip() else "(empty message)"})
        reply = streaming if (streaming is not None and i == len(session.turns) - 1) else turn.reply
        messages.append({"role": "assistant", "content": as_text(reply) if reply else "…"})
    return messages


def paced(pieces, interval: float = STREAM_INTERVAL_S):
    """The reply so far, at most once per `interval` seconds (and at the end): each update costs
    Gradio a few milliseconds, more than sampling a character."""
    text, last = "", time.monotonic()
    for piece in pieces:
        text += piece
        now = time.monotonic()
        if now - last >= interval:
            yield text
            last = now
    yield text


def sampling_from(temperature, top_k, top_p, max_chars, seed, stop) -> dict:
    """ChatSession's sampling settings from the controls' values (or the API's), or gr.Error with
    one sentence for a value out of range or of the wrong type."""

    def number(label, value, kind=float, default=None):
        if value is None or value == "":
            return default
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")) or (kind is int and number != int(number)):
                raise ValueError
        except (TypeError, ValueError):
            raise gr.Error(f"{label} must be {'a whole number' if kind is int else 'a number'}; got {value!r}.") from None
        return kind(number)

    def within(label, value, name):
        low, high = RANGES[name]
        if not low <= value <= high:
            raise gr.Error(f"{label} must be from {low:g} to {high:g}; got {value:g}.")
        return value

    temperature = within("Temperature", number("Temperature", temperature, float, DEFAULTS["temperature"]), "temperature")
    top_p = within("Top-p", number("Top-p", top_p, float, DEFAULTS["top_p"]), "top_p")
    max_chars = within("Max characters", number("Max characters", max_chars, int, DEFAULTS["max_chars"]), "max_chars")
    top_k, seed = number("Top-k", top_k, int, DEFAULTS["top_k"]), number("Seed", seed, int, DEFAULTS["seed"])
    if top_k < 0:
        raise gr.Error(f"Top-k must be 0 (off) or more; got {top_k}.")
    settings = dict(temperature=temperature, top_k=top_k or None, top_p=top_p if top_p < 1 else None,
                    max_new_chars=max_chars, seed=seed if seed >= 0 else None)
    if stop is not None:
        settings["stop"] = unescape(str(stop)) or None
    return settings


# -- models and sessions ------------------------------------------------------------------------


class ChatState:
    """One browser (or API client) session: its served model, its ChatSession, a lock for its turns."""

    def __init__(self, source: str | None, serving: Serving):
        self.source, self.serving = source, serving
        self.session = ChatSession(serving.model, memory=True, serving=serving)
        self.notes: list[str] = []  # notices about the last message, for the page
        self.lock = threading.Lock()
        self.used = time.monotonic()

    def switch(self, source: str | None, serving: Serving) -> None:
        self.source, self.serving = source, serving
        self.session = ChatSession(serving.model, memory=self.session.memory, serving=serving)


class ChatApp:
    """The app's state (served models, sessions) and its handlers: one per action, used by the page
    and, with their type hints, by the named API endpoints (gr.api)."""

    def __init__(self, options: Options):
        self.options = options
        self.served = lru_cache(maxsize=4)(self._serve)  # models are read-only: sessions share them
        self.default = self.served(options.model)
        self._sessions: dict[str, ChatState] = {}
        self._sessions_lock = threading.Lock()

    def _serve(self, source: str | None) -> Serving:
        o = self.options
        try:
            return Serving(load_model(source), engine=o.engine, int8=o.int8, int8_check=load_int8_check(source),
                           batching=o.batching, threads=o.threads)
        except EngineError as err:
            raise ModelLoadError(str(err)) from None

    def state(self, request: gr.Request | None) -> ChatState:
        """The session of this browser tab or API client (made on first use; idle ones expire)."""
        key = getattr(request, "session_hash", None) or "local"
        now = time.monotonic()
        with self._sessions_lock:
            for old in [k for k, st in self._sessions.items() if now - st.used > SESSION_TTL_S]:
                del self._sessions[old]
            st = self._sessions.get(key)
            if st is None:
                st = self._sessions[key] = ChatState(self.options.model, self.default)
            st.used = now
            return st

    def forget(self, request: gr.Request) -> None:
        """A closed browser tab: free its session."""
        with self._sessions_lock:
            self._sessions.pop(getattr(request, "session_hash", None), None)

    def _prepare(self, st: ChatState, temperature, top_k, top_p, max_chars, seed, stop, memory) -> None:
        settings = sampling_from(temperature, top_k, top_p, max_chars, seed, stop)
        st.session.memory = bool(memory)
        try:
            st.session.update_settings(**settings)
        except SamplingError as err:
            raise gr.Error(str(err)) from None

    # -- actions: the API endpoints, and what the page's buttons do --------------------------

    def chat(self, message: str, temperature: float = 0.8, top_k: int = 40, top_p: float = 1.0,
             max_chars: int = 500, seed: int = -1, stop: str = "\\n\\n", memory: bool = True,
             request: gr.Request = None) -> str:
        """Send a message; streams the reply. The LSTM memory carries over between calls of the same
        client session. Top-k 0 = off, top-p 1 = off, seed -1 = random; the stop sequence is written
        with \\n for a newline."""
        st = self.state(request)
        self._prepare(st, temperature, top_k, top_p, max_chars, seed, stop, memory)
        with st.lock:
            reply = st.session.send(message if isinstance(message, str) else "")
            st.notes = st.session.notices()
            for note in st.notes:
                gr.Warning(note)
            yield from paced(reply)

    def retry(self, temperature: float = 0.8, top_k: int = 40, top_p: float = 1.0, max_chars: int = 500,
              seed: int = -1, stop: str = "\\n\\n", memory: bool = True, request: gr.Request = None) -> str:
        """Resample the last reply from the memory just after the last message; streams it."""
        st = self.state(request)
        self._prepare(st, temperature, top_k, top_p, max_chars, seed, stop, memory)
        with st.lock:
            reply = st.session.retry()
            if reply is None:
                raise gr.Error("Nothing to retry: send a message first.")
            yield from paced(reply)

    def undo(self, request: gr.Request = None) -> str:
        """Forget the last turn and restore the exact memory from before it."""
        st = self.state(request)
        with st.lock:
            done = st.session.undo()
        return "Undid the last turn: the memory is back to its state before it." if done else "Nothing to undo."

    def reset(self, request: gr.Request = None) -> str:
        """Start a fresh conversation: transcript and memory cleared."""
        st = self.state(request)
        with st.lock:
            st.session.reset()
        return "Fresh conversation: transcript and memory cleared."

    def memory(self, request: gr.Request = None) -> dict:
        """The memory report: settings, and per turn the text, state norms and memory benefit."""
        return self.state(request).session.memory_report()

    def load(self, picked: str | None, typed: str | None, request: gr.Request = None) -> str:
        """Switch this session to another model (a bundled name, a Hub repo id or a local folder)."""
        wanted = (typed or "").strip() or picked
        if not wanted:
            return "Pick a bundled model or type a Hub repo id."
        try:
            serving = self.served(wanted)
        except ModelLoadError as err:
            return f"❌ {err} The current model keeps working."
        st = self.state(request)
        with st.lock:
            st.switch(wanted, serving)
        return serving_line(wanted, serving) + "; the conversation was reset."


def serving_line(name: str, serving: Serving) -> str:
    return f"Serving **{name}** ({serving.model.num_parameters():,} parameters; {serving.describe()})"


# -- the memory panel ---------------------------------------------------------------------------


def panel_figures(st: ChatState, quantity: str, unit, layer) -> tuple:
    """The panel's figures after the latest turn (or empty ones before the first)."""
    session, model = st.session, st.serving.model
    if not session.turns:
        return (views.timeline_figure({"turns": []}), views.heatmap_figure(None), [], {"turns": []}, gr.skip(),
                gr.skip(), "No turns yet: the memory is fresh (all zeros).")
    report = session.memory_report()
    layer_index = min(int(layer) - 1, model.num_layers - 1)
    recent = session.trace_recent(max_chars=RECENT_CHARS)  # one trace serves every view
    last = recent.tail(len(session.turn_text(session.turns[-1])))
    unit = max(0, min(int(unit or 0), model.hidden_size - 1))
    status = (f"Memory panel after turn {len(report['turns'])}"
              + ("" if session.memory else " (memory off: every turn starts fresh)") + ".")
    return (views.timeline_figure(report), views.heatmap_figure(last, quantity, layer_index),
            views.unit_highlights(recent, unit, layer_index), report, gr.update(maximum=model.hidden_size - 1),
            gr.update(choices=[str(i + 1) for i in range(model.num_layers)]), status)


def found_units(st: ChatState, pattern_name: str, layer) -> tuple:
    """The units that best follow a pattern over the conversation, and the best one's activation."""
    if not st.session.turns:
        return gr.skip(), "Chat first: units are found on the conversation's text.", gr.skip()
    layer_index = min(int(layer) - 1, st.serving.model.num_layers - 1)
    recent = st.session.trace_recent(max_chars=RECENT_CHARS)
    ranked = units_following(recent, pattern_name, layer=layer_index, k=5)
    if not ranked:
        return gr.skip(), f"The pattern “{pattern_name}” does not vary over this conversation yet.", gr.skip()
    rows = ", ".join(f"unit {u} (r = {r:+.2f})" for u, r in ranked)
    best = ranked[0][0]
    return (best, f"Units whose cell state follows “{pattern_name}”: {rows}. Showing unit {best}.",
            views.unit_highlights(recent, best, layer_index))


# -- layout: one function per section -------------------------------------------------------------


def chat_section() -> SimpleNamespace:
    ui = SimpleNamespace()
    ui.chatbot = gr.Chatbot(label="Conversation", height=430, render_markdown=False, sanitize_html=True,
                            line_breaks=True, feedback_options=None, elem_id="chatbot")
    with gr.Row():
        ui.message = gr.Textbox(placeholder="ROMEO:\nWhat light through yonder window breaks?", lines=2, max_lines=8,
                                show_label=False, scale=5, elem_id="message")
        ui.send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
    with gr.Row():
        ui.undo = gr.Button("Undo", size="sm", elem_id="undo")
        ui.retry = gr.Button("Retry", size="sm", elem_id="retry")
        ui.reset = gr.Button("Reset (fresh memory)", size="sm", elem_id="reset")
    ui.notice = gr.Markdown("", elem_id="notice")
    return ui


def sampling_section(serving: Serving) -> list:
    """The sampling controls, in the order the chat and retry handlers take them."""
    with gr.Accordion("Sampling and memory", open=False):
        with gr.Row():
            temperature = gr.Slider(*RANGES["temperature"], value=DEFAULTS["temperature"], step=0.05, label="Temperature")
            top_k = gr.Slider(0, serving.model.vocab_size, value=DEFAULTS["top_k"], step=1, label="Top-k (0 = off)")
            top_p = gr.Slider(*RANGES["top_p"], value=DEFAULTS["top_p"], step=0.05, label="Top-p (1 = off)")
        with gr.Row():
            max_chars = gr.Slider(*RANGES["max_chars"], value=DEFAULTS["max_chars"], step=1, label="Max characters")
            seed = gr.Number(value=DEFAULTS["seed"], precision=0, label="Seed (-1 = random)")
            stop = gr.Textbox(value=escape(serving.model.stop_sequence), label="Stop sequence (\\n = newline)")
            memory = gr.Checkbox(value=DEFAULTS["memory"], label="Memory on (carry H and C across turns)")
    return [temperature, top_k, top_p, max_chars, seed, stop, memory]


def model_section(source: str | None, serving: Serving) -> SimpleNamespace:
    ui = SimpleNamespace()
    models = list(bundled_models())
    with gr.Accordion("Model", open=False):
        with gr.Row():
            picked = source if source in models else (models[0] if models and source is None else None)
            ui.picked = gr.Dropdown(models, value=picked, label="Bundled models", allow_custom_value=False)
            ui.typed = gr.Textbox(label="…or a Hub repo id (user/name[@revision]) or a local folder")
            ui.load = gr.Button("Load model")
        ui.status = gr.Markdown(serving_line(source or "the bundled default (shakespeare)", serving) + ".",
                                elem_id="model-status")
    return ui


def memory_section() -> SimpleNamespace:
    ui = SimpleNamespace()
    gr.Markdown("## What the memory holds")
    ui.timeline = gr.Plot(label="Memory timeline", elem_id="timeline")
    ui.status = gr.Markdown("", elem_id="panel-status")
    ui.quantity = gr.Radio(["cell", "forget", "input", "output", "hidden"], value="cell", label="Heatmap of the last turn")
    ui.heatmap = gr.Plot(label="Last turn, character by character", elem_id="heatmap")
    with gr.Row():
        ui.unit = gr.Number(value=0, precision=0, label="Unit", minimum=0)
        ui.layer = gr.Radio(["1", "2"], value="2", label="Layer")
        ui.pattern = gr.Dropdown(list(PATTERNS), value="position in the line", label="Pattern")
        ui.find = gr.Button("Find units")
    ui.found = gr.Markdown("")
    ui.highlights = gr.HighlightedText(label="The unit's cell state over the conversation", show_legend=False,
                                       combine_adjacent=False, elem_id="highlights")
    with gr.Accordion("How to read this", open=False):
        gr.Markdown(views.EXPLANATION)
    with gr.Accordion("Memory report (JSON, also at the /memory endpoint)", open=False):
        ui.report = gr.JSON()
    return ui


# -- wiring ---------------------------------------------------------------------------------------


def wire_chat(app: ChatApp, chat, controls, panel) -> None:
    """The chat buttons: each runs the action's handler and shows the session's transcript."""

    def page_send(message, temperature, top_k, top_p, max_chars, seed, stop, memory, request: gr.Request):
        st = app.state(request)
        values = temperature, top_k, top_p, max_chars, seed, stop, memory
        for i, text in enumerate(app.chat(message, *values, request=request)):
            notice = "\n".join(f"⚠️ {n}" for n in st.notes) if i == 0 else gr.skip()
            yield history_of(st.session, text), "", notice
        yield history_of(st.session), "", gr.skip()

    def page_retry(temperature, top_k, top_p, max_chars, seed, stop, memory, request: gr.Request):
        st = app.state(request)
        values = temperature, top_k, top_p, max_chars, seed, stop, memory
        for text in app.retry(*values, request=request):
            yield history_of(st.session, text), gr.skip()
        yield history_of(st.session), "Resampled the last reply from the memory after your message."

    def status_action(action):
        def run(request: gr.Request):
            status = action(request=request)
            return history_of(app.state(request).session), status
        return run

    shown = [chat.chatbot, chat.notice]
    for trigger in (chat.send.click, chat.message.submit):
        trigger(page_send, [chat.message, *controls], [chat.chatbot, chat.message, chat.notice],
                api_visibility="private").then(**panel)
    chat.retry.click(page_retry, controls, shown, api_visibility="private").then(**panel)
    chat.undo.click(status_action(app.undo), None, shown, api_visibility="private").then(**panel)
    chat.reset.click(status_action(app.reset), None, shown, api_visibility="private").then(**panel)


def wire_panel(app: ChatApp, memory) -> dict:
    """The memory panel's own controls; returns the panel refresh that other events chain."""

    def refresh(quantity, unit, layer, request: gr.Request):
        return panel_figures(app.state(request), quantity, unit, layer)

    def find(pattern, layer, request: gr.Request):
        return found_units(app.state(request), pattern, layer)

    def inspect_unit(unit, layer, request: gr.Request):
        st = app.state(request)
        if not st.session.turns:
            return []
        model = st.serving.model
        unit = max(0, min(int(unit or 0), model.hidden_size - 1))
        recent = st.session.trace_recent(max_chars=RECENT_CHARS)
        return views.unit_highlights(recent, unit, min(int(layer) - 1, model.num_layers - 1))

    panel = dict(fn=refresh, inputs=[memory.quantity, memory.unit, memory.layer],
                 outputs=[memory.timeline, memory.heatmap, memory.highlights, memory.report, memory.unit, memory.layer,
                          memory.status], api_visibility="private")
    memory.quantity.change(**panel)
    memory.layer.change(**panel)
    memory.unit.submit(inspect_unit, [memory.unit, memory.layer], [memory.highlights], api_visibility="private")
    memory.find.click(find, [memory.pattern, memory.layer], [memory.unit, memory.found, memory.highlights],
                      api_visibility="private")
    return panel


def wire_model(app: ChatApp, model, chat, controls, panel) -> None:
    def load(picked, typed, request: gr.Request, progress=gr.Progress()):
        progress(0.2, desc=f"Loading {(typed or '').strip() or picked}…")
        before = app.state(request).session
        status = app.load(picked, typed, request=request)
        st = app.state(request)
        if st.session is before:  # not loaded: the conversation goes on
            return status, gr.skip(), gr.skip()
        return status, [], gr.update(value=escape(st.serving.model.stop_sequence))

    stop_box = controls[5]
    model.load.click(load, [model.picked, model.typed], [model.status, chat.chatbot, stop_box],
                     api_visibility="private").then(**panel)


def build_app(source: str | None = None, options: Options | None = None) -> gr.Blocks:
    """The Gradio app serving `source` (default: the bundled model), as `options` say."""
    options = options or Options()
    options.model = source if source is not None else options.model
    app = ChatApp(options)
    with gr.Blocks(title="LSTM Memory Chat", delete_cache=(3600, SESSION_TTL_S)) as demo:
        gr.Markdown(
            "# LSTM Memory Chat\nChat with a character-level LSTM that **keeps its memory (H and C) from turn to "
            "turn**, and watch what that memory holds. The default model writes Shakespeare-like plays: "
            "start a speech with a name and a colon, e.g. `ROMEO:` and a line.")
        with gr.Row():
            with gr.Column(scale=5):
                chat = chat_section()
                controls = sampling_section(app.default)
                model = model_section(options.model, app.default)
            with gr.Column(scale=6):
                memory = memory_section()
        for action in (app.chat, app.retry, app.undo, app.reset, app.memory):  # first: they own these names
            gr.api(action, api_name=action.__name__)
        panel = wire_panel(app, memory)
        wire_chat(app, chat, controls, panel)
        wire_model(app, model, chat, controls, panel)
        demo.load(**panel)
        demo.unload(app.forget)
    demo.queue(default_concurrency_limit=options.concurrency, max_size=256)
    return demo


def main(argv=None) -> int:
    options = parse_args(argv)
    # Replies are computed in worker threads, where one OpenMP thread runs these small LSTM steps
    # about 2x faster than two (benchmarks/README.md); the second core serves everything else.
    torch.set_num_threads(options.threads)
    try:
        demo = build_app(options=options)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    demo.launch(server_name=options.host, server_port=options.port, share=options.share, prevent_thread_lock=True)
    if options.share and not getattr(demo, "share_url", None):
        print("The public share link could not be created (no connection to gradio.live?); "
              f"the app keeps serving locally at {demo.local_url}.", file=sys.stderr)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
