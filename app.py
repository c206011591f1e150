"""LSTM Memory Chat: chat with a character-level LSTM that keeps its memory across turns, and
watch that memory. Gradio UI only: layout and event wiring; the model logic is in lstm_model/.

    python app.py [--model PATH_OR_REPO[@revision]] [--share] [--host HOST] [--port PORT] [--int8 auto|on|off]
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import threading
import time
from functools import lru_cache

import gradio as gr
import torch

from lstm_model import load_model, views
from lstm_model.batching import Decoder
from lstm_model.gates import PATTERNS, units_following
from lstm_model.generate import SamplingError, step_engine
from lstm_model.hub import ModelLoadError, bundled_models
from lstm_model.quantize import MODES as INT8_MODES, resolve_int8
from lstm_model.session import ChatSession

# Replies streamed at once. Their LSTM steps are batched by one decoder thread per model
# (lstm_model/batching.py), so concurrent replies share each step instead of competing for the 2
# CPU cores; beyond 16, a batched step costs more than it saves in waiting.
CHAT_CONCURRENCY = int(os.environ.get("CHAT_CONCURRENCY", "16"))
BATCHING = os.environ.get("BATCHING", "1") != "0"  # BATCHING=0: every reply steps alone
# Int8 generation steps (lstm_model/quantize.py): "auto" serves a model in int8 when its int8.json
# shows a measured loss rise <= 0.01 nats/char; "on" / "off" force it. --int8 overrides INT8.
INT8 = os.environ.get("INT8", "auto")
SESSION_TTL_S = 2 * 3600  # an idle browser session's memory is freed after this long
RECENT_CHARS = 1500  # characters of the conversation shown in the unit inspector
STREAM_INTERVAL_S = 0.04  # the streamed reply is updated at most 25 times a second
DEFAULTS = dict(temperature=0.8, top_k=40, top_p=1.0, max_chars=500, seed=-1, memory=True)


@lru_cache(maxsize=4)
def cached_model(source: str | None):
    """Models are read-only at inference, so sessions share them (loaded once per source)."""
    model = load_model(source)
    resolve_int8(model, INT8)
    return model


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


class ChatState:
    """One browser (or API client) session: its model, its ChatSession, a lock for its turns."""

    def __init__(self, source: str | None):
        self.source = source
        self.model = cached_model(source)
        self.session = ChatSession(self.model, memory=True, decoder=decoder_for(self.model))
        self.lock = threading.Lock()

    def switch(self, source: str | None, model) -> None:
        self.source, self.model = source, model
        self.session = ChatSession(model, memory=self.session.memory, decoder=decoder_for(model))


def decoder_for(model):
    return Decoder.for_model(model) if BATCHING else None


def settings_from(temperature, top_k, top_p, max_chars, seed, stop) -> tuple[dict, list[str]]:
    """Sampling settings from the controls (or the API), clamped into range with notices."""
    notices = []

    def number(name, value, default, cast=float):
        if value is None or value == "":
            return default
        try:
            return cast(float(value))
        except (TypeError, ValueError):
            notices.append(f"{name} must be a number; used {default}.")
            return default

    temperature = number("Temperature", temperature, DEFAULTS["temperature"])
    if not temperature > 0 or temperature != temperature:
        notices.append("Temperature must be above 0; used 0.05.")
        temperature = 0.05
    top_k = number("Top-k", top_k, 0, int)
    top_p = number("Top-p", top_p, 1.0)
    if not 0 < top_p <= 1:
        notices.append(f"Top-p must be in (0, 1]; used {min(1.0, max(0.01, top_p)):g}.")
        top_p = min(1.0, max(0.01, top_p))
    max_chars = number("Max characters", max_chars, DEFAULTS["max_chars"], int)
    if not 1 <= max_chars <= 5000:
        notices.append(f"Max characters must be 1 to 5000; used {min(5000, max(1, max_chars))}.")
        max_chars = min(5000, max(1, max_chars))
    seed = number("Seed", seed, -1, int)
    settings = dict(temperature=min(temperature, 10.0), top_k=top_k if top_k > 0 else None,
                    top_p=top_p if top_p < 1 else None, max_new_chars=max_chars,
                    seed=seed if seed >= 0 else None)
    if stop is not None:
        settings["stop"] = unescape(str(stop)) or None
    return settings, notices


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
    """Join the reply's pieces into one update per `interval` seconds (and the last one): each
    update costs Gradio a few milliseconds, more than sampling a character."""
    buffer, last = "", time.monotonic()
    for piece in pieces:
        buffer += piece
        now = time.monotonic()
        if now - last >= interval:
            yield buffer
            buffer, last = "", now
    if buffer:
        yield buffer


def serving_line(name: str, model) -> str:
    engine = "ONNX Runtime" if step_engine(model) == "onnxruntime" else "torch"
    return f"Serving **{name}** ({model.num_parameters():,} parameters; {model.serve_int8_reason}; steps on {engine})"


def ensure(state: ChatState | None, source: str | None) -> ChatState:
    return state if state is not None else ChatState(source)


def build_app(source: str | None = None) -> gr.Blocks:
    models = list(bundled_models())
    default_model = cached_model(source)
    with gr.Blocks(title="LSTM Memory Chat", delete_cache=(3600, SESSION_TTL_S)) as demo:
        state = gr.State(None, time_to_live=SESSION_TTL_S)
        gr.Markdown(
            "# LSTM Memory Chat\nChat with a character-level LSTM that **keeps its memory (H and C) from turn to "
            "turn**, and watch what that memory holds. The default model writes Shakespeare-like plays: "
            "start a speech with a name and a colon, e.g. `ROMEO:` and a line.")
        with gr.Row():
            with gr.Column(scale=5):
                chatbot = gr.Chatbot(label="Conversation", height=430, render_markdown=False, sanitize_html=True,
                                     line_breaks=True, feedback_options=None, elem_id="chatbot")
                with gr.Row():
                    message = gr.Textbox(placeholder="ROMEO:\nWhat light through yonder window breaks?", lines=2,
                                         max_lines=8, show_label=False, scale=5, elem_id="message")
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                with gr.Row():
                    undo = gr.Button("Undo", size="sm", elem_id="undo")
                    retry = gr.Button("Retry", size="sm", elem_id="retry")
                    reset = gr.Button("Reset (fresh memory)", size="sm", elem_id="reset")
                notice = gr.Markdown("", elem_id="notice")
                with gr.Accordion("Sampling and memory", open=False):
                    with gr.Row():
                        temperature = gr.Slider(0.05, 2.0, value=DEFAULTS["temperature"], step=0.05, label="Temperature")
                        top_k = gr.Slider(0, default_model.vocab_size, value=DEFAULTS["top_k"], step=1,
                                          label="Top-k (0 = off)")
                        top_p = gr.Slider(0.05, 1.0, value=DEFAULTS["top_p"], step=0.05, label="Top-p (1 = off)")
                    with gr.Row():
                        max_chars = gr.Slider(1, 5000, value=DEFAULTS["max_chars"], step=1, label="Max characters")
                        seed = gr.Number(value=DEFAULTS["seed"], precision=0, label="Seed (-1 = random)")
                        stop = gr.Textbox(value=escape(default_model.stop_sequence), label="Stop sequence (\\n = newline)")
                        memory = gr.Checkbox(value=DEFAULTS["memory"], label="Memory on (carry H and C across turns)")
                with gr.Accordion("Model", open=False):
                    with gr.Row():
                        model_pick = gr.Dropdown(models, value=(source if source in models else None) or
                                                 (models[0] if models and source is None else None),
                                                 label="Bundled models", allow_custom_value=False)
                        repo = gr.Textbox(label="…or a Hub repo id (user/name[@revision]) or a local folder")
                        load = gr.Button("Load model")
                    model_status = gr.Markdown(serving_line(source or "the bundled default (shakespeare)",
                                                            default_model) + ".", elem_id="model-status")
            with gr.Column(scale=6):
                gr.Markdown("## What the memory holds")
                timeline = gr.Plot(label="Memory timeline", elem_id="timeline")
                panel_status = gr.Markdown("", elem_id="panel-status")
                quantity = gr.Radio(["cell", "forget", "input", "output", "hidden"], value="cell",
                                    label="Heatmap of the last turn")
                heatmap = gr.Plot(label="Last turn, character by character", elem_id="heatmap")
                with gr.Row():
                    unit = gr.Number(value=0, precision=0, label="Unit", minimum=0)
                    layer = gr.Radio(["1", "2"], value="2", label="Layer")
                    pattern = gr.Dropdown(list(PATTERNS), value="position in the line", label="Pattern")
                    find = gr.Button("Find units")
                found = gr.Markdown("")
                highlights = gr.HighlightedText(label="The unit's cell state over the conversation",
                                                show_legend=False, combine_adjacent=False, elem_id="highlights")
                with gr.Accordion("How to read this", open=False):
                    gr.Markdown(views.EXPLANATION)
                with gr.Accordion("Memory report (JSON, also at the /memory endpoint)", open=False):
                    report_json = gr.JSON()
        # Hidden components for the scripting API.
        api_message = gr.Textbox(visible=False)
        api_reply = gr.Textbox(visible=False)
        api_report = gr.JSON(visible=False)
        api_status = gr.Textbox(visible=False)
        api_chat_button = gr.Button(visible=False)
        api_undo_button = gr.Button(visible=False)
        api_retry_button = gr.Button(visible=False)
        api_reset_button = gr.Button(visible=False)
        api_memory_button = gr.Button(visible=False)

        controls = [temperature, top_k, top_p, max_chars, seed, stop, memory]

        # -- chat ----------------------------------------------------------------------------

        def start_turn(st, temperature, top_k, top_p, max_chars, seed, stop, memory):
            """The session with the controls' settings applied, and notices about clamped values."""
            st = ensure(st, source)
            settings, notes = settings_from(temperature, top_k, top_p, max_chars, seed, stop)
            st.session.memory = bool(memory)
            try:
                st.session.update_settings(**settings)
            except SamplingError as err:
                raise gr.Error(str(err))
            return st, notes

        def chat_ui(text, st, *values):
            st, notes = start_turn(st, *values)
            text = text if isinstance(text, str) else ""
            with st.lock:
                reply = st.session.send(text)
                notes += st.session.notices()
                shown = ""
                yield history_of(st.session, shown), "", st, "\n".join(f"⚠️ {n}" for n in notes)
                for piece in paced(reply):
                    shown += piece
                    yield history_of(st.session, shown), "", st, gr.skip()
            yield history_of(st.session), "", st, gr.skip()

        def chat_api(message, st, temperature, top_k, top_p, max_chars, seed, stop, memory):
            st, notes = start_turn(st, temperature, top_k, top_p, max_chars, seed, stop, memory)
            text = message if isinstance(message, str) else ""
            with st.lock:
                reply = st.session.send(text)
                for n in notes + st.session.notices():
                    gr.Warning(n)
                shown = ""
                for piece in paced(reply):
                    shown += piece
                    yield shown, st
            yield shown, st

        def undo_fn(st):
            st = ensure(st, source)
            with st.lock:
                done = st.session.undo()
            return history_of(st.session), st, "Undid the last turn: the memory is back to its state before it." \
                if done else "Nothing to undo."

        def reset_fn(st):
            st = ensure(st, source)
            with st.lock:
                st.session.reset()
            return [], st, "Fresh conversation: transcript and memory cleared."

        def retry_ui(st, *values):
            st, _ = start_turn(st, *values)
            with st.lock:
                reply = st.session.retry()
                if reply is None:
                    yield history_of(st.session), st, "Nothing to retry."
                    return
                shown = ""
                for piece in paced(reply):
                    shown += piece
                    yield history_of(st.session, shown), st, gr.skip()
            yield history_of(st.session), st, "Resampled the last reply from the memory after your message."

        def retry_api(st, temperature, top_k, top_p, max_chars, seed, stop, memory):
            st, _ = start_turn(st, temperature, top_k, top_p, max_chars, seed, stop, memory)
            with st.lock:
                reply = st.session.retry()
                if reply is None:
                    raise gr.Error("Nothing to retry: send a message first.")
                text = "".join(reply)
            return text, st

        def api_undo(st):
            _, st, status = undo_fn(st)
            return status, st

        def api_reset(st):
            _, st, status = reset_fn(st)
            return status, st

        def memory_api(st):
            st = ensure(st, source)
            return st.session.memory_report(), st

        # -- the memory panel ----------------------------------------------------------------

        def panel(st, quantity, unit, layer):
            if st is None or not st.session.turns:
                empty = views.timeline_figure({"turns": []})
                return (empty, views.heatmap_figure(None), [], {"turns": []}, gr.skip(), gr.skip(),
                        "No turns yet: the memory is fresh (all zeros).")
            report = st.session.memory_report()
            layer_index = min(int(layer) - 1, st.model.num_layers - 1)
            recent = st.session.trace_recent(max_chars=RECENT_CHARS)  # one trace serves every view
            last = recent.tail(len(st.session.turn_text(st.session.turns[-1])))
            unit = max(0, min(int(unit or 0), st.model.hidden_size - 1))
            marks = views.unit_highlights(recent, unit, layer_index)
            figures = (views.timeline_figure(report), views.heatmap_figure(last, quantity, layer_index))
            status = (f"Memory panel after turn {len(report['turns'])}"
                      + ("" if st.session.memory else " (memory off: every turn starts fresh)") + ".")
            return (*figures, marks, report, gr.update(maximum=st.model.hidden_size - 1),
                    gr.update(choices=[str(i + 1) for i in range(st.model.num_layers)]), status)

        def find_units(st, pattern_name, layer):
            if st is None or not st.session.turns:
                return gr.skip(), "Chat first: units are found on the conversation's text.", gr.skip()
            layer_index = min(int(layer) - 1, st.model.num_layers - 1)
            recent = st.session.trace_recent(max_chars=RECENT_CHARS)
            ranked = units_following(recent, pattern_name, layer=layer_index, k=5)
            if not ranked:
                return gr.skip(), f"The pattern “{pattern_name}” does not vary over this conversation yet.", gr.skip()
            rows = ", ".join(f"unit {u} (r = {r:+.2f})" for u, r in ranked)
            best = ranked[0][0]
            return (best, f"Units whose cell state follows “{pattern_name}”: {rows}. Showing unit {best}.",
                    views.unit_highlights(recent, best, layer_index))

        def inspect_unit(st, unit, layer):
            if st is None or not st.session.turns:
                return []
            layer_index = min(int(layer) - 1, st.model.num_layers - 1)
            unit = max(0, min(int(unit or 0), st.model.hidden_size - 1))
            return views.unit_highlights(st.session.trace_recent(max_chars=RECENT_CHARS), unit, layer_index)

        # -- model picker --------------------------------------------------------------------

        def load_fn(st, picked, repo_text, progress=gr.Progress()):
            st = ensure(st, source)
            wanted = (repo_text or "").strip() or picked
            if not wanted:
                return st, "Pick a bundled model or type a Hub repo id.", gr.skip(), gr.skip()
            progress(0.2, desc=f"Loading {wanted}…")
            try:
                model = cached_model(wanted)
            except ModelLoadError as err:
                return st, f"❌ {err} The current model keeps working.", gr.skip(), gr.skip()
            with st.lock:
                st.switch(wanted, model)
            progress(1.0)
            return (st, serving_line(wanted, model) + "; the conversation was reset.",
                    [], gr.update(value=escape(model.stop_sequence)))

        # -- wiring --------------------------------------------------------------------------

        panel_inputs = [state, quantity, unit, layer]
        panel_outputs = [timeline, heatmap, highlights, report_json, unit, layer, panel_status]
        for trigger in (send.click, message.submit):
            trigger(chat_ui, [message, state, *controls], [chatbot, message, state, notice],
                    api_visibility="private").then(panel, panel_inputs, panel_outputs, api_visibility="private")
        undo.click(undo_fn, [state], [chatbot, state, notice], api_visibility="private").then(
            panel, panel_inputs, panel_outputs, api_visibility="private")
        retry.click(retry_ui, [state, *controls], [chatbot, state, notice], api_visibility="private").then(
            panel, panel_inputs, panel_outputs, api_visibility="private")
        reset.click(reset_fn, [state], [chatbot, state, notice], api_visibility="private").then(
            panel, panel_inputs, panel_outputs, api_visibility="private")
        quantity.change(panel, panel_inputs, panel_outputs, api_visibility="private")
        layer.change(panel, panel_inputs, panel_outputs, api_visibility="private")
        unit.submit(inspect_unit, [state, unit, layer], [highlights], api_visibility="private")
        find.click(find_units, [state, pattern, layer], [unit, found, highlights], api_visibility="private")
        load.click(load_fn, [state, model_pick, repo], [state, model_status, chatbot, stop],
                   api_visibility="private").then(panel, panel_inputs, panel_outputs, api_visibility="private")
        demo.load(panel, panel_inputs, panel_outputs, api_visibility="private")

        api_chat_button.click(chat_api, [api_message, state, *controls], [api_reply, state], api_name="chat",
                              api_description="Send a message; streams the reply. The LSTM memory carries over "
                                              "between calls of the same client session.")
        api_undo_button.click(api_undo, [state], [api_status, state], api_name="undo")
        api_retry_button.click(retry_api, [state, *controls], [api_reply, state], api_name="retry")
        api_reset_button.click(api_reset, [state], [api_status, state], api_name="reset")
        api_memory_button.click(memory_api, [state], [api_report, state], api_name="memory")
    demo.queue(default_concurrency_limit=CHAT_CONCURRENCY, max_size=256)
    return demo


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="LSTM Memory Chat: chat with an LSTM and watch its memory.")
    p.add_argument("--model", default=None, help="local folder or Hub repo id user/name[@revision] (default: bundled)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1, or GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or GRADIO_SERVER_PORT)")
    p.add_argument("--int8", choices=list(INT8_MODES), default=None,
                   help="int8 generation steps: auto (default, or INT8) = when the model's int8.json shows a loss "
                        "rise <= 0.01 nats/char; on; off")
    return p.parse_args(argv)


def main(argv=None) -> int:
    global INT8
    args = parse_args(argv)
    INT8 = args.int8 or INT8
    if INT8 not in INT8_MODES:
        print(f"error: INT8 must be one of {', '.join(INT8_MODES)}; got {INT8!r}.", file=sys.stderr)
        return 2
    # Replies are computed in worker threads, where one OpenMP thread runs these small LSTM steps
    # about 2x faster than two (benchmarks/README.md); the second core serves everything else.
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
    try:
        demo = build_app(args.model)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True)
    if args.share and not getattr(demo, "share_url", None):
        print("The public share link could not be created (no connection to gradio.live?); "
              f"the app keeps serving locally at {demo.local_url}.", file=sys.stderr)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
