"""Each cell's equations (ARCHITECTURE.md, "The model"), step by step, from the model's own weights.

The LSTM (nn.LSTM):

    F_t  = σ(X_t W_xf + H_{t-1} W_hf + b_f)      I_t = σ(X_t W_xi + H_{t-1} W_hi + b_i)
    O_t  = σ(X_t W_xo + H_{t-1} W_ho + b_o)      C'_t = tanh(X_t W_xc + H_{t-1} W_hc + b_c)
    C_t  = F_t ⊙ C_{t-1} + I_t ⊙ C'_t            H_t = O_t ⊙ tanh(C_t)

The GRU, in nn.GRU's own formulation (the reset gate multiplies H_{t-1} W_hn + b_hn, after the
product), and the plain RNN (nn.RNN, tanh):

    R_t = σ(X_t W_xr + b_xr + H_{t-1} W_hr + b_hr)    Z_t = σ(X_t W_xz + b_xz + H_{t-1} W_hz + b_hz)
    N_t = tanh(X_t W_xn + b_xn + R_t ⊙ (H_{t-1} W_hn + b_hn))    H_t = (1 - Z_t) ⊙ N_t + Z_t ⊙ H_{t-1}

    H_t = tanh(X_t W_xh + b_xh + H_{t-1} W_hh + b_hh)

`trace(model, text, state)` returns, for every character and layer, each quantity of the model's
cell (`Trace.quantities`, from CELL_QUANTITIES): the LSTM's gates, candidate, C and H; the GRU's
update gate Z, reset gate R, candidate N and H; the RNN's H. PyTorch packs the rows of
weight_ih_l{k} / weight_hh_l{k} (and both biases) as input, forget, cell (candidate), output for
the LSTM and reset, update, new (candidate) for the GRU; X_t for layer 0 is the character's
embedding row (the one-hot input times W, factored), for layer k > 0 the H of layer k-1. The
tests prove the results equal to nn.LSTM's, nn.GRU's and nn.RNN's.

Helpers for the app find the units that moved most and the units that follow a per-character
pattern (inside quotes, position in the line, inside a speaker name), as LSTMVis does.
"""

from __future__ import annotations

import torch
from torch import nn

QUANTITIES = ("cell", "hidden", "forget", "input", "output", "candidate")  # the LSTM's
CELL_QUANTITIES = {
    "lstm": QUANTITIES,
    "gru": ("hidden", "update", "reset", "candidate"),  # H, Z, R, N
    "rnn": ("hidden",),
}
# The quantity that holds what a cell carries from character to character, which the views show
# unless asked for another: the LSTM's C (its long-term memory); a GRU's or an RNN's H (all they carry).
MEMORY_QUANTITY = {"lstm": "cell", "gru": "hidden", "rnn": "hidden"}


class Trace:
    """Per-character values of one cell's quantities (`quantities`), each (num_layers,
    len(text), hidden) and read as attributes (`tr.forget`, `tr.update`, `tr.hidden`) or with
    `get`, and the final (h, c). `kind` is the cell ("lstm", "gru", "rnn"); `memory` the quantity
    the views show by default."""

    def __init__(self, text: str, state, skipped: list[str] | None = None, kind: str = "lstm", **values):
        if kind not in CELL_QUANTITIES:
            raise ValueError(f"kind must be one of {', '.join(CELL_QUANTITIES)}; got {kind!r}.")
        quantities = CELL_QUANTITIES[kind]
        if set(values) != set(quantities):
            raise ValueError(f"A {kind} trace holds {', '.join(quantities)}; got {', '.join(sorted(values))}.")
        self.text, self.state, self.skipped, self.kind = text, state, list(skipped or []), kind
        self.values = {name: values[name] for name in quantities}

    def __getattr__(self, name: str):
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        kind = self.__dict__.get("kind", "?")
        raise AttributeError(f"A {kind} trace has no {name!r}; it holds {', '.join(CELL_QUANTITIES.get(kind, ()))}.")

    @property
    def quantities(self) -> tuple[str, ...]:
        return CELL_QUANTITIES[self.kind]

    @property
    def memory(self) -> str:
        return MEMORY_QUANTITY[self.kind]

    def tail(self, n: int) -> "Trace":
        """The trace of the last `n` characters (the same values, cut)."""
        cut = max(0, len(self.text) - n)
        if cut == 0:
            return self
        return Trace(text=self.text[cut:], state=self.state, skipped=self.skipped, kind=self.kind,
                     **{name: value[:, cut:] for name, value in self.values.items()})

    def get(self, quantity: str) -> torch.Tensor:
        if quantity not in self.values:
            raise ValueError(f"quantity must be one of {self.quantities}; got {quantity!r}.")
        return self.values[quantity]

    def nbytes(self) -> int:
        """The bytes its values hold."""
        return sum(t.numel() * t.element_size() for t in self.values.values())


@torch.no_grad()
def trace(model, text: str, state=None) -> Trace:
    """Run `text` through the model's recurrent layers with the explicit equations of its cell,
    from `state` (default fresh).

    Characters outside the vocabulary are skipped (listed in `Trace.skipped`); `Trace.text` is
    what the model actually read.
    """
    encoded = model.vocab.encode_report(text)
    device = model.head.weight.device
    cell = getattr(model, "cell", "lstm")
    if state is None:
        state = model.begin_state(1, device)
    if state[0].shape[1] != 1:
        raise ValueError("trace() follows one sequence: give a state with batch size 1.")
    steps = len(encoded.ids)
    shape = (model.num_layers, steps, model.hidden_size)
    out = {name: torch.empty(shape, device=device) for name in CELL_QUANTITIES[cell]}
    x = model.embedding(torch.tensor(encoded.ids, dtype=torch.long, device=device))  # (T, E)
    layer_steps = {"lstm": _lstm_layer, "gru": _gru_layer, "rnn": _rnn_layer}[cell]
    final_h, final_c = [], []
    for layer in range(model.num_layers):
        weights = [getattr(model.recurrent, f"{name}_l{layer}") for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")]
        h, c = layer_steps(x, state[0][layer, 0], state[1][layer, 0], weights, model.hidden_size,
                           {name: value[layer] for name, value in out.items()})
        final_h.append(h)
        final_c.append(c)
        x = out["hidden"][layer]
    final = (torch.stack(final_h)[:, None, :], torch.stack(final_c)[:, None, :])
    return Trace(text=encoded.text, state=final, skipped=encoded.skipped, kind=cell, **out)


# One layer of each cell over every character: x (T, inputs), the layer's h and c before the
# first, its weights (weight_ih, bias_ih, weight_hh, bias_hh); each quantity written into `out`
# (name -> (T, hidden)); returns the last h and c. X_t W_x* + b for every t at once, then
# H_{t-1} W_h* + b step by step, added in the order PyTorch's kernels add them, so that the
# float32 results agree.


def _lstm_layer(x, h, c, weights, hidden_size, out):
    w_ih, b_ih, w_hh, b_hh = weights
    x_part = nn.functional.linear(x, w_ih, b_ih)  # (T, 4H)
    for t in range(x.shape[0]):
        z = nn.functional.linear(h, w_hh, b_hh) + x_part[t]
        i = torch.sigmoid(z[:hidden_size])
        f = torch.sigmoid(z[hidden_size : 2 * hidden_size])
        g = torch.tanh(z[2 * hidden_size : 3 * hidden_size])
        o = torch.sigmoid(z[3 * hidden_size :])
        c = (f * c).add_(i * g)
        h = o * torch.tanh(c)
        out["input"][t], out["forget"][t], out["candidate"][t] = i, f, g
        out["output"][t], out["cell"][t], out["hidden"][t] = o, c, h
    return h, c


def _gru_layer(x, h, c, weights, hidden_size, out):
    w_ih, b_ih, w_hh, b_hh = weights
    x_part = nn.functional.linear(x, w_ih, b_ih)  # (T, 3H): reset, update, new
    for t in range(x.shape[0]):
        h_part = nn.functional.linear(h, w_hh, b_hh)
        r = torch.sigmoid(h_part[:hidden_size] + x_part[t, :hidden_size])
        z = torch.sigmoid(h_part[hidden_size : 2 * hidden_size] + x_part[t, hidden_size : 2 * hidden_size])
        n = torch.tanh(x_part[t, 2 * hidden_size :] + r * h_part[2 * hidden_size :])
        h = (h - n) * z + n  # (1 - Z) ⊙ N + Z ⊙ H_{t-1}, as nn.GRU computes it
        out["reset"][t], out["update"][t], out["candidate"][t], out["hidden"][t] = r, z, n, h
    return h, c


def _rnn_layer(x, h, c, weights, hidden_size, out):
    w_ih, b_ih, w_hh, b_hh = weights
    x_part = nn.functional.linear(x, w_ih, b_ih)  # (T, H)
    for t in range(x.shape[0]):
        h = torch.tanh(x_part[t] + nn.functional.linear(h, w_hh, b_hh))
        out["hidden"][t] = h
    return h, c


def join_traces(traces: list[Trace]) -> Trace:
    """Traces of consecutive texts joined along the characters (the final state is the last one's)."""
    if len(traces) == 1:
        return traces[0]
    kind = traces[0].kind
    joined = {name: torch.cat([t.get(name) for t in traces], dim=1) for name in CELL_QUANTITIES[kind]}
    skipped = list(dict.fromkeys(c for t in traces for c in t.skipped))
    return Trace(text="".join(t.text for t in traces), state=traces[-1].state, skipped=skipped, kind=kind, **joined)


# -- helpers for the memory views ---------------------------------------------------------------


def top_changing_units(tr: Trace, layer: int = -1, k: int = 16) -> list[int]:
    """The k units whose exposed memory varied most over the text (largest standard deviation):
    an LSTM's tanh(C), what the output gate can pass on (ranking by C itself would pick large,
    slowly drifting cell values that look like flat stripes); a GRU's or an RNN's H, already
    within [-1, 1]."""
    exposed = torch.tanh(tr.cell[layer].float()) if tr.kind == "lstm" else tr.hidden[layer].float()
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


def units_following(tr: Trace, pattern, layer: int = -1, k: int = 5, quantity: str | None = None) -> list[tuple[int, float]]:
    """The k units whose activation best follows a per-character pattern: [(unit, correlation)].

    `pattern` is a name from PATTERNS or a list of numbers, one per character of `tr.text`;
    `quantity` one of the trace's quantities (default its memory: an LSTM's C, a GRU's or RNN's H).
    Correlation is Pearson's r over the characters; units are ranked by |r|.
    """
    if isinstance(pattern, str):
        if pattern not in PATTERNS:
            raise ValueError(f"Unknown pattern {pattern!r}; choose one of {sorted(PATTERNS)}.")
        pattern = PATTERNS[pattern](tr.text)
    target = torch.tensor(pattern, dtype=torch.float32)
    values = tr.get(quantity or tr.memory)[layer].float().cpu()
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
