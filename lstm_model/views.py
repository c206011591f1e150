"""The memory views: figures and coloured text computed from a ChatSession's exact traces.

Matplotlib only (the app shows the figures with gr.Plot); no gradio import here.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .gates import QUANTITIES, Trace, top_changing_units  # noqa: E402

GATE_QUANTITIES = ("forget", "input", "output")
LABELS = {
    "cell": "cell state C (long-term memory)",
    "hidden": "hidden state H (short-term memory)",
    "forget": "forget gate F (how much of C is kept)",
    "input": "input gate I (how much of C' is written)",
    "output": "output gate O (how much of C is exposed)",
    "candidate": "candidate memory C'",
}

EXPLANATION = """
**How to read the memory panel.** At every character the LSTM computes three gates from the
character and its short-term memory H: the **forget gate F** (0 = erase, 1 = keep the long-term
memory C), the **input gate I** (how much of the new candidate C' to write) and the **output gate
O** (how much of C to expose). Then `C = F ⊙ C + I ⊙ C'` and `H = O ⊙ tanh(C)`.

- **Timeline**: the size of H and C after each turn (per layer; a fresh memory is 0) and the
  *memory benefit*: how many bits per character the carried memory saved when the model read
  your message, compared with a fresh memory. That is what a reset costs.
- **Heatmap**: the units whose memory changed most during the last turn, character by character; switch
  to F, I or O to see the gates that moved it. Below it, the mean forget gate per layer is a
  retention meter: near 1 the memory is held, dips mark where it is being rewritten.
- **Unit inspector**: one unit's activation coloured over the conversation (blue positive, red
  negative), as in Karpathy's and LSTMVis's pictures. "Find units" ranks units by how well they
  follow a pattern such as "inside quotes" or "position in the line".

Everything is computed with the LSTM equations on the text the model actually read, from the
model's own weights (not approximated).
"""


def _empty(message: str, size=(6.4, 3.2)):
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#666", wrap=True)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def timeline_figure(report: dict):
    """State norms per layer and the memory benefit, one point per turn."""
    turns = [t for t in report.get("turns", []) if "c_norm" in t]
    if not turns:
        return _empty("Send a message: the memory timeline starts with the first turn.")
    x = [t["turn"] + 1 for t in turns]
    layers = len(turns[0]["c_norm"])
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(6.4, 5.4), sharex=True,
                                              gridspec_kw={"height_ratios": [3, 2, 2]})
    colors = plt.cm.tab10.colors
    # |C| and |H| on their own axes: C grows without bound, each unit of H stays in [-1, 1].
    for layer in range(layers):
        top.plot(x, [t["c_norm"][layer] for t in turns], "o-", color=colors[layer % 10], label=f"layer {layer + 1}")
        middle.plot(x, [t["h_norm"][layer] for t in turns], "s--", color=colors[layer % 10], label=f"layer {layer + 1}")
    top.set_ylabel("|C|: long-term\n(from fresh)")
    middle.set_ylabel("|H|: short-term\n(from fresh)")
    top.legend(fontsize=7, ncol=layers, loc="upper left")
    for ax in (top, middle):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    top.set_title("Memory after each turn" + ("" if report.get("memory", True) else " (memory off)"), fontsize=10)
    benefit = [t.get("memory_benefit_bpc") or 0.0 for t in turns]
    bottom.bar(x, benefit, color=["#2a9d8f" if b >= 0 else "#e76f51" for b in benefit])
    bottom.axhline(0, color="#444", lw=0.8)
    # A fixed, symmetric scale (+-BENEFIT_RANGE bits/char, wider only for a larger value), so
    # that a small benefit looks small and help and harm compare at a glance.
    limit = max(BENEFIT_RANGE, 1.1 * max(abs(b) for b in benefit))
    bottom.set_ylim(-limit, limit)
    bottom.set_ylabel("memory benefit\n(bits/char)")
    bottom.set_xlabel("turn")
    bottom.grid(alpha=0.3, axis="y")
    bottom.set_xticks(x)
    fig.tight_layout()
    return fig


def _char_label(ch: str) -> str:
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(ch, ch)


BENEFIT_RANGE = 2.0  # bits/char shown either side of 0 in the memory-benefit chart, at least
HEATMAP_CHARS = 400  # a longer turn shows its last characters (the page scrolls the figure sideways)
HEATMAP_INCHES_PER_CHAR = 0.12  # wide enough for a readable label under every character


def heatmap_figure(tr: Trace | None, quantity: str = "cell", layer: int = -1, units: int = 20, message_chars: int = 0):
    """A (units x characters) heatmap of the last turn, plus the forget gate as a retention meter.
    Its width follows the turn's length (every character labelled); the first `message_chars`
    characters (the message and separator) are shaded as the visitor's."""
    if tr is None or len(tr.text) == 0:
        return _empty("The heatmap shows the last turn, character by character.")
    cut = max(0, len(tr.text) - HEATMAP_CHARS)
    tr = tr.tail(HEATMAP_CHARS)
    message_chars = max(0, message_chars - cut)
    if quantity not in QUANTITIES:
        quantity = "cell"
    chosen = top_changing_units(tr, layer=layer, k=units)
    values = tr.get(quantity)[layer][:, chosen].T.float().cpu()  # (units, chars)
    n = len(tr.text)
    fig, (ax, meter) = plt.subplots(2, 1, figsize=(max(9.0, 1.6 + HEATMAP_INCHES_PER_CHAR * n), 5.2), sharex=True,
                                    gridspec_kw={"height_ratios": [4, 1]})
    width = fig.get_figwidth()  # margins in inches, whatever the width: room for the unit labels and the colour bar
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.25 / width)
    if quantity in GATE_QUANTITIES:
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        scale_note = ""
    else:  # each unit scaled by its own largest magnitude, so that its changes show
        scale = values.abs().max(dim=1, keepdim=True).values.clamp_min(1e-6)
        values = values / scale
        image = ax.imshow(values, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
        scale_note = " (each row / its max |value|)"
    layer_name = tr.cell.shape[0] if layer == -1 else layer + 1
    ax.set_title(f"{LABELS[quantity]}{scale_note}, layer {layer_name}: the {len(chosen)} units whose memory "
                 "changed most", fontsize=9)
    ax.set_yticks(range(len(chosen)))
    ax.set_yticklabels([str(u) for u in chosen], fontsize=6)
    ax.set_ylabel("unit")
    fig.colorbar(image, ax=[ax, meter], fraction=0.6 / fig.get_figwidth(), pad=0.1 / fig.get_figwidth())
    forget = tr.forget.float().cpu().mean(dim=2)  # (layers, chars)
    for i in range(forget.shape[0]):
        meter.plot(range(n), forget[i], lw=1, label=f"layer {i + 1}")
    if message_chars:  # who wrote what: the visitor's message and separator, then the model's reply
        meter.axvspan(-0.5, message_chars - 0.5, color="#e3a008", alpha=0.18, lw=0)
        meter.text(0, 1.02, "you", fontsize=7, color="#9a6700", va="bottom")
        if message_chars < n:
            meter.text(message_chars, 1.02, "model", fontsize=7, color="#4b5563", va="bottom")
    meter.set_ylim(0, 1)
    meter.set_ylabel("mean F", fontsize=8)
    meter.legend(fontsize=6, loc="lower left", ncol=forget.shape[0])
    meter.set_xticks(range(n))
    meter.set_xticklabels([_char_label(ch) for ch in tr.text], fontsize=8, family="monospace")
    meter.set_xlabel("characters of the last turn (your message and the separator shaded, then the reply)"
                     + (f", its last {n}" if cut else ""), fontsize=8)
    return fig


def _colour(value: float) -> str:
    """A diverging background for a value in [-1, 1]: blue for positive, red for negative."""
    v = max(-1.0, min(1.0, value))
    rgb = "33,102,172" if v >= 0 else "178,24,43"
    return f"rgba({rgb},{abs(v):.2f})"


def coloured_text_html(segments: list[tuple[str, list[tuple[str, float]]]], scale: float, unit: str,
                       title: str = "") -> str:
    """Text coloured character by character, as Karpathy's and LSTMVis's pictures are: dense
    monospaced text, line breaks kept (shown as ↵), each segment marked with who wrote it
    ("you", "model"), and a legend of the colour scale (-scale .. +scale, in `unit`).
    `segments`: (who, [(character, value)]) in order."""
    import html

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


def unit_html(tr: Trace | None, roles: list[str], unit: int, layer: int = -1, quantity: str = "cell") -> str:
    """One unit's activation over the recent conversation, coloured character by character (each
    turn's message and reply marked), scaled by its largest magnitude there."""
    if tr is None or len(tr.text) == 0:
        return ""
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


__all__ = ["EXPLANATION", "timeline_figure", "heatmap_figure", "unit_html", "coloured_text_html", "benefit_html",
           "benefit_sentence"]
