"""Batch-1 generation speed of `generate` against the seed tutorial's sampling loop.

    python benchmarks/generate_speed.py [--hidden 512] [--chars 2000] [--reps 5]

Both run on the same randomly initialised 2-layer model of the given width, side by side in one
process, alternating, `--reps` times; the figures are medians. The seed loop is also measured at
the start of the process, as a fresh tutorial script would run it (see the comment in main()).
The seed loop is the tutorial's: a one-hot input vector, one `nn.LSTM` call per character with
the default CPU backend, then softmax and multinomial. Prompt ingestion is measured on a
100,000-character prompt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lstm_model import CharLSTM  # noqa: E402
from lstm_model.generate import generate  # noqa: E402

VOCAB = [chr(c) for c in range(32, 127)] + ["\n"]


class SeedLSTM(nn.Module):
    """The tutorial's model: one-hot input straight into nn.LSTM, a linear head."""

    def __init__(self, vocab_size, hidden, layers=2):
        super().__init__()
        self.vocab_size = vocab_size
        self.rnn = nn.LSTM(vocab_size, hidden, layers)
        self.linear = nn.Linear(hidden, vocab_size)

    def begin_state(self, batch_size=1):
        shape = (self.rnn.num_layers, batch_size, self.rnn.hidden_size)
        return torch.zeros(shape), torch.zeros(shape)

    def forward(self, inputs, state):
        x = nn.functional.one_hot(inputs.T.long(), self.vocab_size).float()
        y, state = self.rnn(x, state)
        return self.linear(y.reshape(-1, y.shape[-1])), state


@torch.no_grad()
def seed_predict(prefix, num_preds, net, vocab):
    """The tutorial's predict loop (d2l's predict_ch8), sampling instead of argmax."""
    state = net.begin_state(1)
    outputs = [vocab.index(prefix[0])]
    get_input = lambda: torch.tensor([outputs[-1]]).reshape((1, 1))  # noqa: E731
    for y in prefix[1:]:
        _, state = net(get_input(), state)
        outputs.append(vocab.index(y))
    for _ in range(num_preds):
        y, state = net(get_input(), state)
        probs = torch.softmax(y[0], dim=-1)
        outputs.append(int(torch.multinomial(probs, 1)))
    return "".join(vocab[i] for i in outputs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--chars", type=int, default=2000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--prompt-chars", type=int, default=100_000)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    ours = CharLSTM(vocab=VOCAB, embed_dim=64, hidden_size=args.hidden, num_layers=2, dropout=0.0).eval()
    seed = SeedLSTM(len(VOCAB), args.hidden).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, hidden {args.hidden}, 2 layers, "
          f"{len(VOCAB)} characters")
    # The seed loop as a fresh tutorial script runs it. Its oneDNN calls allocate and free MB-sized
    # buffers; until glibc raises its mmap threshold (after the process frees a large block, as
    # building our step tables does), each call pays for fresh pages. So it is measured twice:
    # first in this fresh process, then side by side with ours after that warm-up.
    seed_predict("Hi", 50, seed, VOCAB)
    cold = []
    n = max(200, args.chars // 5)
    for rep in range(3):
        start = time.perf_counter()
        seed_predict("Hi", n, seed, VOCAB)
        cold.append(n / (time.perf_counter() - start))
    generate(ours, "Hi", max_new_chars=50, seed=0)  # warm up (builds the step tables)
    seed_predict("Hi", 50, seed, VOCAB)
    ours_rates, seed_rates = [], []
    for rep in range(args.reps):
        start = time.perf_counter()
        generate(ours, "Hi", max_new_chars=args.chars, seed=rep)
        ours_rates.append(args.chars / (time.perf_counter() - start))
        n = max(200, args.chars // 5)
        start = time.perf_counter()
        seed_predict("Hi", n, seed, VOCAB)
        seed_rates.append(n / (time.perf_counter() - start))
    o, s = statistics.median(ours_rates), statistics.median(seed_rates)
    print(f"generate:   {o:,.0f} chars/s (median of {args.reps}; runs {', '.join(f'{r:,.0f}' for r in ours_rates)})")
    c = statistics.median(cold)
    print(f"seed loop, fresh process: {c:,.0f} chars/s (median of 3; runs {', '.join(f'{r:,.0f}' for r in cold)})")
    print(f"seed loop, warm allocator: {s:,.0f} chars/s (median of {args.reps}; runs "
          f"{', '.join(f'{r:,.0f}' for r in seed_rates)})")
    print(f"speed-up: {o / c:.1f}x the fresh seed loop, {o / s:.1f}x the warm one")
    prompt = "".join(VOCAB[i % (len(VOCAB) - 1)] for i in range(args.prompt_chars))
    rates = []
    for rep in range(3):
        start = time.perf_counter()
        generate(ours, prompt, max_new_chars=0)
        rates.append(args.prompt_chars / (time.perf_counter() - start))
    print(f"prompt ingestion: {statistics.median(rates):,.0f} chars/s for a {args.prompt_chars:,}-character prompt "
          f"(median of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
