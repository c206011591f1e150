"""The app's memory under many anonymous callers: RSS of `python app.py` while N calls arrive, each
without a session (half POST /chat/stream, which makes a new server-named session each time; half a
direct POST /gradio_api/run/chat, which keeps none). Sessions are bounded (ui/actions.py,
MAX_SESSIONS and MAX_SESSIONS_BYTES), so RSS levels off once the bound is reached.

    python benchmarks/anonymous_sessions.py [--calls 10000] [--every 1000] [--workers 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from appserver import start_app
from capacity import rss_mb


def call(client: httpx.Client, url: str, i: int) -> int:
    if i % 2:
        body = {"data": ["ROMEO:", 0.8, 40, 1.0, 1, i, "", True]}
        return client.post(url + "gradio_api/run/chat", json=body).status_code
    with client.stream("POST", url + "chat/stream", json={"message": "ROMEO:", "max_chars": 1, "seed": i}) as r:
        for _ in r.iter_lines():
            pass
        return r.status_code


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--every", type=int, default=1000, help="read RSS after this many calls")
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args()
    server, url, _ = start_app()
    try:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
        print(f"{'calls':>6} {'RSS MB':>8} {'non-200':>8} {'s':>6}")
        print(f"{0:>6} {rss_mb(server.pid):>8.1f} {0:>8} {0:>6.0f}")
        start, failed = time.perf_counter(), 0
        with httpx.Client(timeout=120) as client, ThreadPoolExecutor(args.workers) as pool:
            for done in range(0, args.calls, args.every):
                codes = list(pool.map(lambda i: call(client, url, i), range(done, done + args.every)))
                failed += sum(c != 200 for c in codes)
                print(f"{done + args.every:>6} {rss_mb(server.pid):>8.1f} {failed:>8} {time.perf_counter() - start:>6.0f}",
                      flush=True)
    finally:
        server.kill()


if __name__ == "__main__":
    main()
