"""The memory panel for one session: its figures after the latest turn (timeline, heatmap, unit
inspector, report, memory benefit), the parts that follow the served model's cell, and the
units that follow a pattern."""

from __future__ import annotations

from typing import Protocol

import gradio as gr

from lstm_model import views
from lstm_model.gates import DEFAULT_PATTERN, units_following
from lstm_model.serving import Serving
from lstm_model.session import ChatSession

RECENT_CHARS = 1500  # characters of the conversation shown in the unit inspector


class PanelSession(Protocol):
    """What the panel reads and sets of a session (ui.actions.ChatState)."""

    serving: Serving
    session: ChatSession
    changes: int
    unit_chosen: bool

    @property
    def guide(self): ...


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


def heatmap_quantity(model, quantity: str) -> str:
    """The heatmap's quantity for this model: the one asked for where its cell has it, else its first."""
    choices = HEATMAP_CHOICES.get(model.cell, HEATMAP_CHOICES["lstm"])
    return quantity if quantity in choices else choices[0]


def cell_parts(model, quantity: str) -> dict:
    """The panel parts that follow the served model's cell: the heatmap's choices (`quantity`
    already one of them) and the guide."""
    choices = HEATMAP_CHOICES.get(model.cell, HEATMAP_CHOICES["lstm"])
    return {"quantity": gr.update(choices=list(choices), value=quantity),
            "explanation": views.explanation(model.cell)}


def panel_figures(st: PanelSession, quantity: str, unit, layer) -> dict:
    """The panel's figures after the latest turn (or empty ones before the first), by part name
    (PANEL_PARTS)."""
    changes, session, model = st.changes, st.session, st.serving.model
    quantity = heatmap_quantity(model, quantity)
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
FIGURE_WIDTH_IN = 4.0
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


def timeline_svg(fig) -> str:
    """A timeline figure (made `readable`) as inline SVG for the page (the figure is closed). Inline, the new
    drawing replaces the old in one step: no picture to decode, so the panel never shows a gap
    between two timelines, as an image component rebuilding its picture did."""
    import io

    import matplotlib.pyplot as plt

    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    svg = out.getvalue()
    return '<div class="timeline-svg" role="img" aria-label="Memory timeline">' + svg[svg.index("<svg"):] + "</div>"


def layer_of(layer, model) -> int:
    """The Layer control's value (1-based) as an index into the model's layers."""
    return min(int(layer) - 1, model.num_layers - 1)


def unit_view(st: PanelSession, recent, unit: int, layer_index: int) -> str:
    """The unit inspector: `unit`'s activation over the recent conversation (`recent`, its trace)."""
    return views.unit_html(recent, st.session.recent_roles(RECENT_CHARS), unit, layer_index)


def inspected_unit(st: PanelSession, unit, layer) -> tuple:
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


def found_units(st: PanelSession, pattern_name: str, layer) -> tuple:
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
