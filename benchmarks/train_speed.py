"""Training throughput of `python -m lstm_model.train`'s loop against a bare nn.LSTM loop.

    python benchmarks/train_speed.py [--hidden 512 --batch 64 --seq 128 --steps 12 --reps 3]

Both train the same architecture (embedding 64 -> 2-layer nn.LSTM -> linear head, AdamW, gradient
clipping) on the same corpus, alternating in one process. Our loop is the real `train()` (data
batches, carried state, scheduler, tqdm, metrics log, loss checks); its per-step times are read
from the step timestamps, skipping the first two steps of each run. The bare loop is the minimum:
zero_grad, forward, cross-entropy, backward, clip, step. The figure is the ratio of median
chars/s (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import lstm_model.train as train_module  # noqa: E402

DEFAULT_TEXT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                            "tinyshakespeare.txt")


def ours(text_path, args) -> list[float]:
    stamps = []
    original = train_module._log

    def timed_log(path, record):
        if "loss" in record:
            stamps.append(time.perf_counter())
        original(path, record)

    train_module._log = timed_log
    try:
        with tempfile.TemporaryDirectory() as out:
            config = train_module.resolve_config([
                "--dataset", text_path, "--out", out, "--hidden-size", str(args.hidden), "--batch-size",
                str(args.batch), "--seq-len", str(args.seq), "--max-steps", str(args.steps + 2), "--eval-every",
                "100000", "--eval-batches", "1", "--quiet", "--sample-chars", "1", "--device", "cpu"])
            train_module.train(config)
    finally:
        train_module._log = original
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]


def bare(vocab_size, args) -> list[float]:
    torch.manual_seed(0)
    embed = nn.Embedding(vocab_size, 64)
    lstm = nn.LSTM(64, args.hidden, num_layers=2, dropout=0.2, batch_first=True)
    head = nn.Linear(args.hidden, vocab_size)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3)
    data = torch.randint(0, vocab_size, (args.batch, args.seq * (args.steps + 2) + 1))
    state = None
    times = []
    for i in range(args.steps + 2):
        start = time.perf_counter()
        x = data[:, i * args.seq : (i + 1) * args.seq]
        y = data[:, i * args.seq + 1 : (i + 1) * args.seq + 1]
        opt.zero_grad()
        out, state = lstm(embed(x), state)
        loss = nn.functional.cross_entropy(head(out).reshape(-1, vocab_size), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state = (state[0].detach(), state[1].detach())
        times.append(time.perf_counter() - start)
    return times[2:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default=DEFAULT_TEXT)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    chars = args.batch * args.seq
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; hidden {args.hidden}, batch {args.batch}, "
          f"seq {args.seq}, {args.steps} timed steps x {args.reps} runs each")
    ours_steps, bare_steps = [], []
    for rep in range(args.reps):
        ours_steps += ours(args.text, args)
        bare_steps += bare(65, args)
        print(f"  run {rep + 1}: ours {chars / statistics.median(ours_steps):,.0f} chars/s, "
              f"bare {chars / statistics.median(bare_steps):,.0f} chars/s (medians so far)")
    o, b = chars / statistics.median(ours_steps), chars / statistics.median(bare_steps)
    print(f"ours: {o:,.0f} chars/s; bare nn.LSTM loop: {b:,.0f} chars/s; ratio {o / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
