"""Sessions under load: many concurrent gradio_client sessions against one app process.

    python benchmarks/load.py [--sessions 32 --turns 5 --max-chars 120]

Starts `python app.py` on a free port, runs --sessions concurrent clients of --turns chat turns
each (every session's messages carry a marker unique to it), then checks that no session's
memory report holds another session's marker or lacks its own turns. Prints errors, p50/p95 turn
latency and the server's peak resident memory (VmHWM). Then the model picker under churn: one
client switches models --churn times through `/model`, cycling through many spellings of the two
bundled folders, with a turn after each switch; prints the server's resident memory and threads
before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from appserver import percentile, start_app  # noqa: E402


def proc_status(pid: int, field: str) -> int:
    """A number from /proc/<pid>/status (VmHWM and VmRSS in KB, Threads)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def peak_rss_mb(pid: int) -> float:
    return proc_status(pid, "VmHWM") / 1024


def picker_churn(url: str, pid: int, switches: int) -> None:
    """Switch models `switches` times through /model, each spelled another way, a turn after each."""
    from gradio_client import Client

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spellings = []
    for name in ("shakespeare", "timemachine"):
        folder = os.path.join(root, "assets", name)
        spellings += [name, folder, folder + "/", folder + "//", os.path.join(folder, "."), f"assets/{name}",
                      f"./assets/{name}", f"assets/{name}/", f"assets/../assets/{name}"]
    c = Client(url, verbose=False)
    c.predict("ROMEO:\nHello.", api_name="/chat")
    before = proc_status(pid, "VmRSS") / 1024, proc_status(pid, "Threads")
    for i in range(switches):
        c.predict(spellings[i % len(spellings)], api_name="/model")
        c.predict("ROMEO:\nHello.", 0.8, 40, 1.0, 60, i, "\\n\\n", True, api_name="/chat")
    after = proc_status(pid, "VmRSS") / 1024, proc_status(pid, "Threads")
    print(f"model picker, {switches} switches over {len(spellings)} spellings of 2 folders: server RSS "
          f"{before[0]:.0f} -> {after[0]:.0f} MB, threads {before[1]} -> {after[1]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=32)
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--max-chars", type=int, default=120)
    p.add_argument("--churn", type=int, default=36, help="model switches through /model after the sessions (0: none)")
    args = p.parse_args(argv)
    from gradio_client import Client

    server, url, _ = start_app()
    try:
        rss_idle = peak_rss_mb(server.pid)
        latencies, errors, reports, lock = [], [], {}, threading.Lock()

        def session(k):
            marker = f"QX{k:03d}"
            try:
                c = Client(url, verbose=False)
                for t in range(args.turns):
                    t0 = time.perf_counter()
                    c.predict(f"ROMEO {marker}:\nTurn {t} of session {marker}.", 0.8, 40, 1.0, args.max_chars,
                              k * 100 + t, "\\n\\n", True, api_name="/chat")
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                report = c.predict(api_name="/memory")
                with lock:
                    reports[k] = report
            except Exception as err:  # counted and reported
                with lock:
                    errors.append(f"session {k}: {err!r}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=session, args=(k,)) for k in range(args.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        leaks = 0
        for k, report in reports.items():
            mine = f"QX{k:03d}"
            texts = [turn["user"] + turn["reply"] for turn in report["turns"]]
            if len(report["turns"]) != args.turns or not all(mine in x for x in (t["user"] for t in report["turns"])):
                leaks += 1
            others = {f"QX{j:03d}" for j in range(args.sessions)} - {mine}
            if any(o in x for x in texts for o in others):
                leaks += 1
        print(f"{args.sessions} concurrent sessions x {args.turns} turns (max {args.max_chars} chars/reply): "
              f"{len(errors)} errors, {leaks} sessions with foreign or missing turns")
        print(f"turn latency p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s; "
              f"{len(latencies)} turns in {wall:.1f} s")
        print(f"server peak RSS: {peak_rss_mb(server.pid):.0f} MB (after start-up: {rss_idle:.0f} MB)")
        for e in errors[:5]:
            print("  error:", e)
        if args.churn:
            picker_churn(url, server.pid, args.churn)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
