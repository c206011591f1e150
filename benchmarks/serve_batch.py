"""Serving throughput with continuous batching (lstm_model/batching.py).

    python benchmarks/serve_batch.py [--hidden 512 --chars 300 --sessions 1 4 16 32 --reps 9 --steps fp32 int8 --engine auto]

For each N, N sessions each generate --chars characters (no stop sequence, fixed seeds) on a
2x512 model, each from the state after the prompt "ROMEO:\n" (read before the timing, as the app
reads a message before the reply): *together* through one Decoder (each session a thread consuming its own stream,
their steps batched in the decoder's thread), and *one after another*, the same N sessions each
stepping alone in a worker thread, as the app's sessions do without batching. Prints aggregate
chars/s of both, per-session chars/s when together, and together / one after another. The goal:
16 sessions together >= 8x one after another. First, the one-user check: one session through the
decoder against the same session stepping alone, --one-user-pairs times back to back (the goal:
within 10%).

The machine is shared and its speed drifts by up to 2x within a minute, so each repetition runs
half the sessions one after another, then all together, then the other half one after another,
and the ratio is taken per repetition; the figures are medians over --reps.
--steps measures fp32 and/or int8 generation steps, --engine the step's engine (ONNX Runtime or
torch), the same on both sides of each ratio (two lstm_model.serving.Serving objects that differ
only in batching). Torch runs with one thread and ONNX Runtime's steps with the app's
STEP_THREADS default (2, or the CPUs if fewer), as in app.py: in threads other than the main one, a
second OpenMP thread makes the torch step slower, not faster; ONNX Runtime's own pool is faster
with two (docs/serving.md, "Threads").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from lstm_model import CharLSTM  # noqa: E402
from lstm_model.generate import generate, stream  # noqa: E402
from lstm_model.serving import Serving, default_step_threads  # noqa: E402

VOCAB = [chr(c) for c in range(32, 127)] + ["\n"]
PROMPT = "ROMEO:\n"


def prompt_state(serving: Serving):
    """The state after PROMPT, read with the serving's own step."""
    return generate(serving.model, PROMPT, max_new_chars=0, serving=serving)[1]


def together(batched: Serving, n, chars) -> float:
    """n sessions at once through `batched` (a Serving with batching); aggregate chars/s."""
    barrier = threading.Barrier(n + 1)

    def session(k):
        s = stream(batched.model, "", prompt_state(batched), max_new_chars=chars, temperature=0.9, top_k=40, seed=k,
                   serving=batched)
        barrier.wait()
        for _ in s:
            pass

    threads = [threading.Thread(target=session, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return n * chars / (time.perf_counter() - start)


def one_after_another(alone: Serving, sessions, chars) -> float:
    """Sessions `sessions` (their seeds) in turn, each stepping alone in a worker thread (as the app
    without batching); returns the seconds taken."""
    result = []

    def work():
        state = prompt_state(alone)
        start = time.perf_counter()
        for k in sessions:
            for _ in stream(alone.model, "", state, max_new_chars=chars, temperature=0.9, top_k=40, seed=k,
                            serving=alone):
                pass
        result.append(time.perf_counter() - start)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return result[0]


def paired(alone, batched, n, chars) -> tuple[float, float]:
    """One repetition: the first half of the sessions one after another, all n together, then the
    second half one after another (so both see the same moment of a drifting machine).
    Returns (together, one after another) aggregate chars/s."""
    first = one_after_another(alone, range(n // 2), chars)
    rate = together(batched, n, chars)
    second = one_after_another(alone, range(n // 2, n), chars)
    return rate, n * chars / (first + second)


def one_user(alone, batched, chars, pairs) -> tuple[float, float, float]:
    """One session through the decoder vs stepping alone, `pairs` times back to back (seeds vary).
    Returns the medians (alone chars/s, decoder chars/s, decoder / alone)."""
    runs = []
    for k in range(pairs):
        runs.append((chars / one_after_another(alone, [k], chars), together(batched, 1, chars)))
    return (statistics.median(a for a, _ in runs), statistics.median(b for _, b in runs),
            statistics.median(b / a for a, b in runs))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--chars", type=int, default=300)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--one-user-pairs", type=int, default=15,
                   help="back-to-back pairs for the one-user check (decoder vs alone); 0 to skip")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as app.py sets them (default 1)")
    p.add_argument("--step-threads", type=int, default=default_step_threads(),
                   help="ONNX Runtime's threads for the steps, as app.py sets them (default: STEP_THREADS's, 2 or the CPUs)")
    p.add_argument("--engine", choices=["auto", "onnxruntime", "torch"], default="auto",
                   help="the step's engine (default auto: ONNX Runtime where installed)")
    p.add_argument("--steps", nargs="+", choices=["fp32", "int8"], default=["fp32", "int8"],
                   help="generation steps to measure: fp32 and/or int8; default both")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.engine == "torch" and "int8" in args.steps:
        p.error("int8 steps run on ONNX Runtime: with --engine torch, measure --steps fp32")
    torch.manual_seed(0)
    model = CharLSTM(vocab=VOCAB, embed_dim=64, hidden_size=args.hidden, num_layers=2, dropout=0.0).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, steps on {Serving(model, engine=args.engine).engine}, "
          f"2x{args.hidden} model, {args.chars} characters per session, medians of {args.reps}")
    for steps in args.steps:
        int8 = "on" if steps == "int8" else "off"
        alone = Serving(model, engine=args.engine, int8=int8, threads=args.step_threads)
        batched = Serving(model, engine=args.engine, int8=int8, threads=args.step_threads, batching=True)
        together(batched, 2, 50)  # warm up (builds both steps)
        one_after_another(alone, [0], 50)
        if args.one_user_pairs:
            rate_alone, rate_batched, ratio = one_user(alone, batched, args.chars, args.one_user_pairs)
            print(f"{steps} one user: alone {rate_alone:,.0f} chars/s, through the decoder {rate_batched:,.0f} chars/s, "
                  f"decoder / alone = {ratio:.2f} (median of {args.one_user_pairs} back-to-back pairs)", flush=True)
        for n in args.sessions:
            runs = [paired(alone, batched, n, args.chars) for _ in range(args.reps)]
            rate = statistics.median(t for t, _ in runs)
            serial = statistics.median(s for _, s in runs)
            ratio = statistics.median(t / s for t, s in runs)
            print(f"{steps} {n:>3} sessions: together {rate:8,.0f} chars/s aggregate ({rate / n:6,.0f} per session); "
                  f"one after another {serial:6,.0f} chars/s; together / one after another = {ratio:5.1f}x "
                  f"(range {min(t / s for t, s in runs):.1f}-{max(t / s for t, s in runs):.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
