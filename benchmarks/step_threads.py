"""How fast one int8 generation step of the bundled model runs on 1 and 2 ONNX Runtime threads.

    python benchmarks/step_threads.py [--rows 1 16 64 128] [--reps 7]

For each batch size (rows stepped at once, as the batching decoder steps a crowd), the step on one
thread, on two, and on two with ONNX Runtime's thread spinning turned off
(`session.intra_op.allow_spinning` 0: its threads sleep at once after each run instead of
spinning briefly for the next), interleaved within each repetition so that a drift of the
machine's speed falls on all three alike; medians over --reps, in ms a step. What it decides:
the app's STEP_THREADS default (lstm_model.serving.default_step_threads; docs/serving.md,
"Threads"). Torch itself keeps one thread, as in app.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from lstm_model.hub import load_model  # noqa: E402
from lstm_model.step import OrtStep  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or repo id (default: the bundled model)")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64, 128])
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.model) if args.model else load_model()
    no_spin = OrtStep(model, int8=True, threads=2, spinning=False)
    steps = {"1 thread": OrtStep(model, int8=True, threads=1), "2 threads": OrtStep(model, int8=True, threads=2),
             "2 threads, no spinning": no_spin}
    print(f"2 x {model.hidden_size} model, int8 steps on ONNX Runtime, ms a step, medians of {args.reps}")
    print("| rows | " + " | ".join(steps) + " |")
    print("|---" * (len(steps) + 1) + "|")
    for rows in args.rows:
        state = model.begin_state(rows)
        ids = torch.zeros(rows, dtype=torch.long)
        times: dict[str, list[float]] = {name: [] for name in steps}
        n = max(5, 400 // rows)  # about the same work per measurement at every size
        for _ in range(args.reps):
            for name, step in steps.items():
                step.step(ids, state)  # one untimed step: the pool's threads awake
                t0 = time.perf_counter()
                for _ in range(n):
                    step.step(ids, state)
                times[name].append((time.perf_counter() - t0) / n * 1000)
        print(f"| {rows} | " + " | ".join(f"{statistics.median(v):.2f}" for v in times.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
