"""The memory views: figures and coloured text computed from a ChatSession's exact traces.

The timeline is a matplotlib figure (the app shows it with gr.Plot); the heatmap, the unit
inspector and the coloured turn are plain HTML with every value on hover (VIEWS_CSS is their
style). No gradio import here.
"""

from __future__ import annotations

import html

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .gates import Trace, top_changing_units  # noqa: E402

GATE_QUANTITIES = ("forget", "input", "output", "update", "reset")  # shown from 0 to 1
LABELS = {
    "cell": "cell state C (long-term memory)",
    "hidden": "hidden state H (short-term memory)",
    "forget": "forget gate F (how much of C is kept)",
    "input": "input gate I (how much of C' is written)",
    "output": "output gate O (how much of C is exposed)",
    "candidate": "candidate memory C'",
}
# Each cell's quantities in words (a GRU's or an RNN's H is all the memory it carries).
CELL_LABELS = {
    "lstm": LABELS,
    "gru": {"hidden": "hidden state H, the whole memory",
            "update": "update gate Z (how much of H is kept)",
            "reset": "reset gate R (how much of H the candidate reads)",
            "candidate": "candidate state N"},
    "rnn": {"hidden": "hidden state H, the whole memory"},
}
# The gate whose mean per layer is the heatmap's retention meter (how much memory is kept): its
# quantity, letter and name. A plain RNN has no gate: it rewrites H at every character.
RETENTION = {"lstm": ("forget", "F", "forget gate"), "gru": ("update", "Z", "update gate")}

EXPLANATION_GRU = """
**How to read the memory panel.** This model is a GRU: its whole memory is the hidden state H.
At every character it computes two gates from the character and H: the **reset gate R** (how
much of H the new candidate reads) and the **update gate Z** (1 = keep H, 0 = replace it with the
candidate N). Then `N = tanh(X W_xn + b_xn + R ⊙ (H W_hn + b_hn))` and `H = (1 - Z) ⊙ N + Z ⊙ H`.

- **Timeline**: the size of H after each turn (per layer; a fresh memory is 0) and the *memory
  benefit*: how many bits per character the carried memory saved when the model read your
  message, compared with a fresh memory. That is what a reset costs. A GRU has no separate
  long-term memory C.
- **Heatmap**: the units of H that changed most during the last turn, character by character;
  switch to Z or R to see the gates. Below it, the mean update gate per layer is a retention
  meter: near 1 the memory is held, dips mark where it is being rewritten.
- **Unit inspector**: one unit of H coloured over the conversation; "Find units" ranks units by
  how well they follow a pattern.

Everything is computed with the GRU's equations (PyTorch's nn.GRU) on the text the model actually
read, from the model's own weights (not approximated).
"""

EXPLANATION_RNN = """
**How to read the memory panel.** This model is a plain RNN: no gates, and its whole memory is the
hidden state H, rewritten at every character: `H = tanh(X W_xh + b_xh + H W_hh + b_hh)`.

- **Timeline**: the size of H after each turn (per layer; a fresh memory is 0) and the *memory
  benefit*: how many bits per character the carried memory saved when the model read your
  message, compared with a fresh memory. That is what a reset costs.
- **Heatmap**: the units of H that changed most during the last turn, character by character.
- **Unit inspector**: one unit of H coloured over the conversation; "Find units" ranks units by
  how well they follow a pattern.

Everything is computed with the RNN's equation on the text the model actually read, from the
model's own weights (not approximated).
"""

EXPLANATION = """
**How to read the memory panel.** At every character the LSTM computes three gates from the
character and its short-term memory H: the **forget gate F** (0 = erase, 1 = keep the long-term
memory C), the **input gate I** (how much of the new candidate C' to write) and the **output gate
O** (how much of C to expose). Then `C = F ⊙ C + I ⊙ C'` and `H = O ⊙ tanh(C)`.

- **Timeline**: the size of H and C after each turn (per layer; a fresh memory is 0) and the
  *memory benefit*: how many bits per character the carried memory saved when the model read
  your message, compared with a fresh memory. That is what a reset costs. (For a model trained
  on its replies only, such as the bAbI model, the benefit on its reply instead.)
- **Heatmap**: the units whose memory changed most during the last turn, character by character; switch
  to F, I or O to see the gates that moved it. Below it, the mean forget gate per layer is a
  retention meter: near 1 the memory is held, dips mark where it is being rewritten. Hover a cell
  for its value; the table scrolls sideways on long turns.
- **Unit inspector**: one unit's activation coloured over the conversation (blue positive, red
  negative), as in Karpathy's and LSTMVis's pictures. "Find units" ranks units by how well they
  follow a pattern such as "inside quotes" or "position in the line".

Everything is computed with the LSTM equations on the text the model actually read, from the
model's own weights (not approximated).
"""


def explanation(cell: str = "lstm") -> str:
    """How to read the memory panel of a model of this cell."""
    return {"gru": EXPLANATION_GRU, "rnn": EXPLANATION_RNN}.get(cell, EXPLANATION)


def _empty(message: str, size=(6.4, 3.2)):
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#666", wrap=True)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def timeline_figure(report: dict, replies_only: bool = False):
    """State norms per layer and the memory benefit, one point per turn: on the user's message, or
    with `replies_only` (a model trained to predict its replies only, whose losses on messages mean
    nothing) on the reply (`reply_benefit_bpc`; a turn without it shows no bar). A GRU or a plain
    RNN (its turns' `c_norm` None) has H alone: one chart of |H| instead of |C| and |H|."""
    turns = [t for t in report.get("turns", []) if t.get("h_norm") is not None]
    if not turns:
        return _empty("Send a message: the memory timeline starts with the first turn.")
    x = [t["turn"] + 1 for t in turns]
    layers = len(turns[0]["h_norm"])
    colors = plt.cm.tab10.colors
    if turns[0].get("c_norm") is not None:
        fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(6.4, 5.4), sharex=True,
                                                  gridspec_kw={"height_ratios": [3, 2, 2]})
        # |C| and |H| on their own axes: C grows without bound, each unit of H stays in [-1, 1].
        for layer in range(layers):
            top.plot(x, [t["c_norm"][layer] for t in turns], "o-", color=colors[layer % 10], label=f"layer {layer + 1}")
        top.set_ylabel("|C|: long-term\n(from fresh)")
        middle.set_ylabel("|H|: short-term\n(from fresh)")
        charts = (top, middle)
    else:  # H is the whole memory: no long-term/short-term pair to draw
        fig, (middle, bottom) = plt.subplots(2, 1, figsize=(6.4, 4.2), sharex=True,
                                             gridspec_kw={"height_ratios": [3, 2]})
        top, charts = middle, (middle,)
        middle.set_ylabel("|H|: the whole\nmemory (from fresh)")
    for layer in range(layers):
        middle.plot(x, [t["h_norm"][layer] for t in turns], "s--", color=colors[layer % 10], label=f"layer {layer + 1}")
    top.legend(fontsize=7, ncol=layers, loc="upper left")
    for ax in charts:
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    top.set_title("Memory after each turn" + ("" if report.get("memory", True) else " (memory off)"), fontsize=10)
    benefit = [t.get("reply_benefit_bpc" if replies_only else "memory_benefit_bpc") or 0.0 for t in turns]
    bottom.bar(x, benefit, color=["#2a9d8f" if b >= 0 else "#e76f51" for b in benefit])
    bottom.axhline(0, color="#444", lw=0.8)
    # A fixed, symmetric scale (+-BENEFIT_RANGE bits/char, wider only for a larger value), so
    # that a small benefit looks small and help and harm compare at a glance.
    limit = max(BENEFIT_RANGE, 1.1 * max(abs(b) for b in benefit))
    bottom.set_ylim(-limit, limit)
    bottom.set_ylabel("memory benefit\non the reply\n(bits/char)" if replies_only else "memory benefit\n(bits/char)")
    bottom.set_xlabel("turn")
    bottom.grid(alpha=0.3, axis="y")
    bottom.set_xticks(x)
    fig.tight_layout()
    return fig


def _char_label(ch: str) -> str:
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(ch, ch)


BENEFIT_RANGE = 2.0  # bits/char shown either side of 0 in the memory-benefit chart, at least
HEATMAP_CHARS = 400  # a longer turn shows its last characters (the page scrolls the table sideways)
HEATMAP_LEVELS = 10  # colour steps of the heatmap: each side of 0 for C and H, from 0 to 1 for the gates


def heatmap_html(tr: Trace | None, quantity: str | None = None, layer: int = -1, units: int = 20,
                 message_chars: int = 0) -> str:
    """A (units x characters) heatmap of the last turn as an HTML table, every cell's value on hover,
    plus the mean of each layer's retention gate (an LSTM's forget gate F, a GRU's update gate Z; a
    plain RNN has none) as a retention meter and every character labelled under its column; the
    first `message_chars` characters (the message and separator) shaded as the visitor's. Long
    turns show their last HEATMAP_CHARS characters; the table scrolls sideways. A quantity the
    trace's cell lacks (None, or an LSTM gate asked of a GRU) shows the cell's memory (`tr.memory`)."""
    if tr is None or len(tr.text) == 0:
        return '<div class="hm-empty">The heatmap shows the last turn, character by character.</div>'
    cut = max(0, len(tr.text) - HEATMAP_CHARS)
    tr = tr.tail(HEATMAP_CHARS)
    message_chars = max(0, message_chars - cut)
    if quantity not in tr.quantities:
        quantity = tr.memory
    words = CELL_LABELS[tr.kind]
    chosen = top_changing_units(tr, layer=layer, k=units)
    values = tr.get(quantity)[layer][:, chosen].T.float().cpu()  # (units, chars)
    gate = quantity in GATE_QUANTITIES
    if gate:  # 0..1 as they are
        shades = [[f"g{round(v * HEATMAP_LEVELS)}" for v in row] for row in values.clamp(0, 1).tolist()]
    else:  # each unit scaled by its own largest magnitude, so that its changes show
        scaled = values / values.abs().max(dim=1, keepdim=True).values.clamp_min(1e-6)
        shades = [[f"d{round(v * HEATMAP_LEVELS) + HEATMAP_LEVELS}" for v in row] for row in scaled.tolist()]
    # Kept short: a 400-character turn has 8,000 cells (no closing tags, unquoted classes).
    labels = [f"“{html.escape(_char_label(ch))}”" for ch in tr.text]
    number = ".3f" if gate else "+.3f"
    rows = []
    for unit, row, raw in zip(chosen, shades, values.tolist()):
        cells = "".join(f'<td class={c} title="unit {unit}, {lab}: {v:{number}}">' for c, lab, v in zip(row, labels, raw))
        rows.append(f"<tr><th>{unit}</th>{cells}</tr>")
    retention, letter, gate_name = RETENTION.get(tr.kind, (None, "", ""))
    if retention is not None:
        kept = tr.get(retention).float().cpu().mean(dim=2).clamp(0, 1)  # (layers, chars): how much memory is kept
        for i, meter in enumerate(kept.tolist()):
            cells = "".join(f'<td class=g{round(f * HEATMAP_LEVELS)} title="layer {i + 1}, {lab}: mean {letter} {f:.3f}">'
                            for lab, f in zip(labels, meter))
            rows.append(f'<tr class="hm-meter"><th>mean {letter}, layer {i + 1}</th>{cells}</tr>')
    n = len(tr.text)
    chars = "".join(f'<td class="{"you" if j < message_chars else "model"}" title="character {j + 1 + cut}: {lab}">'
                    f"{html.escape(_char_label(ch))}</td>" for j, (ch, lab) in enumerate(zip(tr.text, labels)))
    rows.append(f'<tr class="hm-chars"><th>{"you | model" if 0 < message_chars < n else ""}</th>{chars}</tr>')
    layer_name = tr.hidden.shape[0] if layer == -1 else layer + 1
    meter = "" if retention is None else f", then the mean {gate_name} of each layer (the retention meter)"
    title = (f"{words[quantity]}{'' if gate else ' (each row / its max |value|)'}, layer {layer_name}: the "
             f"{len(chosen)} units whose memory changed most{meter}; hover a cell for its value")
    scale = ("0", "1") if gate else ("−1", "+1")
    legend = (f'<div class="ct-legend"><span>{scale[0]}</span><span class="ct-bar{" gate" if gate else ""}"></span>'
              f'<span>{scale[1]}</span><span class="hm-key you">your message and the separator</span>'
              f'<span class="hm-key model">the reply</span>'
              + (f"<span>(the last {n} characters of {n + cut})</span>" if cut else "") + "</div>")
    return (f'<div class="hm"><div class="ct-title">{html.escape(title)}</div><div class="hm-scroll"><table>'
            f'{"".join(rows)}</table></div>{legend}</div>')


POSITIVE_RGB, NEGATIVE_RGB, GATE_RGB = "33,102,172", "178,24,43", "1,108,89"  # blue, red; green for gates in [0, 1]


def _colour(value: float) -> str:
    """A diverging background for a value in [-1, 1]: blue for positive, red for negative."""
    v = max(-1.0, min(1.0, value))
    return f"rgba({POSITIVE_RGB if v >= 0 else NEGATIVE_RGB},{abs(v):.2f})"


def coloured_text_html(segments: list[tuple[str, list[tuple[str, float]]]], scale: float, unit: str,
                       title: str = "") -> str:
    """Text coloured character by character, as Karpathy's and LSTMVis's pictures are: dense
    monospaced text, line breaks kept (shown as ↵), each segment marked with who wrote it
    ("you", "model"), and a legend of the colour scale (-scale .. +scale, in `unit`).
    `segments`: (who, [(character, value)]) in order."""
    parts = []
    for who, pairs in segments:
        chars = []
        for ch, value in pairs:
            shown = "↵\n" if ch == "\n" else ("→" if ch == "\t" else ch)
            tip = f"{ch!r}: {value:+.2f} {unit}"
            chars.append(f'<span style="background:{_colour(value / scale)}" title="{html.escape(tip)}">'
                         f"{html.escape(shown)}</span>")
        label = "you" if who == "user" else "model"
        parts.append(f'<span class="ct-seg ct-{label}"><span class="ct-who">{label}</span>{"".join(chars)}</span>')
    legend = (f'<div class="ct-legend"><span>{-scale:+.3g} {unit}</span><span class="ct-bar"></span>'
              f"<span>{scale:+.3g} {unit}</span></div>")
    head = f'<div class="ct-title">{html.escape(title)}</div>' if title else ""
    return f'<div class="ct">{head}<div class="ct-text">{"".join(parts)}</div>{legend}</div>'


def unit_html(tr: Trace | None, roles: list[str], unit: int, layer: int = -1, quantity: str | None = None) -> str:
    """One unit's activation over the recent conversation, coloured character by character (each
    turn's message and reply marked), scaled by its largest magnitude there. `quantity`: one of the
    trace's (by default, or for one its cell lacks, its memory: an LSTM's C, a GRU's or RNN's H)."""
    if tr is None or len(tr.text) == 0:
        return ""
    if quantity not in tr.quantities:
        quantity = tr.memory
    values = tr.get(quantity)[layer][:, unit].float().cpu()
    scale = float(values.abs().max()) or 1.0
    segments: list[tuple[str, list[tuple[str, float]]]] = []
    for ch, value, role in zip(tr.text, values.tolist(), roles or ["model"] * len(tr.text)):
        if not segments or segments[-1][0] != role:
            segments.append((role, []))
        segments[-1][1].append((ch, value))
    return coloured_text_html(segments, scale, "", f"Unit {unit} of layer {layer + 1 if layer >= 0 else 'last'}: its "
                              f"{quantity} state over the conversation (blue positive, red negative; "
                              f"strongest here {scale:.2f}); hover for each value")


BENEFIT_CHAR_RANGE = 4.0  # bits: the colour scale of the per-character memory benefit


def _reply_words(written: list[tuple[str, float]]) -> str:
    w = sum(v for _, v in written) / len(written)
    return (f"on the model's reply it {'saved' if w >= 0 else 'cost'} {abs(w):.2f} bits/char ("
            + ("the memory shaped the reply strongly" if abs(w) >= 0.5 else "it shaped the reply a little"
               if abs(w) >= 0.1 else "the reply would have been about as likely from a fresh memory") + ")")


def benefit_sentence(benefits: dict | None, memory: bool = True, replies_only: bool = False) -> str:
    """One sentence on where the carried memory helped and hurt most in a turn (char_benefits).
    `replies_only`: the model was trained to predict its replies only, so only the reply counts."""
    if not memory:
        return "This turn started from a fresh memory (memory off): there is nothing to compare."
    if not benefits or not benefits["read"]:
        return ""
    read = benefits["read"]
    if all(abs(v) < 1e-9 for _, v in read):
        return "This turn started from a fresh memory (the first turn, or after Reset): nothing to compare yet."
    if replies_only:
        reply = _reply_words(benefits["written"]) if benefits["written"] else "there is no reply to score"
        return ("This model was trained to predict its replies only, so its losses on your messages mean nothing; "
                f"against a fresh memory, {reply}.")
    text = "".join(ch for ch, _ in read)

    def where(i: int) -> str:
        before = text[max(0, i - 12):i].replace("\n", "↵")
        ch = text[i].replace("\n", "↵")
        spot = f"“{before}[{ch}]”"
        return spot + (", the first character after the previous reply" if i == 0 else "")

    best = max(range(len(read)), key=lambda i: read[i][1])
    worst = min(range(len(read)), key=lambda i: read[i][1])
    mean = sum(v for _, v in read) / len(read)
    words = [f"On your message the carried memory {'saved' if mean >= 0 else 'cost'} {abs(mean):.2f} bits/char "
             "against a fresh one"]
    if read[best][1] > 0.05:
        words.append(f"it helped most at {where(best)} ({read[best][1]:.1f} bits saved)")
    if read[worst][1] < -0.05:
        words.append(f"it misled most at {where(worst)} ({-read[worst][1]:.1f} bits lost)")
    if benefits["written"]:
        words.append(_reply_words(benefits["written"]))
    return "; ".join(words) + "."


def benefit_html(benefits: dict | None, replies_only: bool = False) -> str:
    """The last turn coloured by the bits the carried memory saved (blue) or cost (red) per
    character (with `replies_only`, the message is shown uncoloured)."""
    if not benefits:
        return ""
    read = [(ch, 0.0) for ch, _ in benefits["read"]] if replies_only else benefits["read"]
    return coloured_text_html([("user", read), ("model", benefits["written"])], BENEFIT_CHAR_RANGE,
                              "bits", "The last turn, each character coloured by the bits the carried memory saved "
                              "(blue) or cost (red) against a fresh memory; hover for the figure")


def _views_css() -> str:
    """The style of the HTML views (coloured text, heatmap), with the heatmap's colour steps; the
    page includes it once (ui/layout.py)."""
    steps = [f".hm td.d{i + HEATMAP_LEVELS} {{ background: {_colour(i / HEATMAP_LEVELS)}; }}"
             for i in range(-HEATMAP_LEVELS, HEATMAP_LEVELS + 1)]
    steps += [f".hm td.g{i} {{ background: rgba({GATE_RGB},{i / HEATMAP_LEVELS:.2f}); }}" for i in range(HEATMAP_LEVELS + 1)]
    return "\n".join(steps) + f"""
.ct-title {{ font-size: .85em; margin-bottom: .3em; opacity: .85; }}
.ct-text {{ font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; line-height: 1.45;
           white-space: pre-wrap; word-break: break-all; max-height: 16em; overflow-y: auto; }}
.ct-seg {{ border-bottom: 2px solid; }} .ct-you {{ border-color: #e3a008; }} .ct-model {{ border-color: #6b7280; }}
.ct-who {{ font-family: sans-serif; font-size: 10px; padding: 0 .3em; margin-right: .2em; border-radius: .3em;
          color: #fff; background: #6b7280; }} .ct-you .ct-who {{ background: #c27c0e; }}
.ct-legend {{ display: flex; flex-wrap: wrap; align-items: center; gap: .5em; font-size: .75em; margin-top: .3em; }}
.ct-bar {{ width: 9em; height: .7em; border-radius: .2em;
          background: linear-gradient(90deg, rgb({NEGATIVE_RGB}), #fff, rgb({POSITIVE_RGB})); }}
.ct-bar.gate {{ background: linear-gradient(90deg, #fff, rgb({GATE_RGB})); }}
.hm-scroll {{ overflow-x: auto; max-width: 100%; }}
.hm table {{ border-collapse: collapse !important; border: 0 !important; width: auto !important; margin: 0 !important;
            font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 10px; line-height: 11px; table-layout: fixed; }}
.hm tr {{ border: 0 !important; background: none !important; }}
.hm td {{ width: 11px !important; min-width: 11px !important; max-width: 11px !important; height: 11px !important;
         padding: 0 !important; border: 0 !important; }}
.hm td:hover {{ outline: 1px solid #111; }}
.hm th {{ position: sticky; left: 0; z-index: 1; background: var(--block-background-fill, #fff) !important;
         font-weight: normal; text-align: right; padding: 0 4px 0 0 !important; border: 0 !important; white-space: nowrap;
         font-size: 10px; line-height: 11px; }}
.hm tr.hm-meter th {{ color: #1f6f5f; }}
.hm tr:not(.hm-meter) + tr.hm-meter td, .hm tr:not(.hm-meter) + tr.hm-meter th {{
    border-top: 3px solid transparent !important; }}  /* a gap before the first meter row */
.hm tr.hm-chars td {{ height: 16px !important; text-align: center; vertical-align: middle; line-height: 16px; }}
.hm tr.hm-chars td.you, .hm-key.you {{ background: rgba(227,160,8,.28); }}
.hm tr.hm-chars td.model, .hm-key.model {{ background: rgba(107,114,128,.12); }}
.hm-key {{ padding: 0 .4em; border-radius: .2em; }}
"""


VIEWS_CSS = _views_css()


__all__ = ["EXPLANATION", "VIEWS_CSS", "explanation", "timeline_figure", "heatmap_html", "unit_html", "coloured_text_html",
           "benefit_html", "benefit_sentence"]
