"""The page: one function per section (chat, sampling, model, memory panel), the wiring of their
events to the handlers in ui.actions, and `build_app`, which puts them together with the named
API endpoints."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import anyio
import gradio as gr

from lstm_model import views
from lstm_model.gates import DEFAULT_PATTERN, PATTERNS
from lstm_model.serving import Serving

from .actions import (
    DEFAULTS,
    RANGES,
    SESSION_TTL_S,
    ChatApp,
    Options,
    escape,
    found_units,
    history_of,
    inspected_unit,
    panel_figures,
    serving_line,
)
from .guides import Guide, guide_for
from .sessions import use_lazy_session_state
from .stream import stream_route

# -- layout: one function per section -------------------------------------------------------------


def chat_section(guide: Guide) -> SimpleNamespace:
    ui = SimpleNamespace()
    ui.chatbot = gr.Chatbot(label="Conversation", height=430, render_markdown=False, sanitize_html=True,
                            line_breaks=True, feedback_options=None, elem_id="chatbot")
    with gr.Row():
        # One line that grows (to 8): Enter sends, Shift+Enter starts a new line, as in chat apps.
        ui.message = gr.Textbox(placeholder=placeholder(guide), lines=1, max_lines=8, show_label=False, scale=5,
                                elem_id="message")
        with gr.Column(scale=1, min_width=120):
            ui.send = gr.Button("Send", variant="primary", elem_id="send")
            # In sight, not in an accordion: whether the next turn starts from the carried memory.
            ui.memory = gr.Checkbox(value=DEFAULTS["memory"], label="Memory on", elem_id="memory-toggle",
                                    info="carry H and C to the next turn")
    with gr.Row():
        ui.undo = gr.Button("Undo", size="sm", min_width=70, elem_id="undo")  # one row on a phone too
        ui.retry = gr.Button("Retry", size="sm", min_width=70, elem_id="retry")
        ui.reset = gr.Button("Reset (fresh memory)", size="sm", min_width=150, elem_id="reset")
    ui.test = gr.Button("Run the memory test: three facts, then the question", size="sm", visible=bool(guide.test),
                        elem_id="memory-test")
    ui.examples = gr.Dataset(components=[ui.message], samples=samples(guide), label="Examples "
                             "(click one to put it in the box)", visible=bool(guide.examples), elem_id="examples")
    ui.notice = gr.Markdown("", elem_id="notice")
    return ui


def placeholder(guide: Guide) -> str:
    return f"{guide.placeholder}  (Enter sends; Shift+Enter: a new line)"


def samples(guide: Guide) -> list[list[str]]:
    """The guide's examples as the examples' Dataset holds them (one message box each)."""
    return [[e] for e in guide.examples]


HEADER = ("# LSTM Memory Chat\nChat with a character-level LSTM that **keeps its memory (H and C) from turn to turn**, "
          "and watch what that memory holds. ")

# The badge and the fresh-memory reply under each reply (ui.actions.fresh_reply_html), the phone's chat
# height; then the memory views' own style (coloured text, heatmap).
CSS = """
.memory-note { margin-top: .35em; font-size: .85em; opacity: .9; }
.memory-badge { display: inline-block; padding: 0 .5em; margin-right: .4em; border: 1px solid; border-radius: .7em;
                font-size: .85em; line-height: 1.5; }
.memory-badge.on { color: #1f7a4d; } .memory-badge.off { color: #9a6700; }
.reply-sure { font-size: .8em; color: #666; }
.fresh-reply { display: inline; } .fresh-reply summary { display: inline; cursor: pointer; text-decoration: underline dotted; }
.fresh-text { margin-top: .25em; padding-left: .6em; border-left: 3px solid #999; color: #777; white-space: pre-wrap; }
.fresh-text .fork { color: #c0392b; font-weight: bold; } .fresh-text .differs { color: #555; background: #f4e3e1; }
@media (max-width: 700px) { #chatbot { height: 280px !important; } }  /* a phone reaches the memory panel sooner */
""" + views.VIEWS_CSS


def sampling_section(serving: Serving) -> list:
    """The sampling controls, in the order the chat and retry handlers take them (the memory
    toggle, beside Send, comes last)."""
    with gr.Accordion("Sampling", open=False):
        with gr.Row():
            temperature = gr.Slider(*RANGES["temperature"], value=DEFAULTS["temperature"], step=0.05, label="Temperature")
            # One range for every model (a model picked later may have another vocabulary): a top-k at or
            # above the vocabulary's size keeps every character, as 0 does.
            top_k = gr.Slider(0, max(TOP_K_MAX, serving.model.vocab_size), value=DEFAULTS["top_k"], step=1,
                              label="Top-k (0 = off)")
            top_p = gr.Slider(*RANGES["top_p"], value=DEFAULTS["top_p"], step=0.05, label="Top-p (1 = off)")
        with gr.Row():
            max_chars = gr.Slider(*RANGES["max_chars"], value=DEFAULTS["max_chars"], step=1, label="Max characters")
            seed = gr.Number(value=DEFAULTS["seed"], precision=0, label="Seed (-1 = random)")
            stop = gr.Textbox(value=escape(serving.model.stop_sequence), label="Stop sequence (\\n = newline)")
    return [temperature, top_k, top_p, max_chars, seed, stop]


def model_section(app: ChatApp) -> SimpleNamespace:
    ui = SimpleNamespace()
    source, models = app.options.model, app.choices()
    with gr.Accordion("Model", open=False):
        with gr.Row():
            picked = source if source in models else (models[0] if models and source is None else None)
            ui.picked = gr.Dropdown(models, value=picked, label="Models", allow_custom_value=False)
            ui.typed = gr.Textbox(label="…or a Hub repo id (user/name[@revision]) or a local folder (./path)",
                                  visible=app.options.custom_models)
            ui.load = gr.Button("Load model")
        if not app.options.custom_models:
            gr.Markdown("Only these models are served here: loading other Hub repos or local folders is switched "
                        "off on this public app (`CUSTOM_MODELS=0`). Run it on your own machine to load your own.",
                        elem_id="custom-models-off")
        ui.status = gr.Markdown(serving_line(source or "the bundled default (shakespeare)", app.default) + ".",
                                elem_id="model-status")
    return ui


def memory_section() -> SimpleNamespace:
    ui = SimpleNamespace()
    gr.Markdown("## What the memory holds")
    # Their titles are in the figures: no Gradio label over the legend.
    ui.timeline = gr.Plot(label="Memory timeline", show_label=False, elem_id="timeline")
    ui.status = gr.Markdown("", elem_id="panel-status")
    ui.benefit_sentence = gr.Markdown("", elem_id="benefit-sentence")
    ui.benefit = gr.HTML("", elem_id="benefit-text")
    ui.quantity = gr.Radio(["cell", "forget", "input", "output", "hidden"], value="cell", label="Heatmap of the last turn")
    ui.heatmap = gr.HTML(views.heatmap_html(None), elem_id="heatmap")
    with gr.Row():
        ui.unit = gr.Number(value=0, precision=0, label="Unit")  # clamped by the handlers, not by Gradio
        ui.layer = gr.Radio(["1", "2"], value="2", label="Layer")
        ui.pattern = gr.Dropdown(list(PATTERNS), value=DEFAULT_PATTERN, label="Pattern")
        ui.find = gr.Button("Find units")
    ui.found = gr.Markdown("")
    ui.found_pick = gr.Radio([], label="Found units: click one to show it", visible=False, elem_id="found-units")
    ui.highlights = gr.HTML("", elem_id="highlights")  # the unit's cell state over the conversation
    with gr.Accordion("How to read this", open=False):
        gr.Markdown(views.EXPLANATION)
    with gr.Accordion("Memory report (JSON, also at the /memory endpoint)", open=False):
        ui.report = gr.JSON()
    return ui


# -- wiring ---------------------------------------------------------------------------------------


def wire_chat(app: ChatApp, chat, controls, panel) -> None:
    """The chat buttons: each runs the action's handler and shows the session's transcript."""

    async def page_send(message, temperature, top_k, top_p, max_chars, seed, stop, memory, request: gr.Request):
        if not (message or "").strip():  # Enter in an empty box sends nothing (the API's /chat takes any text)
            yield gr.skip(), gr.skip(), gr.skip()
            return
        st = app.state(request)
        values = temperature, top_k, top_p, max_chars, seed, stop, memory
        try:
            first = True
            async with contextlib.aclosing(app.chat(message, *values, request=request)) as texts:
                async for text in texts:
                    notice = "\n".join(f"⚠️ {n}" for n in st.notes) if first else gr.skip()
                    first = False
                    yield history_of(st.session, text), "", notice
        except gr.Error as err:  # busy, a bad setting, a failed reply: the message goes back in the box
            yield history_of(st.session), message, f"⚠️ {err.message}"
            return
        yield history_of(st.session), "", gr.skip()

    async def page_retry(temperature, top_k, top_p, max_chars, seed, stop, memory, request: gr.Request):
        st = app.state(request)
        values = temperature, top_k, top_p, max_chars, seed, stop, memory
        try:
            async with contextlib.aclosing(app.retry(*values, request=request)) as texts:
                async for text in texts:
                    yield history_of(st.session, text), gr.skip()
        except gr.Error as err:
            yield history_of(st.session), f"⚠️ {err.message}"
            return
        yield history_of(st.session), "Resampled the last reply from the memory after your message."

    async def page_test(temperature, top_k, top_p, max_chars, seed, stop, memory, request: gr.Request):
        """The served model's memory test: its messages sent one by one, then what the memory did."""
        st = app.state(request)
        script = st.guide.test
        if not script:
            yield gr.skip(), "This model has no memory test; chat with it instead."
            return
        values = temperature, top_k, top_p, max_chars, seed, stop, memory
        try:
            for message in script:
                async with contextlib.aclosing(app.chat(message, *values, request=request)) as texts:
                    async for text in texts:
                        yield history_of(st.session, text), gr.skip()
        except gr.Error as err:
            yield history_of(st.session), f"⚠️ {err.message}"
            return
        turn = st.session.turns[-1]
        if not turn.memory:
            verdict = "Memory is off, so it answered from a fresh memory: switch Memory on and run it again."
        else:
            def fresh_reply():  # the test needs it even where FRESH_REPLIES=0 leaves it out of every reply
                with st.lock:
                    return st.session.fresh_reply(-1)
            fresh = await anyio.to_thread.run_sync(fresh_reply)
            sure = turn.measures.get("reply_probability")
            judged = ("" if not st.guide.test_answer else " (right" if turn.reply.strip() == st.guide.test_answer
                      else f" (wrong: the answer is “{st.guide.test_answer}”")
            judged += (f", sure: {100 * sure:.0f}%)" if sure is not None else ")") if judged else ""
            verdict = (f"Memory test: with the facts in its memory it answered “{turn.reply}”{judged}; from a fresh "
                       f"memory (what Reset would leave) it answers “{fresh}”.")
        yield history_of(st.session), verdict

    def status_action(action):
        def run(request: gr.Request):
            status = action(request=request)
            return history_of(app.state(request).session), status
        return run

    shown = [chat.chatbot, chat.notice]
    for trigger in (chat.send.click, chat.message.submit):
        trigger(page_send, [chat.message, *controls], [chat.chatbot, chat.message, chat.notice],
                api_visibility="private").then(**panel)
    # The buttons, and the chat's own icons (retry and undo under the last reply, the trash can
    # at the top): the same handlers, so clearing the chat also clears the memory.
    chat.test.click(page_test, controls, shown, api_visibility="private").then(**panel)
    for trigger in (chat.retry.click, chat.chatbot.retry):
        trigger(page_retry, controls, shown, api_visibility="private").then(**panel)
    for trigger in (chat.undo.click, chat.chatbot.undo):
        trigger(status_action(app.undo), None, shown, api_visibility="private").then(**panel)
    for trigger in (chat.reset.click, chat.chatbot.clear):
        trigger(status_action(app.reset), None, shown, api_visibility="private").then(**panel)


TOP_K_MAX = 100

PANEL_QUEUE = dict(concurrency_limit=1, concurrency_id="panel")  # one panel drawn at a time


def wire_panel(app: ChatApp, memory) -> dict:
    """The memory panel's own controls; returns the panel refresh that other events chain."""

    def refresh(quantity, unit, layer, request: gr.Request):
        return panel_figures(app.state(request), quantity, unit, layer)

    def find(pattern, layer, request: gr.Request):
        return found_units(app.state(request), pattern, layer)

    def inspect_unit(unit, layer, request: gr.Request):
        return inspected_unit(app.state(request), unit, layer)

    panel = dict(fn=refresh, inputs=[memory.quantity, memory.unit, memory.layer],
                 outputs=[memory.timeline, memory.heatmap, memory.highlights, memory.report, memory.unit, memory.layer,
                          memory.status, memory.benefit_sentence, memory.benefit], api_visibility="private", **PANEL_QUEUE)
    memory.quantity.change(**panel)
    memory.layer.change(**panel)
    for trigger in (memory.unit.submit, memory.unit.input):  # Enter, typing or the arrows (not the handlers' own updates)
        trigger(inspect_unit, [memory.unit, memory.layer], [memory.highlights, memory.unit], api_visibility="private",
                **PANEL_QUEUE)
    memory.find.click(find, [memory.pattern, memory.layer], [memory.unit, memory.found, memory.highlights,
                                                             memory.found_pick],
                      api_visibility="private", **PANEL_QUEUE)
    memory.found_pick.input(inspect_unit, [memory.found_pick, memory.layer], [memory.highlights, memory.unit],
                            api_visibility="private", **PANEL_QUEUE)
    return panel


def wire_model(app: ChatApp, model, chat, controls, panel, intro) -> None:
    def load(picked, typed, request: gr.Request, progress=gr.Progress()):
        wanted = (typed or "").strip() or picked
        if not wanted:
            return "Pick a bundled model or type a Hub repo id.", *[gr.skip()] * 6
        progress(0.2, desc=f"Loading {wanted}…")
        try:
            status = app.model(wanted, request=request)
        except gr.Error as err:  # not loaded: the conversation goes on
            return f"❌ {err.message}", *[gr.skip()] * 6
        st = app.state(request)
        guide = st.guide
        return (status, [], gr.update(value=escape(st.serving.model.stop_sequence)), HEADER + guide.intro,
                gr.update(placeholder=placeholder(guide)),
                gr.Dataset(samples=samples(guide), visible=bool(guide.examples)),
                gr.update(visible=bool(guide.test)))

    stop_box = controls[5]
    model.load.click(load, [model.picked, model.typed], [model.status, chat.chatbot, stop_box, intro, chat.message,
                                                          chat.examples, chat.test],
                     api_visibility="private").then(**panel)


def build_app(source: str | None = None, options: Options | None = None) -> gr.Blocks:
    """The Gradio app serving `source` (default: the bundled model), as `options` say."""
    options = options or Options()
    options.model = source if source is not None else options.model
    use_lazy_session_state()  # a new session no longer copies every component's config up front
    app = ChatApp(options)
    guide = guide_for(app.default_name, app.default.model)
    with gr.Blocks(title="LSTM Memory Chat", delete_cache=(3600, SESSION_TTL_S)) as demo:
        gr.HTML(f"<style>{CSS}</style>", padding=False, elem_id="styles")
        intro = gr.Markdown(HEADER + guide.intro, elem_id="intro")
        with gr.Row():
            with gr.Column(scale=5):
                chat = chat_section(guide)
                controls = sampling_section(app.default) + [chat.memory]
                model = model_section(app)
            with gr.Column(scale=6):
                memory = memory_section()
        for action in (app.chat, app.retry, app.undo, app.reset, app.memory, app.model):  # first: they own these names
            gr.api(action, api_name=action.__name__)
        panel = wire_panel(app, memory)
        wire_chat(app, chat, controls, panel)
        wire_model(app, model, chat, controls, panel, intro)
        chat.examples.click(lambda sample: sample[0], chat.examples, chat.message, api_visibility="private")
        demo.load(**panel)
        demo.unload(app.forget)
    # Replies are admitted by ChatApp.admitted (CHAT_CONCURRENCY, with a "busy" sentence beyond),
    # not held in Gradio's queue; the panel's figures (matplotlib) are drawn one at a time, so a
    # crowd's panels never take both cores from the decoder.
    demo.queue(default_concurrency_limit=None, max_size=None)
    # Routes beside Gradio's, for launch(app_kwargs={"routes": demo.plain_routes}): the chat as a
    # plain HTTP stream outside the queue (ui/stream.py).
    demo.plain_routes = [stream_route(app)]
    return demo

