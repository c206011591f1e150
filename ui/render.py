"""The chat as the page shows it: the transcript as Chatbot messages (HTML, escaped), with what the
memory changed under each reply, and the memory test's verdict."""

from __future__ import annotations

import html

from lstm_model.babi_qa import right_answers
from lstm_model.session import ChatSession, is_fresh


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


def judged_html(reply: str, right: str | None) -> str:
    """Beside an answer whose right answer the facts told give: whether the reply is it."""
    if right is None:
        return ""
    if reply.strip() == right:
        return ' <span class="reply-judged right" title="what the facts told so far say">✓ right</span>'
    return (f' <span class="reply-judged wrong" title="what the facts told so far say">✗ the facts told say '
            f"“{as_text(right)}”</span>")


def history_of(session: ChatSession, streaming: str | None = None, judge: bool = False) -> list[dict]:
    """The chat transcript as Chatbot messages (the session is the source of truth); under each
    finished reply, what the memory changed (fresh_reply_html). With `judge` (a model of bAbI's
    sentence forms), each answer to a question in those forms is marked right or wrong against what
    the facts told so far say (babi_qa.right_answers), while the whole conversation is at hand."""
    messages = []
    rights = ([None] * len(session.turns) if not judge or session.dropped_turns
              else right_answers([turn.user for turn in session.turns]))
    for i, turn in enumerate(session.turns):
        messages.append({"role": "user", "content": as_text(turn.user) if turn.user.strip() else "(empty message)"})
        live = streaming is not None and i == len(session.turns) - 1
        reply = streaming if live else turn.reply
        content = as_text(reply) if reply else "…"
        if turn.closed_with and not live:  # cut by the length cap, then closed by the stop
            content += "  [cut at the length cap]"
        if turn.done and not live:
            content += sureness_html(turn) + judged_html(turn.reply, rights[i]) + fresh_reply_html(turn, started_fresh(turn))
        messages.append({"role": "assistant", "content": content})
    return messages
