"""Validation loss of a model, both ways, from the one loss loop (lstm_model.evaluate.text_loss).

    python benchmarks/quality.py --model assets/shakespeare --text SHAKESPEARE_TXT --val-fraction 0.1

The held-out text is the last --val-fraction of the file (nanoGPT's split; the training CLI holds
out the same characters). Stateful: read once at batch 1 from a fresh state, the state carried
through, every character scored. nanoGPT's way (`window_loss`): --windows windows of 256 + 1
characters at random offsets (seed 1337), each from a fresh state, every position scored, with
the standard error of the mean. Prints nats and bits per character, then a few samples.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lstm_model import load_model  # noqa: E402
from lstm_model.data import encode, load_corpus  # noqa: E402
from lstm_model.evaluate import whole_text_loss, window_loss  # noqa: E402
from lstm_model.generate import generate  # noqa: E402


def held_out_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --text and --val-fraction, shared with benchmarks/int8.py."""
    p.add_argument("--model", default=None, help="folder or Hub repo id (default: the bundled model)")
    p.add_argument("--text", required=True, help="the corpus file (or a dataset id / folder the training CLI accepts)")
    p.add_argument("--val-fraction", type=float, default=0.1)


def held_out(args):
    """The model and the held-out part of the corpus (the training CLI's split): (model, corpus, ids)."""
    model = load_model(args.model)
    corpus = load_corpus(args.text, val_fraction=args.val_fraction)
    return model, corpus, encode(model.vocab, corpus.val)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    held_out_arguments(p)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--sample-chars", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--windows", type=int, default=4096, help="windows for nanoGPT's estimate (0: skip it)")
    args = p.parse_args(argv)

    model, corpus, ids = held_out(args)
    unknown = model.vocab.unknown(corpus.val)
    start = time.perf_counter()
    loss = whole_text_loss(model, ids)
    seconds = time.perf_counter() - start
    print(f"model: {args.model or 'bundled default'} ({model.num_parameters():,} parameters)")
    print(f"held-out text: {corpus.val_from} of {args.text}: {ids.numel():,} characters"
          + (f" ({len(unknown)} characters outside the vocabulary skipped: {unknown!r})" if unknown else ""))
    print(f"validation loss, stateful over the whole split: {loss:.4f} nats/char = {loss / math.log(2):.4f} bits/char "
          f"({seconds:.1f} s)")
    if args.windows:
        start = time.perf_counter()
        mean, error = window_loss(model, ids, windows=args.windows)
        print(f"validation loss, nanoGPT's way ({args.windows} random windows of 256, each from a fresh state): "
              f"{mean:.4f} +- {error:.4f} nats/char = {mean / math.log(2):.4f} bits/char ({time.perf_counter() - start:.1f} s)")
    prompts = ["\n", "ROMEO:\n", "The "] if args.samples else []
    for i in range(args.samples):
        prompt = prompts[i % len(prompts)]
        text, _ = generate(model, prompt, max_new_chars=args.sample_chars, temperature=args.temperature, seed=i)
        print(f"\n--- sample {i + 1} (prompt {prompt!r}, temperature {args.temperature}, seed {i}) ---\n{prompt}{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
