"""The page: one function per section (chat, sampling, model, memory panel), the wiring of their
events to the handlers in ui.actions, and `build_app`, which puts them together with the named
API endpoints."""

from __future__ import annotations

import contextlib
import html
from types import SimpleNamespace

import anyio
import gradio as gr
from matplotlib.figure import Figure

from lstm_model import views
from lstm_model.gates import DEFAULT_PATTERN, PATTERNS
from lstm_model.serving import Serving

from .actions import SESSION_TTL_S, ChatApp, Options
from .checks import DEFAULTS, RANGES, serving_line
from .guides import TEST_MODEL, Guide, guide_for
from .panel import (
    HEATMAP_CHOICES,
    PANEL_PARTS,
    found_units,
    inspected_unit,
    panel_figures,
    readable,
    timeline_svg,
)
from .render import escape, history_of, verdict_html
from .sessions import use_lazy_session_state
from .stream import stream_route

# -- layout: one function per section -------------------------------------------------------------


def test_section(app: ChatApp, guide: Guide) -> SimpleNamespace:
    """The memory test, first on the page: one click shows a carried memory and a fresh one answering
    the same question, with the verdict beside the button, on a phone's first screen too."""
    ui = SimpleNamespace()
    with gr.Row(equal_height=False, elem_id="memory-test-row"):
        ui.test = gr.Button("▶ Try the memory test", variant="primary", scale=0, min_width=230,
                            visible=has_test(app, guide), elem_id="memory-test")
        ui.verdict = gr.HTML(test_caption(guide), scale=1, min_width=280, padding=False, js_on_load=None,
                             elem_id="verdict")
    return ui


def has_test(app: ChatApp, guide: Guide) -> bool:
    """Whether the test button shows: the served model has a memory test, or the test's model can be picked."""
    return bool(guide.test) or TEST_MODEL in app.choices()


def test_caption(guide: Guide) -> str:
    """What the test button does, before it has run."""
    where = ("" if guide.test else "switches to the bAbI memory model (a fresh conversation), ")
    return ('<div class="verdict-note">One click: it ' + where + "tells the model three facts, asks where Mary is, "
            "and shows what it answers with its memory and from a fresh memory.</div>")


def chat_section(guide: Guide) -> SimpleNamespace:
    ui = SimpleNamespace()
    # No label: Gradio draws it over the top of the conversation, where the first message is.
    ui.chatbot = gr.Chatbot(label="Conversation", show_label=False, height=430, render_markdown=False,
                            sanitize_html=True, line_breaks=True, feedback_options=None, elem_id="chatbot")
    with gr.Row():
        # One line that grows (to 8): Enter sends, Shift+Enter starts a new line, as in chat apps.
        ui.message = gr.Textbox(placeholder=placeholder(guide), lines=1, max_lines=8, show_label=False, scale=5,
                                elem_id="message")
        with gr.Column(scale=1, min_width=120):
            ui.send = gr.Button("Send", variant="primary", elem_id="send")
            # In sight, not in an accordion: whether the next turn starts from the carried memory.
            ui.memory = gr.Checkbox(value=DEFAULTS["memory"], label="Memory on", elem_id="memory-toggle",
                                    info="carry the memory to the next turn")
    with gr.Row(elem_id="turn-buttons"):
        ui.undo = gr.Button("Undo", size="sm", min_width=70, elem_id="undo")  # one row on a phone too
        ui.retry = gr.Button("Retry", size="sm", min_width=70, elem_id="retry")
        ui.reset = gr.Button("Reset (fresh memory)", size="sm", min_width=150, elem_id="reset")
    ui.notice = gr.Markdown("", elem_id="notice")
    ui.examples = gr.Dataset(components=[ui.message], samples=samples(guide), label="Examples "
                             "(click one to put it in the box)", visible=bool(guide.examples), elem_id="examples")
    with gr.Accordion("What this model does", open=False, visible=bool(guide.details),
                      elem_id="guide-details") as ui.details_box:
        ui.details = gr.Markdown(guide.details)
    return ui


def placeholder(guide: Guide) -> str:
    return f"{guide.placeholder}  (Enter sends; Shift+Enter: a new line)"


def samples(guide: Guide) -> list[list[str]]:
    """The guide's examples as the examples' Dataset holds them (one message box each)."""
    return [[e] for e in guide.examples]


MEMORY_WORDS = {"lstm": ("LSTM", "H and C"), "gru": ("GRU", "H"), "rnn": ("plain RNN", "H")}


def header(model) -> str:
    """The page's first line, in the words of the served model's cell."""
    name, states = MEMORY_WORDS.get(model.cell, MEMORY_WORDS["lstm"])
    return (f"# LSTM Memory Chat\nChat with a character-level {name} that **keeps its memory ({states}) from turn "
            "to turn**, and watch what that memory holds. ")

# The memory test and its verdict; the badge and the fresh-memory reply under each reply
# (ui.render.fresh_reply_html); touch-sized turn buttons; the sampling sliders' number boxes;
# the phone's chat height and title; then the memory views' own style (coloured text, heatmap),
# followed by what the page changes in it: words kept whole, text of 11 pixels or more, the
# value of a tapped cell (TAP_JS).
CSS = """
#memory-test-row { align-items: center; }
#memory-test { min-height: 48px; font-size: 1.05em; }
.reply-judged { font-size: 0.85em; white-space: nowrap; }
.reply-judged.right { color: #1b7f3b; }
.reply-judged.wrong { color: #b3261e; }
/* The timeline is inline SVG, scaled to the column. */
#timeline svg { width: 100%; height: auto; display: block; }
.verdict-note { opacity: .85; }
.verdict { border: 1px solid #d0d7de; border-radius: .5em; padding: .45em .7em; line-height: 1.45; }
.verdict-told { font-size: .9em; opacity: .85; }
.verdict-row { margin-top: .15em; } .verdict-who { display: inline-block; min-width: 9.5em; opacity: .8; }
.verdict-answer { font-size: 1.1em; } .verdict-mark { font-weight: bold; white-space: nowrap; }
.verdict-row.right .verdict-mark { color: #1f7a4d; } .verdict-row.wrong .verdict-mark { color: #b42318; }
.verdict-why { font-size: .85em; opacity: .75; margin-top: .2em; }
.memory-note { margin-top: .35em; font-size: .85em; opacity: .9; }
.memory-badge { display: inline-block; padding: 0 .5em; margin-right: .4em; border: 1px solid; border-radius: .7em;
                font-size: .85em; line-height: 1.5; }
.memory-badge.on { color: #1f7a4d; } .memory-badge.off { color: #9a6700; } .memory-badge.fresh { color: #2456a6; }
.carried-inline { font-weight: 600; } .fresh-inline { font-weight: 600; color: #555; background: #f4e3e1; padding: 0 .2em; }
.reply-sure { font-size: .8em; color: #666; }
.fresh-reply { display: inline; } .fresh-reply summary { display: inline; cursor: pointer; text-decoration: underline dotted; }
.fresh-text { margin-top: .25em; padding-left: .6em; border-left: 3px solid #999; color: #777; white-space: pre-wrap; }
.fresh-text .fork { color: #c0392b; font-weight: bold; } .fresh-text .differs { color: #555; background: #f4e3e1; }
#turn-buttons button { min-height: 40px; }
#sampling input[type=number] { min-width: 5.5ch; }
#tap-value { position: fixed; z-index: 1000; display: none; max-width: 90vw; padding: .3em .6em; border-radius: .4em;
             background: #222; color: #fff; font: 13px/1.4 ui-monospace, Menlo, Consolas, monospace; pointer-events: none; }
@media (max-width: 700px) {
  #chatbot { height: 280px !important; }  /* a phone reaches the memory panel sooner */
  #intro h1 { font-size: 1.6em; margin-bottom: .2em; }
  #memory-test-row { flex-direction: column; align-items: stretch; }
  #memory-test-row > * { width: 100%; min-width: 0 !important; }
  .verdict-who { min-width: 0; margin-right: .2em; }
}
""" + views.VIEWS_CSS + """
.ct-text { word-break: normal; overflow-wrap: normal; overflow-x: auto; }
.ct-who, .ct-legend, .hm table, .hm th { font-size: 11px !important; }
.hm th, .hm td, .hm table { line-height: 12px !important; }
"""

# A tap (or click) on a value of the memory views (a heatmap cell, a coloured character) shows its
# title, the value a mouse sees on hover, in a caption by the finger: a phone has no hover.
TAP_JS = """
if (!window.__tapValues) {
  window.__tapValues = true;
  const caption = document.createElement('div');
  caption.id = 'tap-value';
  document.body.appendChild(caption);
  const hide = () => { caption.style.display = 'none'; };
  document.addEventListener('click', (event) => {
    const cell = event.target.closest && event.target.closest('#heatmap [title], #highlights [title], #benefit-text [title]');
    if (!cell) { hide(); return; }
    caption.textContent = cell.getAttribute('title');
    caption.style.display = 'block';
    const box = cell.getBoundingClientRect(), width = caption.offsetWidth, height = caption.offsetHeight;
    caption.style.left = Math.max(4, Math.min(window.innerWidth - width - 4, box.left + box.width / 2 - width / 2)) + 'px';
    caption.style.top = (box.top > height + 12 ? box.top - height - 6 : box.bottom + 6) + 'px';
  });
  window.addEventListener('scroll', hide, {passive: true});
}
"""

# The unit inspector opens at the end of the conversation, the latest turn: it scrolls to its end
# whenever it is drawn anew.
INSPECTOR_JS = """
const toEnd = () => element.querySelectorAll('.ct-text').forEach(t => { t.scrollTop = t.scrollHeight; });
toEnd();
watch('value', () => requestAnimationFrame(toEnd));
"""


def sampling_section(serving: Serving) -> list:
    """The sampling controls, in the order the chat and retry handlers take them (the memory
    toggle, beside Send, comes last)."""
    # Two controls a row: three in a row leave a slider's label on three lines and its number box
    # too narrow for the maximum.
    with gr.Accordion("Sampling", open=False, elem_id="sampling"):
        with gr.Row():
            temperature = gr.Slider(*RANGES["temperature"], value=DEFAULTS["temperature"], step=0.05, label="Temperature",
                                    min_width=220)
            # One range for every model (a model picked later may have another vocabulary): a top-k at or
            # above the vocabulary's size keeps every character, as 0 does.
            top_k = gr.Slider(0, max(TOP_K_MAX, serving.model.vocab_size), value=DEFAULTS["top_k"], step=1,
                              label="Top-k (0 = off)", min_width=220)
        with gr.Row():
            top_p = gr.Slider(*RANGES["top_p"], value=DEFAULTS["top_p"], step=0.05, label="Top-p (1 = off)",
                              min_width=220)
            max_chars = gr.Slider(*RANGES["max_chars"], value=DEFAULTS["max_chars"], step=1, label="Max characters",
                                  min_width=220)
        with gr.Row():
            seed = gr.Number(value=DEFAULTS["seed"], precision=0, label="Seed (-1 = random)", min_width=160)
            stop = gr.Textbox(value=escape(serving.model.stop_sequence), label="Stop sequence (\\n = newline)",
                              min_width=160)
    return [temperature, top_k, top_p, max_chars, seed, stop]


def model_section(app: ChatApp) -> SimpleNamespace:
    ui = SimpleNamespace()
    custom = app.options.custom_models
    with gr.Accordion("Model", open=False):
        with gr.Row():
            # It shows the model served. A typed name comes through too (allow_custom_value), so that
            # a name that is not offered gets a sentence, not the model that was shown before it.
            ui.picked = gr.Dropdown(app.choices(), value=app.default_name, allow_custom_value=True, label="Model served",
                                    elem_id="model-picked")
            ui.typed = gr.Textbox(label="…or a Hub repo id (user/name[@revision]) or a local folder (./path)",
                                  visible=custom, elem_id="model-typed")
            ui.load = gr.Button("Load model", elem_id="load-model")
        if not custom:
            gr.Markdown("Only these models are served here: this public app does not load other Hub repos or local "
                        "folders. Run it on your own machine to load your own.", elem_id="custom-models-off")
        ui.status = gr.Markdown(serving_line(app.default_name, app.default) + ".", elem_id="model-status")
    return ui


def memory_section() -> SimpleNamespace:
    ui = SimpleNamespace()
    gr.Markdown("## What the memory holds")
    # Their titles are in the figures: no Gradio label over the legend.
    ui.timeline = gr.HTML(timeline_svg(readable(views.timeline_figure({"turns": []}))), padding=False, js_on_load=None,
                          elem_id="timeline")
    ui.status = gr.Markdown("", elem_id="panel-status")
    ui.benefit_sentence = gr.Markdown("", elem_id="benefit-sentence")
    ui.benefit = gr.HTML("", js_on_load=None, elem_id="benefit-text")
    ui.quantity = gr.Radio(list(HEATMAP_CHOICES["lstm"]), value="cell", label="Heatmap of the last turn")
    ui.heatmap = gr.HTML(views.heatmap_html(None), js_on_load=None, elem_id="heatmap")
    with gr.Row():
        ui.unit = gr.Number(value=0, precision=0, label="Unit")  # clamped by the handlers, not by Gradio
        ui.layer = gr.Radio(["1", "2"], value="2", label="Layer")
        ui.pattern = gr.Dropdown(list(PATTERNS), value=DEFAULT_PATTERN, label="Pattern")
        ui.find = gr.Button("Find units")
    ui.found = gr.Markdown("")
    ui.found_pick = gr.Radio([], label="Found units: click one to show it", visible=False, elem_id="found-units")
    ui.highlights = gr.HTML("", js_on_load=INSPECTOR_JS, elem_id="highlights")  # the unit's cell state over the conversation
    with gr.Accordion("How to read this", open=False):
        ui.explanation = gr.Markdown(views.EXPLANATION)
    with gr.Accordion("Memory report (JSON, also at the /memory endpoint)", open=False):
        ui.report = gr.JSON()
    return ui


# -- wiring ---------------------------------------------------------------------------------------


def note(text: str) -> str:
    """A line in the memory test's verdict slot (the test's progress, or why it could not run)."""
    return f'<div class="verdict-note">{html.escape(text, quote=False)}</div>'


def cleared_units(page) -> dict:
    """The found units emptied: they were found on a conversation (or a model) that is gone."""
    return {page.memory.found: "", page.memory.found_pick: gr.update(choices=[], value=None, visible=False)}


def model_view(app: ChatApp, page, st, status: str) -> dict:
    """Everything on the page that follows the session's model, after a switch: the picker showing
    it, its guide, its stop sequence, an empty conversation and no found units."""
    guide = st.guide
    return {page.model.status: status, page.model.picked: gr.update(value=st.source), page.model.typed: "",
            page.stop: gr.update(value=escape(st.serving.model.stop_sequence)), page.intro: header(st.serving.model) + guide.intro,
            page.chat.message: gr.update(placeholder=placeholder(guide)),
            page.chat.examples: gr.Dataset(samples=samples(guide), visible=bool(guide.examples)),
            page.chat.details: guide.details, page.chat.details_box: gr.update(visible=bool(guide.details)),
            page.test.test: gr.update(visible=has_test(app, guide)), page.test.verdict: test_caption(guide),
            page.chat.chatbot: [], **cleared_units(page)}


def model_outputs(page) -> list:
    return [page.model.status, page.model.picked, page.model.typed, page.stop, page.intro, page.chat.message,
            page.chat.examples, page.chat.details, page.chat.details_box, page.test.test, page.test.verdict,
            page.chat.chatbot, page.memory.found, page.memory.found_pick]


def wire_chat(app: ChatApp, page, panel) -> None:
    """The chat buttons: each runs the action's handler and shows the session's transcript."""
    chat, controls = page.chat, page.controls

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
                    yield history_of(st.session, text, judge=st.guide.judges), "", notice
        except gr.Error as err:  # busy, a bad setting, a failed reply: the message goes back in the box
            yield history_of(st.session, judge=st.guide.judges), message, f"⚠️ {err.message}"
            return
        yield history_of(st.session, judge=st.guide.judges), "", gr.skip()

    async def page_retry(temperature, top_k, top_p, max_chars, seed, stop, memory, request: gr.Request):
        st = app.state(request)
        values = temperature, top_k, top_p, max_chars, seed, stop, memory
        try:
            async with contextlib.aclosing(app.retry(*values, request=request)) as texts:
                async for text in texts:
                    yield history_of(st.session, text, judge=st.guide.judges), gr.skip()
        except gr.Error as err:
            yield history_of(st.session, judge=st.guide.judges), f"⚠️ {err.message}"
            return
        yield (history_of(st.session, judge=st.guide.judges),
               "Resampled the last reply from the memory after your message.")

    async def page_test(temperature, top_k, top_p, max_chars, seed, stop, memory, request: gr.Request):
        """The memory test (the served model's, else TEST_MODEL's, switched to first): its messages
        sent one by one, then what the carried memory and a fresh one answered, in the verdict slot."""
        verdict = page.test.verdict
        st = app.state(request)
        if not st.guide.test:
            yield {verdict: note("Loading the bAbI memory model…")}
            try:
                status, _ = await anyio.to_thread.run_sync(lambda: app.switch_model(TEST_MODEL, request))
            except gr.Error as err:
                yield {verdict: note(f"⚠️ {err.message}")}
                return
            st = app.state(request)
            stop = escape(st.serving.model.stop_sequence)  # the box still held the previous model's
            yield model_view(app, page, st, status)
        guide = st.guide
        if not guide.test:
            yield {verdict: note("This model has no memory test; chat with it instead.")}
            return
        values = temperature, top_k, top_p, max_chars, seed, stop, memory
        facts = len(guide.test) - 1
        try:
            for i, message in enumerate(guide.test):
                step = f"Telling it fact {i + 1} of {facts}: {message}" if i < facts else f"Asking: {message}"
                yield {chat.chatbot: history_of(st.session, judge=st.guide.judges), verdict: note(step)}
                async with contextlib.aclosing(app.chat(message, *values, request=request)) as texts:
                    async for text in texts:
                        yield {chat.chatbot: history_of(st.session, text, judge=st.guide.judges)}
        except gr.Error as err:
            yield {chat.chatbot: history_of(st.session, judge=st.guide.judges), verdict: note(f"⚠️ {err.message}")}
            return
        turn = st.session.turns[-1]
        if not turn.memory:
            shown = note("Memory is off, so it answered from a fresh memory: tick Memory on and run the test again.")
        else:
            def fresh_reply():  # the test needs it even where FRESH_REPLIES=0 leaves it out of every reply
                with st.lock:
                    return st.session.fresh_reply(-1)
            fresh = await anyio.to_thread.run_sync(fresh_reply)
            shown = verdict_html(guide, turn.reply, fresh or "", turn.measures.get("reply_probability"))
        yield {chat.chatbot: history_of(st.session, judge=st.guide.judges), verdict: shown}

    def page_undo(request: gr.Request):
        status = app.undo(request=request)
        st = app.state(request)
        return history_of(st.session, judge=st.guide.judges), status

    def page_reset(request: gr.Request):
        status = app.reset(request=request)
        st = app.state(request)
        return {chat.chatbot: history_of(st.session, judge=st.guide.judges), chat.notice: status, page.test.verdict: test_caption(st.guide),
                **cleared_units(page)}

    for trigger in (chat.send.click, chat.message.submit):
        trigger(page_send, [chat.message, *controls], [chat.chatbot, chat.message, chat.notice],
                api_visibility="private").then(**panel)
    page.test.test.click(page_test, controls, [chat.notice, *model_outputs(page)],
                         api_visibility="private").then(**panel)
    # The buttons, and the chat's own icons (retry and undo under the last reply, the trash can
    # at the top): the same handlers, so clearing the chat also clears the memory.
    for trigger in (chat.retry.click, chat.chatbot.retry):
        trigger(page_retry, controls, [chat.chatbot, chat.notice], api_visibility="private").then(**panel)
    for trigger in (chat.undo.click, chat.chatbot.undo):
        trigger(page_undo, None, [chat.chatbot, chat.notice], api_visibility="private").then(**panel)
    for trigger in (chat.reset.click, chat.chatbot.clear):
        trigger(page_reset, None, [chat.chatbot, chat.notice, page.test.verdict, page.memory.found,
                                   page.memory.found_pick], api_visibility="private").then(**panel)


TOP_K_MAX = 100

PANEL_QUEUE = dict(concurrency_limit=1, concurrency_id="panel")  # one panel drawn at a time


def wire_panel(app: ChatApp, memory) -> dict:
    """The memory panel's own controls; returns the panel refresh that other events chain."""

    def refresh(quantity, unit, layer, request: gr.Request):
        parts = panel_figures(app.state(request), quantity, unit, layer)
        if isinstance(parts["timeline"], Figure):
            parts["timeline"] = timeline_svg(parts["timeline"])
        return [parts[name] for name in PANEL_PARTS]

    def find(pattern, layer, request: gr.Request):
        return found_units(app.state(request), pattern, layer)

    def inspect_unit(unit, layer, request: gr.Request):
        return inspected_unit(app.state(request), unit, layer)

    def pick_found(unit, layer, request: gr.Request):
        """A found unit clicked: that unit, never another one clamped from a list found on another model."""
        st = app.state(request)
        number = int(unit) if str(unit or "").isdigit() else -1
        if not 0 <= number < st.serving.model.hidden_size:
            return (gr.skip(), gr.skip(), "Those units were found on another model: press Find units again.",
                    gr.update(choices=[], value=None, visible=False))
        return *inspected_unit(st, number, layer), gr.skip(), gr.skip()

    panel = dict(fn=refresh, inputs=[memory.quantity, memory.unit, memory.layer],
                 outputs=[getattr(memory, name) for name in PANEL_PARTS], api_visibility="private", **PANEL_QUEUE)
    memory.quantity.change(**panel)
    memory.layer.change(**panel)
    # Units found on one layer are not the same units on another: the list goes when the visitor changes layer.
    memory.layer.input(lambda: ("", gr.update(choices=[], value=None, visible=False)), None,
                       [memory.found, memory.found_pick], api_visibility="private", queue=False)
    for trigger in (memory.unit.submit, memory.unit.input):  # Enter, typing or the arrows (not the handlers' own updates)
        trigger(inspect_unit, [memory.unit, memory.layer], [memory.highlights, memory.unit], api_visibility="private",
                **PANEL_QUEUE)
    memory.find.click(find, [memory.pattern, memory.layer], [memory.unit, memory.found, memory.highlights,
                                                             memory.found_pick],
                      api_visibility="private", **PANEL_QUEUE)
    memory.found_pick.input(pick_found, [memory.found_pick, memory.layer],
                            [memory.highlights, memory.unit, memory.found, memory.found_pick],
                            api_visibility="private", **PANEL_QUEUE)
    return panel


def wire_model(app: ChatApp, page, panel) -> None:
    model = page.model

    def load(picked, typed, request: gr.Request, progress=gr.Progress()):
        # The text box and the list clear each other when the visitor uses one (below), so the one
        # holding a value is the one used last.
        wanted = (typed or "").strip() or (picked or "").strip()
        st = app.state(request)
        if wanted and wanted != st.source:
            progress(0.2, desc=f"Loading {wanted}…")
        try:
            status, switched = app.switch_model(wanted, request=request)
        except gr.Error as err:  # not loaded: the conversation goes on
            return {model.status: f"❌ {err.message}"}
        st = app.state(request)
        if not switched:
            return {model.status: status, model.picked: gr.update(value=st.source), model.typed: ""}
        return model_view(app, page, st, status)

    # In the browser, at once: whichever the visitor touches last is the one Load uses.
    model.picked.input(None, None, model.typed, js="() => ''")
    model.typed.input(None, None, model.picked, js="() => ''")
    model.load.click(load, [model.picked, model.typed], model_outputs(page), api_visibility="private").then(**panel)


def build_app(source: str | None = None, options: Options | None = None) -> gr.Blocks:
    """The Gradio app serving `source` (default: the bundled model), as `options` say."""
    options = options or Options()
    options.model = source if source is not None else options.model
    use_lazy_session_state()  # a new session no longer copies every component's config up front
    app = ChatApp(options)
    guide = guide_for(app.default_name, app.default.model)
    with gr.Blocks(title="LSTM Memory Chat", delete_cache=(3600, SESSION_TTL_S)) as demo:
        gr.HTML(f"<style>{CSS}</style>", padding=False, js_on_load=TAP_JS, elem_id="styles")
        intro = gr.Markdown(header(app.default.model) + guide.intro, elem_id="intro")
        test = test_section(app, guide)  # first, so that its verdict is on the first screen
        with gr.Row():
            with gr.Column(scale=5):
                chat = chat_section(guide)
                controls = sampling_section(app.default) + [chat.memory]
                model = model_section(app)
            with gr.Column(scale=6):
                memory = memory_section()
        page = SimpleNamespace(intro=intro, test=test, chat=chat, model=model, memory=memory, controls=controls,
                               stop=controls[5])
        for action in (app.chat, app.retry, app.undo, app.reset, app.memory, app.model):  # first: they own these names
            gr.api(action, api_name=action.__name__)
        panel = wire_panel(app, memory)
        wire_chat(app, page, panel)
        wire_model(app, page, panel)
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
