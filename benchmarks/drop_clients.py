"""Clients that leave mid-reply: what a dropped reply costs the server.

    python benchmarks/drop_clients.py [--clients 100 --read 80 --max-chars 5000 --reps 3] [--root CHECKOUT]

Two crowds of --clients chats at once, each a new `ChatSession` (bundled Shakespeare model,
served as the app serves it: int8 steps where its int8.json allows, ONNX Runtime with
STEP_THREADS' default threads, one torch thread, batching), each chat read by a thread of its own:

- *drop*: asks for a reply of --max-chars characters (no stop sequence), reads it until it has
  --read characters, then closes the reply iterator, as the app's handler does when its client
  disconnects (`reply.close()`), and forgets it;
- *short*: asks for as many characters as the drop crowd's readers got on average (a dropping
  reader gets whole pieces, so a little more than --read) and reads them all.

Each crowd is timed from the first message to the decoder's thread having nothing left to step
(`Serving.close(wait=True)`): the process's CPU seconds (`time.process_time`, every thread), the
decoder's steps and the characters it wrote, and the wall time. The goal: dropping costs no more
than the short replies. Medians of --reps, the two crowds alternating. --root runs another
checkout's lstm_model (the code before a change, say) with this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESSAGE = "ROMEO:\nWhat light through yonder window breaks?"


def crowd(serving, clients: int, read: int, max_chars: int, drop: bool) -> dict:
    """One crowd; returns its CPU seconds, decoder steps and characters, wall seconds and the
    characters its readers got."""
    from lstm_model.session import ChatSession

    decoder = serving.decoder
    got = [0] * clients
    start = threading.Barrier(clients + 1)

    def client(k):
        session = ChatSession(serving.model, serving=serving, seed=k, stop=None,
                              max_new_chars=max_chars if drop else read)
        start.wait()
        reply = session.send(MESSAGE)
        for piece in reply:
            got[k] += len(piece)
            if drop and got[k] >= read:
                reply.close()  # the client has gone
                break

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    steps, rows = decoder.steps, decoder.rows
    start.wait()
    cpu, wall = time.process_time(), time.perf_counter()
    for t in threads:
        t.join()
    serving.close(wait=True)  # until the decoder has nothing left to step
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "steps": decoder.steps - steps,
            "chars": decoder.rows - rows, "read": sum(got) / clients}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--read", type=int, default=80, help="characters a dropping client reads at least")
    p.add_argument("--max-chars", type=int, default=5000, help="the length a dropping client asks for")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--root", default=ROOT, help="the checkout whose lstm_model runs (default: this one)")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.root))
    import torch

    from lstm_model.hub import load_int8_check, load_model
    from lstm_model.serving import Serving, default_step_threads

    torch.set_num_threads(1)  # as app.py
    model = load_model(None)
    serving = Serving(model, int8="auto", int8_check=load_int8_check(None), batching=True,
                      threads=default_step_threads(), max_batch=256)
    print(f"lstm_model from {os.path.abspath(args.root)}; {serving.describe()}; {args.clients} clients, "
          f"reading at least {args.read} of {args.max_chars} characters (drop) or asking what those got (short)",
          flush=True)
    crowd(serving, 4, 20, 40, drop=False)  # warm up
    runs = {"drop": [], "short": []}
    for rep in range(args.reps):
        drop = crowd(serving, args.clients, args.read, args.max_chars, drop=True)
        short = crowd(serving, args.clients, round(drop["read"]), args.max_chars, drop=False)
        for kind, r in (("drop", drop), ("short", short)):
            runs[kind].append(r)
            print(f"  {kind:5} rep {rep + 1}: CPU {r['cpu']:6.2f} s, wall {r['wall']:6.2f} s, decoder steps "
                  f"{r['steps']:6,}, characters written {r['chars']:7,}, read per client {r['read']:.0f}", flush=True)
    for kind, rs in runs.items():
        med = {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        print(f"{kind:5} median of {len(rs)}: CPU {med['cpu']:.2f} s, wall {med['wall']:.2f} s, decoder steps "
              f"{med['steps']:,.0f}, characters written {med['chars']:,.0f}, read per client {med['read']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
