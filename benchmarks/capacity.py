"""A crowd arriving at once: N chats start at the same moment, each streaming one reply.

    python benchmarks/capacity.py [--sessions 1 16 64 128 256] [--chars 300 2000] [--decoder] [--floor] [--plain]
    python benchmarks/capacity.py --model babi --message "Where is Mary?" --sessions 16 --chars 20 --repeat 5

Starts `python app.py` (bundled Shakespeare model, int8 steps on ONNX Runtime, as served by
default) on a free port and, for every (N, reply length), fires N `/chat` calls at once from one
asyncio process speaking Gradio's HTTP call API (POST /gradio_api/call/chat, then its event
stream), so that the client costs the server's two cores next to nothing. Each reply has no stop
sequence, so it is exactly the asked length. Per configuration it prints:

- first piece p50 / p95: from the call to the first streamed text of the reply;
- slowest 5%: the 5th percentile over sessions of characters per second while streaming (first
  piece to last); reading speed is about 30 chars/s;
- aggregate: all characters / (last reply done - first call);
- errors: failed calls, error events, "busy" refusals and replies of the wrong length;
- peak RSS: the server's resident memory, sampled every 50 ms during the configuration.

With --repeat K each configuration runs K times in a row and the figures are medians (errors:
the sum).

With --decoder, after the app has stopped, the decoder alone at the same batch size: N replies of
the same length through one `Serving` of the same model (int8, batched), each read by a thread,
as `benchmarks/serve_batch.py` measures it; and the app's aggregate as a share of it. Then, for
each N, the decoder's own time to a crowd's first characters: N replies submitted at once, each
reading the benchmark's message first (`decoder_first_pieces`): the floor under the app's first
pieces that no front end removes.

With --plain, the same crowd through the app's plain stream instead of Gradio's queue (POST
/chat/stream, ui/stream.py: the same chat action, its Server-Sent Events read as they come).

With --floor, the same crowd against Gradio alone instead of the app (`benchmarks/floor_app.py`:
the same endpoint, queue and threads, the reply yielded at once, no model): the framework's own
time to a crowd's first pieces on this machine, under which no change to the app can go.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from appserver import percentile, start_app  # noqa: E402

MESSAGE = "ROMEO:\nWhat light through yonder window breaks?"


async def _request(host: str, port: int, method: str, path: str, body: bytes = b""):
    """One HTTP/1.1 request on its own connection: (reader, status, headers). A few lines of
    asyncio instead of an HTTP client library keeps the client's own CPU time small."""
    reader, writer = await asyncio.open_connection(host, port)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    return reader, writer, status, headers


async def _body_lines(reader, headers):
    """The lines of a response body, chunked or not."""
    if headers.get("transfer-encoding") == "chunked":
        pending = b""
        while (size := int((await reader.readline()).strip() or b"0", 16)):
            pending += await reader.readexactly(size)
            await reader.readline()
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode()
        if pending:
            yield pending.decode()
    else:
        while line := await reader.readline():
            yield line.decode().rstrip("\n")


async def timed(chars: int, talk) -> dict:
    """One call: `await talk(out)` makes it, filling out["text"] and out["first"] (the time of the
    first streamed text) or out["error"]; here the start and end times, and a reply of the wrong
    length or an exception counted as an error."""
    out = {"start": time.perf_counter(), "first": None, "end": None, "text": "", "error": None}
    try:
        await talk(out)
    except Exception as err:  # counted
        out["error"] = repr(err)[:200]
    out["end"] = time.perf_counter()
    if out["error"] is None and len(out["text"]) != chars:
        out["error"] = f"reply of {len(out['text'])} characters, not {chars}"
    return out


async def one_chat(url: str, chars: int, seed: int) -> dict:
    """One /chat call through Gradio's call API; times of the call, first piece and end."""
    from urllib.parse import urlparse

    where = urlparse(url)

    async def talk(out):
        body = json.dumps({"data": [MESSAGE, 0.8, 40, 1.0, chars, seed, "", True]}).encode()
        reader, writer, status, headers = await _request(where.hostname, where.port, "POST", "/gradio_api/call/chat", body)
        answer = await reader.readexactly(int(headers["content-length"]))
        writer.close()
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer[:100]!r}")
        event_id = json.loads(answer)["event_id"]
        reader, writer, status, headers = await _request(where.hostname, where.port, "GET",
                                                         f"/gradio_api/call/chat/{event_id}")
        event = None
        async for line in _body_lines(reader, headers):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                if event in ("generating", "complete"):
                    value = json.loads(data)
                    text = value[0] if isinstance(value, list) and value else ""
                    if text and out["first"] is None:
                        out["first"] = time.perf_counter()
                    out["text"] = text or out["text"]
                    if event == "complete":
                        break
                elif event == "error":
                    out["error"] = data[:200]
                    break
        writer.close()

    return await timed(chars, talk)


async def one_plain_chat(url: str, chars: int, seed: int) -> dict:
    """One POST /chat/stream: times of the call, first piece and end (the `done` event)."""
    from urllib.parse import urlparse

    where = urlparse(url)

    async def talk(out):
        # no session named: each call a new session, as each /chat call of the Gradio client is (a first
        # turn, whose fresh-memory reply is the reply itself)
        body = json.dumps({"message": MESSAGE, "temperature": 0.8, "top_k": 40, "max_chars": chars, "seed": seed,
                           "stop": ""}).encode()
        reader, writer, status, headers = await _request(where.hostname, where.port, "POST", "/chat/stream", body)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {(await reader.read(200))!r}")
        event = None
        async for line in _body_lines(reader, headers):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event is None:
                    if data["text"] and out["first"] is None:
                        out["first"] = time.perf_counter()
                    out["text"] += data["text"]
                elif event == "done":
                    break
                else:
                    out["error"] = str(data)[:200]
                    break
                event = None
        writer.close()

    return await timed(chars, talk)


async def crowd(url: str, n: int, chars: int, plain: bool = False) -> list[dict]:
    call = one_plain_chat if plain else one_chat
    return await asyncio.gather(*(call(url, chars, seed) for seed in range(n)))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def summarise(results: list[dict], chars: int) -> dict:
    ok = [r for r in results if r["error"] is None]
    firsts = [(r["first"] - r["start"]) * 1000 for r in ok if r["first"]]
    rates = [chars / max(r["end"] - r["first"], 1e-9) for r in ok if r["first"]]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"first_p50": percentile(firsts, 0.5), "first_p95": percentile(firsts, 0.95),
            "slowest5": percentile(rates, 0.05), "aggregate": len(ok) * chars / span,
            "errors": len(results) - len(ok), "examples": [r["error"] for r in results if r["error"]][:3]}


def bundled_serving(n: int):
    """The bundled model and one batched Serving of it (int8 where its check allows, the app's step
    threads) with room for n rows, torch on one thread: the decoder as the app runs it."""
    import torch

    from lstm_model.hub import load_int8_check, load_model
    from lstm_model.serving import Serving, default_step_threads

    torch.set_num_threads(1)
    model = load_model()
    return model, Serving(model, engine="auto", int8="auto", int8_check=load_int8_check(), batching=True,
                          threads=default_step_threads(), max_batch=max(64, n))


def decoder_alone(n: int, chars: int) -> float:
    """Aggregate chars/s of n replies through one batched Serving of the bundled model (int8),
    measured as serve_batch.py measures it (`together`)."""
    from serve_batch import together

    _, serving = bundled_serving(n)
    try:
        return together(serving, n, chars)
    finally:
        serving.close(wait=True)


def decoder_first_pieces(n: int, repeat: int = 3) -> tuple[float, float]:
    """The decoder's own floor under a crowd's first pieces: n replies submitted at once through one
    batched Serving of the bundled model (int8), each reading MESSAGE and the turn separator first,
    as a chat turn is fed, each in its own thread; median over `repeat` crowds of the p50 and p95 ms
    from the release of the crowd to each reply's first character. No HTTP, no session."""
    from lstm_model.generate import stream

    model, serving = bundled_serving(n)
    rows = []
    try:
        for _ in range(repeat + 1):  # the first crowd builds the int8 step: not counted
            barrier, firsts = threading.Barrier(n + 1), []

            def reply(k):
                barrier.wait()
                t0 = time.perf_counter()
                pieces = iter(stream(model, MESSAGE + model.turn_separator, None, max_new_chars=20, temperature=0.8,
                                     top_k=40, seed=k, serving=serving))
                next(pieces)
                firsts.append((time.perf_counter() - t0) * 1000)
                for _ in pieces:
                    pass

            threads = [threading.Thread(target=reply, args=(k,)) for k in range(n)]
            for t in threads:
                t.start()
            barrier.wait()
            for t in threads:
                t.join()
            rows.append((percentile(firsts, 0.5), percentile(firsts, 0.95)))
    finally:
        serving.close(wait=True)
    return statistics.median(r[0] for r in rows[1:]), statistics.median(r[1] for r in rows[1:])


def main(argv=None) -> int:
    global MESSAGE  # --message: what every chat of the crowd sends
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 16, 64, 128, 256])
    p.add_argument("--chars", type=int, nargs="+", default=[300, 2000])
    p.add_argument("--decoder", action="store_true", help="also measure the decoder alone at each batch size")
    p.add_argument("--app-root", default=None, help="serve the app of this checkout (e.g. an older revision)")
    p.add_argument("--repeat", type=int, default=1, help="run each configuration this many times; print medians")
    p.add_argument("--floor", action="store_true", help="Gradio alone (benchmarks/floor_app.py) instead of the app")
    p.add_argument("--plain", action="store_true", help="the app's plain stream (POST /chat/stream) instead of /chat")
    p.add_argument("--model", help="the model the app serves (its MODEL; default the bundled default)")
    p.add_argument("--message", help=f"the message every chat sends (default {MESSAGE!r})")
    args = p.parse_args(argv)
    MESSAGE = args.message or MESSAGE
    where = {"root": args.app_root} if args.app_root else {}
    if args.model:
        where["env"] = {"MODEL": args.model}
    if args.floor:
        where["script"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor_app.py")
    server, url, _ = start_app(**where)
    rows = []
    try:
        asyncio.run(crowd(url, 1, 50, args.plain))  # warm-up: the first call builds the int8 step
        for chars in args.chars:
            for n in args.sessions:
                peak, stop = [rss_mb(server.pid)], threading.Event()

                def sample(peak, stop):
                    while not stop.wait(0.05):
                        peak.append(rss_mb(server.pid))

                sampler = threading.Thread(target=sample, args=(peak, stop), daemon=True)
                sampler.start()
                runs = []
                for _ in range(args.repeat):
                    runs.append(summarise(asyncio.run(crowd(url, n, chars, args.plain)), chars))
                    time.sleep(0.5)
                stop.set()
                sampler.join()
                row = {key: statistics.median(r[key] for r in runs) for key in ("first_p50", "first_p95", "slowest5", "aggregate")}
                row |= {"errors": sum(r["errors"] for r in runs), "examples": sum((r["examples"] for r in runs), [])[:3],
                        "n": n, "chars": chars, "rss": max(peak)}
                rows.append(row)
                print(f"N={n:>3} x {chars} chars: first piece p50 {row['first_p50']:,.0f} ms, p95 {row['first_p95']:,.0f} ms; "
                      f"slowest 5% {row['slowest5']:,.0f} chars/s; aggregate {row['aggregate']:,.0f} chars/s; "
                      f"errors {row['errors']}; peak RSS {row['rss']:,.0f} MB", flush=True)
                for e in row["examples"]:
                    print("   error:", e)
                time.sleep(1.0)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.decoder:
        for row in rows:
            if row["n"] > 1:
                alone = decoder_alone(row["n"], row["chars"])
                print(f"decoder alone, N={row['n']} x {row['chars']}: {alone:,.0f} chars/s; the app reached "
                      f"{row['aggregate'] / alone:.0%} of it", flush=True)
        for n in sorted({row["n"] for row in rows}):
            p50, p95 = decoder_first_pieces(n)
            print(f"decoder alone, N={n} arriving at once: first characters p50 {p50:,.0f} ms, p95 {p95:,.0f} ms "
                  "(the messages read by the decoder; no HTTP)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
