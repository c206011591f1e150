"""App latency: cold start, time to the first streamed character, turn latency under load.

    python benchmarks/app_latency.py [--sessions 8 --turns 3 --max-chars 200]

Starts `python app.py` on a free port as a user would (bundled model, offline), measures the time
until the page answers, then the time from sending a message to the first streamed piece of the
reply (median of 5, one client), then p50/p95 whole-turn latency with --sessions concurrent
gradio_client sessions each sending --turns messages. Set BATCHING=0 to serve without the batching
decoder (each reply stepping alone), for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from appserver import percentile, start_app  # noqa: E402

LINES = ["ROMEO:\nWhat light through yonder window breaks?", "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?",
         "KING RICHARD III:\nNow is the winter of our discontent.", "HAMLET:\nTo be, or not to be."]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--max-chars", type=int, default=200)
    args = p.parse_args(argv)
    from gradio_client import Client

    server, url, cold = start_app()
    try:
        print(f"cold start until the page serves: {cold:.1f} s")

        client = Client(url, verbose=False)
        firsts = []
        for i in range(5):
            t0 = time.perf_counter()
            job = client.submit(LINES[i % len(LINES)], 0.8, 40, 1.0, args.max_chars, i, "\\n\\n", True, api_name="/chat")
            for _ in job:
                firsts.append(time.perf_counter() - t0)
                break
            job.result()
        print(f"time to the first streamed piece: median {statistics.median(firsts) * 1000:.0f} ms "
              f"(runs: {', '.join(f'{f * 1000:.0f}' for f in firsts)} ms)")

        singles = []
        for i in range(5):
            t0 = time.perf_counter()
            text = client.predict(LINES[i % len(LINES)], 0.8, 40, 1.0, 300, i, "", True, api_name="/chat")
            singles.append(len(text) / (time.perf_counter() - t0))
        print(f"one user, 300-character replies (no stop): median {statistics.median(singles):,.0f} chars/s "
              f"(runs: {', '.join(f'{r:,.0f}' for r in singles)})")

        latencies, errors, lock = [], [], threading.Lock()

        def session(k):
            try:
                c = Client(url, verbose=False)
                for t in range(args.turns):
                    t0 = time.perf_counter()
                    c.predict(LINES[(k + t) % len(LINES)], 0.8, 40, 1.0, args.max_chars, k * 100 + t, "\\n\\n", True,
                              api_name="/chat")
                    with lock:
                        latencies.append(time.perf_counter() - t0)
            except Exception as err:  # counted and reported
                with lock:
                    errors.append(repr(err))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=session, args=(k,)) for k in range(args.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        print(f"{args.sessions} concurrent sessions x {args.turns} turns (max {args.max_chars} chars): "
              f"p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s per turn, "
              f"{len(errors)} errors, {wall:.1f} s wall")
        for e in errors[:3]:
            print("  error:", e)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
