"""The LSTM equations (ARCHITECTURE.md, "The model"), step by step, from nn.LSTM's own weights.

    F_t  = σ(X_t W_xf + H_{t-1} W_hf + b_f)      I_t = σ(X_t W_xi + H_{t-1} W_hi + b_i)
    O_t  = σ(X_t W_xo + H_{t-1} W_ho + b_o)      C'_t = tanh(X_t W_xc + H_{t-1} W_hc + b_c)
    C_t  = F_t ⊙ C_{t-1} + I_t ⊙ C'_t            H_t = O_t ⊙ tanh(C_t)

`trace(model, text, state)` returns every gate, the candidate, C and H for every character and
layer. PyTorch packs the rows of weight_ih_l{k} / weight_hh_l{k} (and both biases) in the order
input, forget, cell (candidate), output; X_t for layer 0 is the character's embedding row (the
one-hot input times W, factored), for layer k > 0 the H of layer k-1. The tests prove the result
equal to nn.LSTM's.

Helpers for the app find the units that moved most and the units that follow a per-character
pattern (inside quotes, position in the line, inside a speaker name), as LSTMVis does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

QUANTITIES = ("cell", "hidden", "forget", "input", "output", "candidate")


@dataclass
class Trace:
    """Per-character activations, each (num_layers, len(text), hidden), and the final (h, c)."""

    text: str
    forget: torch.Tensor
    input: torch.Tensor
    output: torch.Tensor
    candidate: torch.Tensor
    cell: torch.Tensor
    hidden: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor]
    skipped: list[str] = field(default_factory=list)

    def tail(self, n: int) -> "Trace":
        """The trace of the last `n` characters (the same values, cut)."""
        cut = max(0, len(self.text) - n)
        if cut == 0:
            return self
        return Trace(text=self.text[cut:], state=self.state, skipped=self.skipped,
                     **{name: self.get(name)[:, cut:] for name in QUANTITIES})

    def get(self, quantity: str) -> torch.Tensor:
        if quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {QUANTITIES}; got {quantity!r}.")
        return getattr(self, quantity)


@torch.no_grad()
def trace(model, text: str, state=None) -> Trace:
    """Run `text` through the model's LSTM with the explicit equations, from `state` (default fresh).

    Characters outside the vocabulary are skipped (listed in `Trace.skipped`); `Trace.text` is
    what the LSTM actually read.
    """
    encoded = model.vocab.encode_report(text)
    device = model.head.weight.device
    lstm, hidden_size = model.lstm, model.hidden_size
    if state is None:
        state = model.begin_state(1, device)
    h0, c0 = state
    if h0.shape[1] != 1:
        raise ValueError("trace() follows one sequence: give a state with batch size 1.")
    steps = len(encoded.ids)
    shape = (model.num_layers, steps, hidden_size)
    out = {name: torch.empty(shape, device=device) for name in QUANTITIES}
    x = model.embedding(torch.tensor(encoded.ids, dtype=torch.long, device=device))  # (T, E)
    final_h, final_c = [], []
    for layer in range(model.num_layers):
        w_ih = getattr(lstm, f"weight_ih_l{layer}")
        w_hh = getattr(lstm, f"weight_hh_l{layer}")
        b_hh = getattr(lstm, f"bias_hh_l{layer}")
        # X_t W_x* + b for every t at once: (T, 4H); then H_{t-1} W_h* + b step by step, added
        # in nn.LSTM's order so that the float32 results agree.
        x_part = nn.functional.linear(x, w_ih, getattr(lstm, f"bias_ih_l{layer}"))
        h, c = h0[layer, 0], c0[layer, 0]
        for t in range(steps):
            z = nn.functional.linear(h, w_hh, b_hh) + x_part[t]
            i = torch.sigmoid(z[:hidden_size])
            f = torch.sigmoid(z[hidden_size : 2 * hidden_size])
            g = torch.tanh(z[2 * hidden_size : 3 * hidden_size])
            o = torch.sigmoid(z[3 * hidden_size :])
            c = (f * c).add_(i * g)
            h = o * torch.tanh(c)
            out["input"][layer, t], out["forget"][layer, t], out["candidate"][layer, t] = i, f, g
            out["output"][layer, t], out["cell"][layer, t], out["hidden"][layer, t] = o, c, h
        final_h.append(h)
        final_c.append(c)
        x = out["hidden"][layer]
    final = (torch.stack(final_h)[:, None, :], torch.stack(final_c)[:, None, :])
    return Trace(text=encoded.text, state=final, skipped=encoded.skipped, **out)


def join_traces(traces: list[Trace]) -> Trace:
    """Traces of consecutive texts joined along the characters (the final state is the last one's)."""
    if len(traces) == 1:
        return traces[0]
    joined = {name: torch.cat([t.get(name) for t in traces], dim=1) for name in QUANTITIES}
    skipped = list(dict.fromkeys(c for t in traces for c in t.skipped))
    return Trace(text="".join(t.text for t in traces), state=traces[-1].state, skipped=skipped, **joined)


# -- helpers for the memory views ---------------------------------------------------------------


def top_changing_units(tr: Trace, layer: int = -1, k: int = 16) -> list[int]:
    """The k units whose exposed memory tanh(C) varied most over the text (largest standard
    deviation). tanh(C) is what the output gate can pass on; ranking by C itself would pick large,
    slowly drifting cell values that look like flat stripes."""
    exposed = torch.tanh(tr.cell[layer].float())
    if exposed.shape[0] < 2:
        return list(range(min(k, exposed.shape[1])))
    return torch.topk(exposed.std(dim=0), min(k, exposed.shape[1])).indices.tolist()


def pattern_inside_quotes(text: str) -> list[float]:
    """1 for characters inside a quotation ("..." or '...', apostrophes in words ignored), else 0."""
    values, inside = [], None  # the quote character that opened the current quotation
    for i, ch in enumerate(text):
        prev_alpha = i > 0 and text[i - 1].isalpha()
        next_alpha = i + 1 < len(text) and text[i + 1].isalpha()
        if inside is None and (ch == '"' or (ch == "'" and not prev_alpha and next_alpha)):
            inside = ch
            values.append(1.0)
        elif inside is not None and ch == inside and (ch == '"' or not next_alpha):
            inside = None
            values.append(1.0)
        else:
            values.append(1.0 if inside else 0.0)
    return values


def pattern_line_position(text: str) -> list[float]:
    """The position of each character in its line (0 at a line start)."""
    values, pos = [], 0
    for ch in text:
        values.append(float(pos))
        pos = 0 if ch == "\n" else pos + 1
    return values


def pattern_speaker_name(text: str) -> list[float]:
    """1 for characters of a line that ends in ':' (a speaker's name in a play), else 0."""
    values = []
    for line in text.split("\n"):
        flag = 1.0 if line.rstrip().endswith(":") and len(line) < 40 else 0.0
        values.extend([flag] * len(line))
        values.append(0.0)  # the newline itself
    return values[: len(text)]


def pattern_word_position(text: str) -> list[float]:
    """The position of each character in its word (0 on spaces and punctuation)."""
    values, pos = [], 0
    for ch in text:
        pos = pos + 1 if ch.isalpha() else 0
        values.append(float(pos))
    return values


DEFAULT_PATTERN = "position in the line"  # the pattern the app's unit inspector starts from

PATTERNS = {
    "inside quotes": pattern_inside_quotes,
    "position in the line": pattern_line_position,
    "inside a speaker name": pattern_speaker_name,
    "position in the word": pattern_word_position,
}


def units_following(tr: Trace, pattern, layer: int = -1, k: int = 5, quantity: str = "cell") -> list[tuple[int, float]]:
    """The k units whose activation best follows a per-character pattern: [(unit, correlation)].

    `pattern` is a name from PATTERNS or a list of numbers, one per character of `tr.text`.
    Correlation is Pearson's r over the characters; units are ranked by |r|.
    """
    if isinstance(pattern, str):
        if pattern not in PATTERNS:
            raise ValueError(f"Unknown pattern {pattern!r}; choose one of {sorted(PATTERNS)}.")
        pattern = PATTERNS[pattern](tr.text)
    target = torch.tensor(pattern, dtype=torch.float32)
    values = tr.get(quantity)[layer].float().cpu()
    if target.numel() != values.shape[0]:
        raise ValueError(f"The pattern has {target.numel()} values but the text has {values.shape[0]} characters.")
    if target.numel() < 2 or float(target.std()) == 0.0:
        return []
    t = (target - target.mean()) / target.std()
    v = values - values.mean(dim=0)
    std = v.std(dim=0)
    r = (v * t[:, None]).sum(dim=0) / ((target.numel() - 1) * std.clamp_min(1e-8))
    r = torch.where(std > 1e-8, r, torch.zeros_like(r))
    order = torch.argsort(r.abs(), descending=True)[:k]
    return [(int(u), float(r[u])) for u in order]
