"""ChatSession: the recurrent state carried across chat turns, a snapshot per turn, and the memory
measurements the app shows.

A turn (ARCHITECTURE.md, "The chat protocol"): the user's message plus the model's turn separator is
fed through the LSTM from the current state; the model then writes a reply from that state until
its stop sequence or the length cap. The state after the reply starts the next turn. With
`memory=False` every turn starts from `begin_state`.

Per turn the session measures:
- `h_norm`, `c_norm`: the L2 norm of H and C per layer after the turn. The fresh state is zero,
  so this is the distance from a fresh state. A GRU or a plain RNN has no C: its `c_norm` (and
  `c_change`) is None, and the report's `cell` says which cell the model has.
- `h_change`, `c_change`: how far this turn moved H and C (L2 norm of after - before, per layer).
- `loss_carried_bpc` / `loss_fresh_bpc`: bits per character of the user's message predicted from
  the carried state and from a fresh state, and `memory_benefit_bpc` = fresh - carried: the bits
  per character the memory saves on this message (what a reset would cost; negative when the
  carried memory misleads the model). `reply_benefit_bpc`, the same for what the model wrote (the
  reply and its stop: how much the memory shaped it), is filled in when `char_benefits` is first
  asked for the turn (the app's panel does so after each turn). `reply_probability`: for a short
  reply (an answer), the probability the model gave to writing exactly it: how sure it was. The fresh loss needs a second pass over the message, made
  once the reply is written so that it delays no reply's first character (None until then).

And per turn, on request (`fresh_reply(index)`, kept in `turn.fresh_reply` and in the report):
the reply a fresh memory writes for the same message with the same settings and seed, so that
what the memory changed in the conversation can be read beside the reply itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import threading
from dataclasses import dataclass, field

import torch

from .evaluate import LN2, text_loss
from .gates import join_traces, trace
from .text_stream import Stream, default_serving
from .sampling import Sampling, SamplingError
from .serving import Serving
from .vocab import normalize

MAX_MESSAGE_CHARS = 20_000  # longer messages are cut to this many characters, with a notice
MAX_SNAPSHOTS = 64  # turns that keep their state snapshots (undo/retry reach this far back)
MAX_TURNS = 500  # turns kept in the transcript
SURE_MAX_CHARS = 40  # replies up to this long (an answer) get how sure the model was of them


def snapshot(state) -> tuple[torch.Tensor, torch.Tensor]:
    """A detached copy of (h, c): a few KB (2 * layers * hidden floats; half that for a GRU or RNN,
    whose c has no units)."""
    return state[0].detach().clone(), state[1].detach().clone()


def is_fresh(state) -> bool:
    """Whether (h, c) is the all-zero state a conversation starts from (a c without units, a GRU's
    or RNN's, counts as zero)."""
    return not any(t.numel() and float(t.abs().max()) > 0 for t in state)


def json_int(value: int) -> int | str:
    """An int as JSON carries it everywhere (64-bit), or as text when it is larger."""
    return value if -2**63 <= value < 2**63 else str(value)


@dataclass(eq=False)  # a turn is itself: compared by identity, never by its tensors
class Turn:
    """One exchange: what the user typed, what the LSTM read and wrote, and the states around it."""

    user: str
    fed: str  # the characters actually fed: the message (within the vocabulary and the cap) + separator
    reply: str = ""
    skipped: list[str] = field(default_factory=list)
    truncated: int = 0  # characters cut from an over-long message
    state_before: tuple | None = None
    state_after_user: tuple | None = None
    state_after: tuple | None = None
    measures: dict = field(default_factory=dict)
    message_chars: int = 0  # how many characters of `fed` are the message's (the rest: the turn separator)
    read_by_step: bool = False  # the message was read by the generation step (else by one nn.LSTM call)
    attempt: int = 0
    done: bool = False
    stopped_by: str | None = None
    stop: str = ""  # the stop sequence that ended the reply (read by the LSTM, not shown)
    closed_with: str = ""  # a reply cut by the length cap: the stop sequence fed after it, so the next turn starts at a boundary
    memory: bool = True  # whether the turn started from the carried memory (else from a fresh state)
    sampling: Sampling | None = None  # the settings the reply was drawn with, its seed fixed (the fresh reply uses them)
    fresh_reply: str | None = None  # what a fresh memory writes for the same message, settings and seed (fresh_reply())
    # A reply whose reader left: the thread measuring the message from a fresh memory (the
    # measures are filled in when it ends), so that whoever closed the reply did not wait for it.
    measuring: threading.Thread | None = field(default=None, repr=False)

    def report(self, index: int) -> dict:
        return {"turn": index, "number": index + 1, "user": self.user, "reply": self.reply, "skipped": list(self.skipped),
                "truncated_chars": self.truncated, "done": self.done, "stopped_by": self.stopped_by,
                "closed_with": self.closed_with, "memory": self.memory, "fresh_reply": self.fresh_reply,
                "seed": json_int(self.sampling.seed) if self.sampling is not None else None, **self.measures}


class ChatSession:
    """A conversation with a CharLSTM (any cell) that keeps its (h, c) from turn to turn.

    `serving` (a lstm_model.serving.Serving of this model; default: fp32 steps, alone) says how
    replies are computed; with batching, this session's replies step together with other sessions'.
    `send(message)` returns an iterator of reply pieces (streaming); the turn is recorded as the
    reply is read. `undo()`, `retry()`, `reset()`, `fresh_reply()`; `state`, `turns`, `memory_report()`.
    `measure=False` skips the second pass that measures each message from a fresh memory.
    Sampling settings (max_new_chars, temperature, top_k, top_p, greedy, seed, stop) are keyword
    arguments; `stop` defaults to the model's stop sequence. With a `seed`, the whole
    conversation is reproducible.
    """

    def __init__(self, model, memory: bool = True, serving: Serving | None = None, measure: bool = True, **sampling):
        if serving is not None and serving.model is not model:
            raise ValueError("The serving was built for another model; build a Serving for this one.")
        self.model = model
        self.memory = memory
        self.measure = measure  # False: no per-turn loss measurements (batch evaluations that read only replies)
        self.serving = serving or default_serving(model)
        # Set by an asyncio reader around a reply: the reply's stream then never blocks on the
        # decoder; it yields generate.WAIT / SLOW between its pieces (see Stream's `wake`).
        self.wake = None
        sampling.setdefault("stop", model.stop_sequence or None)
        self.sampling = Sampling(**sampling)  # checked here, trusted downstream
        self.turns: list[Turn] = []
        self._state = model.begin_state(1)
        self._notices: list[str] = []
        self._dropped_turns = 0
        # The gate traces of the turns in the last trace_recent window, each (its text, its trace):
        # a refresh after a new turn traces that turn alone, so its cost does not grow with the
        # conversation. Only the window's turns are kept (cache_bytes counts them).
        self._traces: dict[int, tuple[Turn, str, object]] = {}

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (h, c) the next turn starts from (a fresh state when memory is off)."""
        return self._state if self.memory else self.model.begin_state(1)

    def notices(self) -> list[str]:
        """Messages for the person about the last turn (skipped characters, a cut message); read once."""
        out, self._notices = self._notices, []
        return out

    def update_settings(self, **sampling) -> None:
        """Change sampling settings for the next turns (checked; SamplingError if invalid)."""
        self.sampling = self.sampling.replace(**sampling)

    # -- turns --------------------------------------------------------------------------------

    def send(self, message: str, **sampling):
        """Feed `message` + the turn separator, then stream the reply (an iterator of pieces)."""
        if sampling:
            self.update_settings(**sampling)
        if not isinstance(message, str):
            raise SamplingError("The message must be text.")
        truncated = max(0, len(message) - MAX_MESSAGE_CHARS)
        if truncated:
            self._notices.append(f"Your message was {len(message):,} characters; only the first "
                                 f"{MAX_MESSAGE_CHARS:,} were read (the cap per message).")
        # read as the model was trained to read messages (its `normalize`); the transcript keeps `user`
        encoded = self.model.vocab.encode_report(normalize(message[:MAX_MESSAGE_CHARS], self.model.normalize))
        if encoded.skipped:
            shown = ", ".join(repr(c) for c in encoded.skipped[:10]) + (" ..." if len(encoded.skipped) > 10 else "")
            self._notices.append(f"The model has never seen {len(encoded.skipped)} of your characters ({shown}); "
                                 "they were skipped.")
        separator = self.model.vocab.encode_report(self.model.turn_separator)
        turn = Turn(user=message[:MAX_MESSAGE_CHARS], fed=encoded.text + separator.text, skipped=encoded.skipped,
                    truncated=truncated)
        turn.state_before = snapshot(self.state)
        turn.message_chars = len(encoded.ids)
        turn.measures = {"chars_fed": len(turn.fed), "message_chars": turn.message_chars,
                         "loss_carried_bpc": None, "loss_fresh_bpc": None, "memory_benefit_bpc": None,
                         "reply_benefit_bpc": None, "reply_probability": None}
        self.turns.append(turn)
        self._trim()
        return self._reply(turn)

    def retry(self):
        """Resample the last reply from the state after the user's message; None if there is no turn."""
        if not self.turns or self.turns[-1].state_before is None:
            return None
        turn = self.turns[-1]
        previous = dataclasses.replace(turn, measures=dict(turn.measures))  # restored if the retry fails
        turn.attempt += 1
        turn.reply, turn.done, turn.state_after, turn.fresh_reply = "", False, None, None
        self._state = turn.state_before
        return self._reply(turn, previous)

    def undo(self) -> bool:
        """Forget the last turn and restore the exact state from before it. False if nothing to undo."""
        if not self.turns or self.turns[-1].state_before is None:
            return False
        turn = self.turns.pop()
        self._state = turn.state_before
        return True

    def reset(self) -> None:
        """A fresh conversation: empty transcript and a fresh state."""
        self.turns.clear()
        self._notices.clear()
        self._traces.clear()
        self._dropped_turns = 0
        self._state = self.model.begin_state(1)

    def _reply(self, turn: Turn, previous: Turn | None = None):
        """The reply's stream: for a new turn it first reads the message and the separator (the
        message scored on the way: the carried-memory loss), for a retry it starts after them."""
        index = len(self.turns) - 1
        sampling = self.sampling
        if sampling.seed is not None:  # reproducible, yet each turn and each retry draws differently
            sampling = sampling.replace(seed=sampling.seed + 1000 * (self._dropped_turns + index) + turn.attempt)
        else:  # random, but fixed for the turn, so that its fresh-memory reply draws the same way
            sampling = sampling.replace(seed=random.randrange(2**31))
        turn.sampling, turn.memory = sampling, self.memory
        if turn.state_after_user is not None:
            return self._run(turn, Stream(self.serving, "", turn.state_after_user, sampling, wake=self.wake), previous)
        return self._run(turn, Stream(self.serving, turn.fed, turn.state_before, sampling, score=turn.message_chars,
                                      wake=self.wake), previous)

    def _run(self, turn: Turn, s: Stream, previous: Turn | None):
        """Stream the reply and record it in `turn`. If writing it fails, the turn is taken back
        (a retry restores the reply it replaced): no turn stays half-recorded."""
        emitted = []
        try:
            for piece in s:
                if not isinstance(piece, str):  # WAIT or SLOW, for a reader that set `wake`
                    yield piece
                    continue
                self._took_message(turn, s)
                emitted.append(piece)
                turn.reply = "".join(emitted)
                yield piece
            self._took_message(turn, s)
            turn.done = True
        except Exception:
            if previous is not None:
                self.turns[self.turns.index(turn)] = previous
                self._state = previous.state_after
            else:
                self.turns.remove(turn)
                self._state = turn.state_before
            raise
        else:
            self._record(turn, s)
        finally:
            # Closed early (the reader left): close the stream now, so that its row leaves the
            # decoder before the next step. Left to itself, the stream (a cycle: it holds its own
            # generator) would keep its row stepping until the garbage collector found it.
            s.close()
            if not turn.done and turn in self.turns:  # closed early: the reply so far is kept
                self._record(turn, s, "".join(emitted), wait=False)

    def _record(self, turn: Turn, s: Stream, partial: str | None = None, wait: bool = True) -> None:
        turn.reply = s.text if partial is None else partial
        turn.stopped_by = s.stopped_by or "interrupted"
        turn.stop = s.stop_text
        state = s.state
        if turn.stopped_by == "length":  # cut mid-line: close the turn as a finished reply would be
            state = self._close(turn, state)
        turn.state_after = snapshot(state)
        self._state = turn.state_after
        self._measure_after(turn)
        self._measure_sureness(turn)
        if self.measure:
            self._measure_fresh(turn, wait)

    def _close(self, turn: Turn, state):
        """Feed the stop sequence after a reply the length cap cut (the session's first stop, or
        the model's own when the session has none), so that the next message is read at a turn
        boundary, not glued on mid-line; the turn records what was fed (`closed_with`)."""
        stops = self.sampling.stop
        stop = (stops if isinstance(stops, str) else (stops[0] if stops else "")) or self.model.stop_sequence
        ids = self.model.vocab.encode(stop)
        if not ids:
            return state
        with torch.no_grad():
            _, state = self.serving.step().feed(ids, state)
        turn.closed_with = self.model.vocab.decode(ids)
        return state

    def fresh_reply(self, index: int = -1, cancelled=None) -> str | None:
        """What a fresh memory writes for turn `index`'s message with the same settings and seed:
        what `ChatSession(model, seed=<the turn's seed>, ...)` writes as its first reply. Computed
        once (after the reply, through the same serving: batched with other replies where the
        serving batches) and kept in the turn. A turn that already started from a fresh state
        (memory off, or the first turn) is its own fresh reply. `cancelled`, a function of no
        arguments asked between pieces: once it says True (nobody waits for the answer any
        more) the reply is dropped, its decoder row leaves, and None is returned."""
        turn = self.turns[index]
        if turn.fresh_reply is None:
            # (an old turn's snapshot may be gone: then it is computed)
            fresh = not turn.memory or (turn.state_before is not None and is_fresh(turn.state_before))
            if fresh and turn.done:
                turn.fresh_reply = turn.reply
            else:
                s = Stream(self.serving, turn.fed, self.model.begin_state(1), turn.sampling)
                with contextlib.closing(s):  # however reading ends, the decoder row leaves at once
                    for _ in s:
                        if cancelled is not None and cancelled():
                            return None
                turn.fresh_reply = s.text
        return turn.fresh_reply

    def char_benefits(self, index: int = -1) -> dict | None:
        """Per character of turn `index`: the bits the carried memory saved (positive) or cost
        (negative) against a fresh memory, for what was read (the message and the separator) and
        for what was written (the reply and the stop that ended it: how much the memory shaped
        it). {"read": [(char, bits)...], "written": [...]}, or None for a turn without its
        snapshots (older than the last MAX_SNAPSHOTS turns) or not finished. The written part's mean
        is kept in the turn's `reply_benefit_bpc` (None until this is first asked for a turn)."""
        turn = self.turns[index]
        if turn.state_before is None or turn.state_after_user is None or not turn.done:
            return None
        vocab = self.model.vocab
        written_text = turn.reply + (turn.stop or turn.closed_with)

        def saved(text: str, carried_state, fresh_state):
            ids = torch.tensor(vocab.encode(text), dtype=torch.long)
            if ids.numel() == 0:
                return [], fresh_state
            carried = text_loss(self.model, ids, carried_state, per_char=True)
            fresh = text_loss(self.model, ids, fresh_state, per_char=True)
            pairs = [(ch, (f - c) / LN2) for ch, c, f in zip(vocab.decode(ids.tolist()), carried.chars, fresh.chars)]
            return pairs, fresh.state

        read, fresh_after = saved(turn.fed, turn.state_before, self.model.begin_state(1))
        written, _ = saved(written_text, turn.state_after_user, fresh_after)
        if written:
            turn.measures["reply_benefit_bpc"] = sum(bits for _, bits in written) / len(written)
        return {"read": read, "written": written}

    # -- measurements -------------------------------------------------------------------------

    def _took_message(self, turn: Turn, s: Stream) -> None:
        """Once the stream has read the message: the state after it and its carried-memory loss."""
        if turn.state_after_user is None and s.read is not None:
            turn.state_after_user = snapshot(s.read.state)
            turn.read_by_step = s.read_by_step
            if s.read.count:
                turn.measures["loss_carried_bpc"] = s.read.mean / LN2

    def _measure_fresh(self, turn: Turn, wait: bool = True) -> None:
        """The message's loss from a fresh memory and the memory benefit (fresh - carried). With
        `wait=False` (a reader that left: whoever closes a reply must not wait for a second read
        of the message, maybe 20,000 characters) the message is read in a thread of its own,
        `turn.measuring`, which fills the measures in when it is done."""
        carried = turn.measures.get("loss_carried_bpc")
        if carried is None or turn.measures.get("loss_fresh_bpc") is not None:
            return
        if not turn.memory or turn.state_before is None or is_fresh(turn.state_before):
            turn.measures.update(loss_fresh_bpc=carried, memory_benefit_bpc=0.0)  # it started fresh
        elif wait:
            self._read_fresh(turn, carried)
        else:
            turn.measuring = threading.Thread(target=self._read_fresh, args=(turn, carried, True),
                                              name="lstm-fresh-loss", daemon=True)
            turn.measuring.start()

    def _read_fresh(self, turn: Turn, carried: float, quiet: bool = False) -> None:
        """Read the message from a fresh memory as the carried loss was read: through the same
        serving, so by its decoder where it batches (one more row, taking turns with the replies
        being written, instead of a loop of steps of its own competing with the decoder for the
        cores and the GIL), else alone by the same loss loop. `quiet`: a failure leaves the
        measures out (nobody waits for them)."""
        s = Stream(self.serving, turn.fed, self.model.begin_state(1), Sampling(max_new_chars=0),
                   score=turn.message_chars)
        try:
            with contextlib.closing(s):
                for _ in s:
                    pass
        except Exception:
            if quiet:
                return
            raise
        fresh = s.read.mean / LN2
        turn.measures.update(loss_fresh_bpc=fresh, memory_benefit_bpc=fresh - carried)

    def _measure_sureness(self, turn: Turn) -> None:
        """`reply_probability`: the probability the model gave to writing exactly this reply and the
        stop that ended it, from the state after the message (at temperature 1): how sure it was. A
        guess spreads its probability over several answers. Only for a short reply that ended at its
        stop (an answer, not a speech: a long text's probability is vanishingly small whatever it says)."""
        turn.measures["reply_probability"] = None  # a retry's reply is measured afresh
        if turn.stopped_by != "stop" or len(turn.reply) > SURE_MAX_CHARS or turn.state_after_user is None:
            return
        ids = torch.tensor(self.model.vocab.encode(turn.reply + turn.stop), dtype=torch.long)
        turn.measures["reply_probability"] = math.exp(-text_loss(self.model, ids, turn.state_after_user).total)

    def _measure_after(self, turn: Turn) -> None:
        before, after = turn.state_before, turn.state_after

        def norms(state):  # per layer; None for a c without units (a GRU or RNN has no C)
            return [float(x) for x in state[:, 0].norm(dim=-1)] if state.shape[-1] else None

        turn.measures.update(
            h_norm=norms(after[0]),
            c_norm=norms(after[1]),
            h_change=norms(after[0] - before[0]),
            c_change=norms(after[1] - before[1]),
            reply_chars=len(turn.reply),
        )

    def _trim(self) -> None:
        """Bound memory: old turns drop their snapshots, very old turns leave the transcript."""
        for turn in self.turns[:-MAX_SNAPSHOTS]:
            turn.state_before = turn.state_after_user = turn.state_after = None
        if len(self.turns) > MAX_TURNS:
            drop = len(self.turns) - MAX_TURNS
            del self.turns[:drop]
            self._dropped_turns += drop

    # -- reports ------------------------------------------------------------------------------

    @property
    def dropped_turns(self) -> int:
        """How many of the oldest turns left the transcript (MAX_TURNS)."""
        return self._dropped_turns

    def memory_report(self) -> dict:
        """Plain data (JSON-serialisable): the settings and one entry per turn. Each turn has `turn`,
        its index from 0 (as scripts have always read it), and `number`, from 1 as the page counts."""
        return {
            "memory": self.memory,
            "cell": self.model.cell,
            "num_layers": self.model.num_layers,
            "hidden_size": self.model.hidden_size,
            "generation_steps": self.serving.precision,
            "generation_engine": self.serving.engine,
            "turns": [t.report(self._dropped_turns + i) for i, t in enumerate(self.turns)],
        }

    @staticmethod
    def turn_text(turn: Turn) -> str:
        """Everything the LSTM read in a turn: message, separator, reply and the stop that ended it
        (or, after a reply the length cap cut, the stop fed to close the turn)."""
        return turn.fed + turn.reply + turn.stop + turn.closed_with

    def trace_turn(self, index: int = -1):
        """An exact gate trace (gates.trace) of one turn's text (message, separator, reply) from
        the state the turn started from."""
        turn = self.turns[index]
        if turn.state_before is None:
            raise IndexError("That turn is too old: its state snapshot was dropped.")
        return trace(self.model, turn.fed + turn.reply, turn.state_before)

    def _recent_turns(self, max_chars: int) -> tuple[list[Turn], int]:
        """The last turns that hold their snapshots, oldest first, until `max_chars` characters."""
        chosen, total = [], 0
        for turn in reversed(self.turns):
            if turn.state_before is None or total >= max_chars:
                break
            chosen.append(turn)
            total += len(self.turn_text(turn))
        return chosen[::-1], total

    def recent_roles(self, max_chars: int = 1500) -> list[str]:
        """Who wrote each character of `trace_recent(max_chars)`'s text: "user" (the message and the
        separator) or "model" (the reply and its stop)."""
        chosen, total = self._recent_turns(max_chars)
        roles = [role for turn in chosen for role in
                 ["user"] * len(turn.fed) + ["model"] * (len(self.turn_text(turn)) - len(turn.fed))]
        return roles[max(0, total - max_chars):]

    def trace_recent(self, max_chars: int = 1500):
        """Exact gate traces of the last turns (at most `max_chars` characters), each from the
        state it started from, joined along the characters. None if no turn. Each turn is traced
        once while it stays in the window (kept with its text: a retried reply is traced anew)."""
        chosen, total = self._recent_turns(max_chars)
        if not chosen:
            return None
        kept, pieces = {}, []
        for turn in chosen:
            text = self.turn_text(turn)
            held = self._traces.get(id(turn))
            if held is None or held[0] is not turn or held[1] != text:
                held = (turn, text, trace(self.model, text, turn.state_before))
            kept[id(turn)] = held
            pieces.append(held[2])
        self._traces = kept
        joined = join_traces(pieces)
        return joined.tail(max_chars) if total > max_chars else joined

    def cache_bytes(self) -> int:
        """The bytes the kept gate traces hold (trace_recent's window)."""
        return sum(tr.nbytes() for _, _, tr in self._traces.values())
