"""The one loss loop, and the measures built on it.

`text_loss` reads ids with the recurrent state carried through them and scores every character
against the prediction made before it. Everything that measures a loss uses it: training's
estimates (`stream_loss` over contiguous batches, `whole_text_loss` over the whole validation
text; `conversation_loss` over a chat dataset's conversations, each from a fresh state as a new
chat reads it), nanoGPT's windowed estimate (`window_loss`), the int8 check (`check_int8`: the same loop through the serving step, one character a
step), the benchmarks and the chat session's memory benefit (a message scored from the carried
state and from a fresh one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .data import conversation_spans
from .serving import MAX_LOSS_RISE
from .step import make_step, pick_engine

LN2 = math.log(2)


@dataclass
class Loss:
    """Summed cross-entropy (nats) over `count` scored characters, and the state after reading."""

    total: float
    count: int
    state: tuple
    chars: list[float] | None = None  # with per_char=True: each scored character's loss (nats), in order

    @property
    def mean(self) -> float | None:
        """nats per character (None when nothing was scored)."""
        return self.total / self.count if self.count else None


@torch.no_grad()
def text_loss(model, ids: torch.Tensor, state=None, *, score_first: bool = True, scored: int | None = None,
              chunk: int = 4096, step=None, mask: torch.Tensor | None = None, per_char: bool = False) -> Loss:
    """The loss loop. `ids` (batch, T), or (T,) for one text, read in order from `state`
    (default fresh), the state carried through all of it.

    Character t is scored against the prediction made after t-1; the first one against the
    prediction of `state` itself (unless `score_first` is False). Only the first `scored`
    characters of each row count (all by default; the rest is still read); with `mask` (bool, the
    shape of `ids`) only the characters it marks (a chat's replies, say). With `per_char`, the
    loss of each scored character too (`Loss.chars`, one text: row 0). By default the recurrent
    module (nn.LSTM, nn.GRU or nn.RNN) reads `chunk` characters a call; with `step` (a generation
    step, lstm_model.step) one character a step, as serving does.
    """
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    ids = (ids[None] if ids.dim() == 1 else ids).to(device)
    if mask is not None:
        mask = (mask[None] if mask.dim() == 1 else mask).to(device)
    rows, length = ids.shape
    limit = length if scored is None else min(scored, length)
    if state is None:
        state = model.begin_state(rows, device)
    previous = model.logits_from_state(state) if score_first else None  # predicts the next character
    total, count, width = 0.0, 0, 1 if step is not None else chunk
    chars: list[float] | None = [] if per_char else None
    for start in range(0, length, width):
        x = ids[:, start : start + width]
        if step is not None:
            logits, state = step.step(x[:, 0], state)
            logits = logits[:, None]
        else:
            logits, state = model(x, state)
        if previous is None:  # no prediction for x[:, 0]
            predictions, targets, first = logits[:, :-1], x[:, 1:], start + 1
        else:
            predictions, targets, first = torch.cat([previous[:, None], logits[:, :-1]], dim=1), x, start
        keep = max(0, min(targets.shape[1], limit - first))
        if keep:
            losses = nn.functional.cross_entropy(predictions[:, :keep].reshape(-1, predictions.shape[-1]),
                                                 targets[:, :keep].reshape(-1), reduction="none")
            if mask is None:
                total, count = total + losses.sum().item(), count + rows * keep
                if chars is not None:
                    chars += losses.view(rows, keep)[0].tolist()
            else:
                marked = mask[:, first : first + keep].reshape(-1)
                total, count = total + losses[marked].sum().item(), count + int(marked.sum())
                if chars is not None:
                    chars += losses.view(rows, keep)[0][marked.view(rows, keep)[0]].tolist()
        previous = logits[:, -1]
    model.train(was_training)
    return Loss(total, count, state, chars)


def whole_text_loss(model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """nats/char of a whole text read once, batch 1, the state carried through all of it; every
    character scored (or those `mask` marks), the first from the fresh state (the head applied to
    H = 0)."""
    return text_loss(model, ids, mask=mask).mean


@torch.no_grad()
def conversation_loss(model, ids: torch.Tensor, starts: list[int], mask: torch.Tensor | None = None,
                      limit: int | None = None, group: int = 64, step=None) -> float:
    """nats/char over a chat dataset's conversations (the first `limit`), each read from a fresh
    state as a new chat session reads it, side by side in padded groups: every character but each
    conversation's first (nothing predicts it in a chat) scored, or those `mask` marks (the
    replies). With `step`, one character a step through a generation step, as serving does."""
    spans = sorted(conversation_spans(starts, ids.numel(), limit), key=lambda s: s[1] - s[0])
    total, count = 0.0, 0
    for first in range(0, len(spans), group):
        part = spans[first : first + group]
        width = max(b - a for a, b in part)
        x = torch.zeros(len(part), width, dtype=torch.long)
        m = torch.zeros(len(part), width, dtype=torch.bool)
        for row, (a, b) in enumerate(part):
            x[row, : b - a] = ids[a:b]
            m[row, 1 : b - a] = True if mask is None else mask[a + 1 : b]
        loss = text_loss(model, x, mask=m, step=step)
        total, count = total + loss.total, count + loss.count
    return total / count if count else float("nan")


def window_loss(model, ids: torch.Tensor, windows: int = 4096, length: int = 256, batch: int = 64,
                seed: int = 1337) -> tuple[float, float]:
    """nats/char the way nanoGPT estimates its validation loss: `windows` windows of `length` + 1
    characters at random offsets of `ids`, each read from a fresh state, every one of the `length`
    predictions scored (the first from one character of context). Returns (mean, standard error),
    the error from the spread of the means of `batch`-window groups."""
    generator = torch.Generator().manual_seed(seed)
    span = length + 1
    if ids.numel() < span:
        raise ValueError(f"The text has {ids.numel()} characters; a window needs {span}.")
    starts = torch.randint(0, ids.numel() - span + 1, (windows,), generator=generator)
    means = []
    for first in range(0, windows, batch):
        group = torch.stack([ids[i : i + span] for i in starts[first : first + batch].tolist()])
        means.append(text_loss(model, group, score_first=False, chunk=span).mean)
    mean = sum(means) / len(means)
    spread = math.sqrt(sum((m - mean) ** 2 for m in means) / max(1, len(means) - 1))
    return mean, spread / math.sqrt(len(means))


def stream_loss(model, streams: torch.Tensor, seq_len: int, max_batches: int | None = None,
                mask: torch.Tensor | None = None) -> float:
    """nats/char over contiguous (batch, length) streams as training reads them, the state carried
    from batch to batch, at most `max_batches` windows of `seq_len` characters (with `mask`, of
    the characters it marks)."""
    if max_batches is not None:
        streams = streams[:, : max_batches * seq_len + 1]
        mask = None if mask is None else mask[:, : max_batches * seq_len + 1]
    return text_loss(model, streams, score_first=False, chunk=seq_len, mask=mask).mean


def check_int8(model, ids: torch.Tensor, streams: int = 32, text: str = "", max_chars: int = 1_000_000,
               max_loss_rise: float = MAX_LOSS_RISE, mask: torch.Tensor | None = None,
               starts: list[int] | None = None) -> dict:
    """The loss of fp32 and int8 generation steps (ONNX Runtime) on the same held-out ids (at most
    `max_chars` of them, from the start), cut into `streams` contiguous pieces read side by side,
    each from a fresh state, every character scored (or, with `mask`, the characters it marks: a
    chat model's replies); with `starts` (a chat dataset's conversations), each conversation read
    from a fresh state instead (`conversation_loss`). `ok` if the rise is <= `max_loss_rise`."""
    import onnxruntime

    if pick_engine(model) != "onnxruntime":
        raise ValueError("Int8 steps need the model on CPU and onnxruntime (pip install onnxruntime onnx).")
    ids = ids[:max_chars]
    streams = max(1, min(streams, ids.numel()))
    length = ids.numel() // streams
    pieces = ids[: streams * length].view(streams, length)
    marked = None if mask is None else mask[:max_chars][: streams * length].view(streams, length)
    losses = {}
    kept = None if starts is None else [s for s in starts if s < ids.numel()]
    for name, int8 in (("fp32", False), ("int8", True)):
        step = make_step(model, "onnxruntime", int8)
        losses[name] = (text_loss(model, pieces, step=step, mask=marked).mean if kept is None else
                        conversation_loss(model, ids, kept, mask=None if mask is None else mask[:max_chars], step=step))
    rise = losses["int8"] - losses["fp32"]
    return {
        "fp32_loss": round(losses["fp32"], 6),
        "int8_loss": round(losses["int8"], 6),
        "loss_rise": round(rise, 6),
        "max_loss_rise": max_loss_rise,
        "ok": bool(math.isfinite(rise) and rise <= max_loss_rise),
        "characters": streams * length if kept is None else ids.numel(),
        "scored": "all" if mask is None else
                  f"{int((marked if kept is None else mask[:max_chars]).sum()):,} marked characters (replies)",
        "streams": streams if kept is None else f"{len(kept)} conversations, each from a fresh state",
        "text": text,
        "engine": "onnxruntime " + onnxruntime.__version__,
        "torch": torch.__version__,
    }
