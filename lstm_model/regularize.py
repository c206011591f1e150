"""Training-time regularisation of the kind that made LSTM language models strong (Merity et al.,
"Regularizing and Optimizing LSTM Language Models", 2017, AWD-LSTM), around a plain CharLSTM.

- weight drop (DropConnect): a fresh dropout mask on each hidden-to-hidden matrix W_h* for every
  batch, the same mask at every time step, so the recurrence itself is regularised;
- locked (variational) dropout: one mask per sequence on the LSTM's input (the embeddings) and
  output (before the head), the same at every time step, instead of a new mask per character;
- embedding dropout: whole characters' embedding rows dropped for a batch.

`Regularized(model, ...)` is what the training loop calls instead of the model when any of these
is on (`--weight-drop`, `--locked-dropout`, `--embed-dropout`). It holds no weights of its own:
the model's recurrent weights (nn.LSTM's, nn.GRU's or nn.RNN's) are the ones trained, saved and
served, so a model trained this way loads, serves and is traced (`gates.trace`) exactly as any
other. Weight drop applies to any cell's W_h*. In eval mode it computes what
the model computes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .model import paired, read_with_starts


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout on (batch, time, features) with one mask per sequence, shared over time."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1.0 - p) / (1.0 - p)
    return x * mask


class Regularized(nn.Module):
    """A CharLSTM's forward with AWD-LSTM's regularisation in training mode (see the module)."""

    def __init__(self, model, weight_drop: float = 0.0, locked_dropout: float = 0.0, embed_dropout: float = 0.0):
        super().__init__()
        self.model = model
        self.weight_drop, self.locked, self.embed_dropout = weight_drop, locked_dropout, embed_dropout

    def forward(self, ids: torch.Tensor, state=None, starts: torch.Tensor | None = None):
        m = self.model
        if state is None:
            state = m.begin_state(ids.shape[0], ids.device)
        table = m.embedding.weight
        if self.training and self.embed_dropout:
            keep = table.new_empty(table.shape[0], 1).bernoulli_(1.0 - self.embed_dropout) / (1.0 - self.embed_dropout)
            table = table * keep
        x = F.embedding(ids, table)
        x = locked_dropout(x, self.locked, self.training) if self.locked else m.drop(x)  # else the model's own
        rnn = m.recurrent
        if self.training and self.weight_drop:
            dropped = {f"weight_hh_l{k}": F.dropout(getattr(rnn, f"weight_hh_l{k}"), self.weight_drop)
                       for k in range(m.num_layers)}
            run = paired(lambda x, s: functional_call(rnn, dropped, (x, s), strict=False), m.cell)
            out, state = read_with_starts(run, x, state, starts)  # one mask for the whole batch
        else:
            out, state = read_with_starts(paired(rnn, m.cell), x, state, starts)
        out = locked_dropout(out, self.locked, self.training) if self.locked else m.drop(out)
        return m.head(out), state
