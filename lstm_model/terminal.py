"""The command-line sampler and terminal chat (like char-rnn's sample.lua):

    python -m lstm_model.generate --model assets/shakespeare --prompt "ROMEO:" --length 500 --temperature 0.8 --top-k 40 --seed 1
    python -m lstm_model.generate --chat     # a terminal chat carrying the state; /reset /undo /retry /memory /quit

(`python -m lstm_model.terminal` is the same command.)
"""

from __future__ import annotations

import argparse
import json
import sys

from .text_stream import stream
from .hub import ModelLoadError, load_int8_check, load_model
from .sampling import SamplingError
from .serving import INT8_MODES, Serving
from .session import ChatSession
from .step import EngineError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lstm_model.generate", description="Sample from a CharLSTM, or chat with it.")
    p.add_argument("--model", default=None, help="local folder or Hub repo id user/name[@revision] (default: bundled)")
    p.add_argument("--prompt", default="", help="text to start from")
    p.add_argument("--length", type=int, default=500, help="characters to sample (default 500)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely character")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", default=None, help="stop at this text (default: none; in --chat, the model's stop sequence)")
    p.add_argument("--chat", action="store_true", help="terminal chat that carries the recurrent state from line to line")
    p.add_argument("--no-memory", action="store_true", help="in --chat, start every turn from a fresh state")
    p.add_argument("--int8", choices=list(INT8_MODES), default="auto",
                   help="int8 generation steps: auto = when the model's int8.json shows a loss rise <= 0.01 nats/char; "
                        "default auto")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        model = load_model(args.model)
        serving = Serving(model, int8=args.int8, int8_check=load_int8_check(args.model))
    except (ModelLoadError, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    settings = dict(max_new_chars=args.length, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    greedy=args.greedy, seed=args.seed)
    try:
        if args.chat:
            if args.stop is not None:
                settings["stop"] = args.stop
            return _chat(ChatSession(model, memory=not args.no_memory, serving=serving, **settings))
        s = stream(model, args.prompt, stop=args.stop, serving=serving, **settings)
        sys.stdout.write(args.prompt)
        for piece in s:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if s.skipped:
            print(f"note: skipped characters not in the vocabulary: {s.skipped!r}", file=sys.stderr)
    except SamplingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _chat(session: ChatSession) -> int:
    print(f"Chat with the {getattr(session.model, 'cell', 'lstm').upper()}. Commands: /reset /undo /retry /memory /quit",
          file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command = line.strip()
        if command == "/quit":
            return 0
        if command == "/reset":
            session.reset()
            print("(fresh conversation: memory cleared)")
            continue
        if command == "/undo":
            print("(undid the last turn)" if session.undo() else "(nothing to undo)")
            continue
        if command == "/memory":
            print(json.dumps(session.memory_report(), indent=2, ensure_ascii=False))
            continue
        reply = session.retry() if command == "/retry" else session.send(line)
        if reply is None:
            print("(nothing to retry)")
            continue
        for piece in reply:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        for notice in session.notices():
            print(f"note: {notice}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
