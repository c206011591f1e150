"""Long messages next to short chats: do four 20,000-character messages hold everyone else up?

    python benchmarks/long_messages.py [--long 4 --long-chars 20000 --short 16 --reps 3] [--root CHECKOUT]

The bundled Shakespeare model served as the app serves it (int8 steps where its int8.json allows,
ONNX Runtime with STEP_THREADS' default threads, one torch thread, one batching decoder), and
every chat handled as the app's reply handler handles it (`ChatApp._write`): on one asyncio event
loop, the reply read without blocking the loop (`ChatSession.wake`: WAIT, then the decoder wakes
the reader; after SLOW, on in a worker thread), then, in a worker thread, the reply a fresh memory
writes (`ChatSession.fresh_reply`, the app's default).

Per repetition:
- *unloaded*: --short chats start at once, each a new session sending a 40-character message
  and reading a 200-character reply (no stop sequence); time from the send to its first piece;
  three such crowds, one after another;
- *loaded*: --long sessions, each after a short first turn (so that the memory is carried, as in a
  conversation: the message is then also read from a fresh memory for the memory benefit, and
  read a third time by the fresh reply), send a --long-chars message and read a 200-character
  reply; as soon as the decoder holds them, crowds of --short chats as above, one after another,
  until every long chat is done (its reply, its measures and its fresh reply).

Prints the p50 / p95 of the short chats' first pieces, unloaded and loaded (over every loaded
crowd), the long chats' first piece and end, each repetition and their medians. --root runs
another checkout's lstm_model (the code before a change, say) with this script.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from appserver import percentile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = "ROMEO:\nWhat light through yonder window?"  # 40 characters
FIRST = "JULIET:\nGood night, good night!"
PASSAGE = ("ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
           "Arise, fair sun, and kill the envious moon,\nWho is already sick and pale with grief,\n"
           "That thou her maid art far more fair than she.\n\n")
REPLY_CHARS = 200


def long_message(chars: int) -> str:
    return (PASSAGE * (chars // len(PASSAGE) + 1))[:chars]


async def chat(session, message: str) -> tuple[float, float]:
    """One turn as the app's handler runs it; returns (seconds to the first piece, to the end)."""
    from ui.actions import unblocked, waker  # the app's own, from the --root checkout

    loop = asyncio.get_running_loop()
    start, first = time.perf_counter(), None
    wake, event = waker()
    session.wake = wake
    try:
        reply = session.send(message)
    finally:
        session.wake = None
    async for _ in unblocked(reply, event):
        if first is None:
            first = time.perf_counter() - start
    await loop.run_in_executor(None, session.fresh_reply, -1)
    return first, time.perf_counter() - start


async def crowd(serving, n: int) -> list[float]:
    from lstm_model.session import ChatSession

    sessions = [ChatSession(serving.model, serving=serving, seed=k, max_new_chars=REPLY_CHARS, stop=None)
                for k in range(n)]
    return [first for first, _ in await asyncio.gather(*(chat(s, SHORT) for s in sessions))]


async def repetition(serving, args) -> dict:
    from lstm_model.session import ChatSession

    unloaded = []
    for _ in range(3):
        unloaded += await crowd(serving, args.short)
    longs = []
    for k in range(args.long):
        session = ChatSession(serving.model, serving=serving, seed=100 + k, max_new_chars=REPLY_CHARS, stop=None)
        await chat(session, FIRST)
        longs.append(session)
    decoder = serving.decoder
    tasks = [asyncio.create_task(chat(s, long_message(args.long_chars))) for s in longs]
    while sum(len(r.feed) > 1000 for r in decoder._active) < args.long:  # until the decoder holds them
        await asyncio.sleep(0.01)
    loaded, crowds = [], 0
    while not all(t.done() for t in tasks):
        loaded += await crowd(serving, args.short)
        crowds += 1
    done = [t.result() for t in tasks]
    return {"unloaded": (percentile(unloaded, 0.5), percentile(unloaded, 0.95)),
            "loaded": (percentile(loaded, 0.5), percentile(loaded, 0.95)), "crowds": crowds,
            "long_first": statistics.median(f for f, _ in done), "long_end": statistics.median(e for _, e in done)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--long", type=int, default=4)
    p.add_argument("--long-chars", type=int, default=20_000)
    p.add_argument("--short", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--root", default=ROOT, help="the checkout whose lstm_model runs (default: this one)")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.root))
    import torch

    from lstm_model.hub import load_int8_check, load_model
    from lstm_model.serving import Serving, default_step_threads

    torch.set_num_threads(1)  # as app.py
    serving = Serving(load_model(None), int8="auto", int8_check=load_int8_check(None), batching=True,
                      threads=default_step_threads(), max_batch=256)
    print(f"lstm_model from {os.path.abspath(args.root)}; {serving.describe()}; {args.long} x {args.long_chars:,} "
          f"characters next to crowds of {args.short} x {len(SHORT)}-character messages", flush=True)

    async def run():
        asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(64))
        await crowd(serving, 2)  # warm up
        results = []
        for rep in range(args.reps):
            r = await repetition(serving, args)
            results.append(r)
            print(f"  rep {rep + 1}: first piece p50 / p95 unloaded {r['unloaded'][0] * 1e3:,.0f} / "
                  f"{r['unloaded'][1] * 1e3:,.0f} ms, loaded {r['loaded'][0] * 1e3:,.0f} / "
                  f"{r['loaded'][1] * 1e3:,.0f} ms ({r['crowds']} crowds); long messages: first piece "
                  f"{r['long_first']:.1f} s, done {r['long_end']:.1f} s", flush=True)
        return results

    results = asyncio.run(run())

    def med(key, i=None):
        return statistics.median(r[key] if i is None else r[key][i] for r in results)

    print(f"median of {len(results)}: first piece p50 / p95 unloaded {med('unloaded', 0) * 1e3:,.0f} / "
          f"{med('unloaded', 1) * 1e3:,.0f} ms, loaded {med('loaded', 0) * 1e3:,.0f} / "
          f"{med('loaded', 1) * 1e3:,.0f} ms; long messages: first piece {med('long_first'):.1f} s, done "
          f"{med('long_end'):.1f} s")
    serving.close(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
