"""LSTM Memory Chat: chat with a character-level LSTM that keeps its memory across turns, and
watch that memory. This file is the app's command line: it reads the flags and every environment
variable the app knows, and starts the Gradio app built by ui/ (handlers in ui/actions.py, the
page in ui/layout.py) around the model package lstm_model/ (ARCHITECTURE.md has the map).

    python app.py [--model PATH_OR_REPO[@revision]] [--share] [--host HOST] [--port PORT] [--int8 auto|on|off]

Environment variables (read here and nowhere else): MODEL (as --model: how a Hugging Face Space,
which passes no flags, picks its model), INT8 (as --int8), LSTM_STEP_ENGINE (auto, onnxruntime or
torch), BATCHING (0 = every reply steps alone), CHAT_CONCURRENCY (replies streaming at once,
default 256; beyond, a "busy" sentence), TORCH_THREADS (default 1), STEP_THREADS (ONNX Runtime's
threads for the generation steps, default 2 or the CPUs if fewer), CUSTOM_MODELS (1/0: whether visitors may load Hub repos
and local folders through the model picker; default 0 on a Space, where SPACE_ID is set, and with
--share, else 1),
FRESH_REPLIES (1/0: whether each reply is followed by the one a fresh memory writes; default 1);
Gradio's own GRADIO_SERVER_NAME and GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from lstm_model.hub import ModelLoadError
from lstm_model.serving import INT8_MODES
from lstm_model.step import ENGINES
from ui.actions import Options
from ui.layout import build_app

__all__ = ["Options", "build_app", "main", "parse_args"]
SWITCH = {"1": True, "on": True, "true": True, "yes": True, "0": False, "off": False, "false": False, "no": False}


def parse_args(argv=None, environ=None) -> Options:
    """Options from the flags, then the environment, then the defaults. SystemExit(2) with one
    sentence for a bad value."""
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(description="LSTM Memory Chat: chat with an LSTM and watch its memory.")
    p.add_argument("--model", default=None, help="local folder or Hub repo id user/name[@revision] (default: bundled)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1, or GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or GRADIO_SERVER_PORT)")
    p.add_argument("--int8", choices=list(INT8_MODES), default=None,
                   help="int8 generation steps: auto (default, or INT8) = when the model's int8.json shows a loss "
                        "rise <= 0.01 nats/char; on; off")
    args = p.parse_args(argv)
    on_space = bool(env.get("SPACE_ID"))
    # A public app (a Space, a share link) lets visitors pick only the served models unless asked.
    custom = env.get("CUSTOM_MODELS", "0" if on_space or args.share else "1").strip().lower()
    if custom not in SWITCH:
        p.error(f"CUSTOM_MODELS must be 1 or 0 (on or off); got {custom!r}.")
    fresh = env.get("FRESH_REPLIES", "1").strip().lower()
    if fresh not in SWITCH:
        p.error(f"FRESH_REPLIES must be 1 or 0 (on or off); got {fresh!r}.")
    options = Options(model=args.model or env.get("MODEL") or None, share=args.share, custom_models=SWITCH[custom],
                      on_space=on_space, host=args.host, port=args.port,
                      int8=args.int8 or env.get("INT8", "auto"), engine=env.get("LSTM_STEP_ENGINE", "auto"),
                      batching=env.get("BATCHING", "1") != "0", fresh_replies=SWITCH[fresh])
    if options.int8 not in INT8_MODES:
        p.error(f"INT8 must be one of {', '.join(INT8_MODES)}; got {options.int8!r}.")
    if options.engine not in ENGINES:
        p.error(f"LSTM_STEP_ENGINE must be one of {', '.join(ENGINES)}; got {options.engine!r}.")
    for name, field_name in (("CHAT_CONCURRENCY", "concurrency"), ("TORCH_THREADS", "threads"),
                             ("STEP_THREADS", "step_threads")):
        value = env.get(name, str(getattr(options, field_name)))
        if not value.isdigit() or int(value) < 1:
            p.error(f"{name} must be a whole number of at least 1; got {value!r}.")
        setattr(options, field_name, int(value))
    return options


def main(argv=None) -> int:
    options = parse_args(argv)
    # Replies are computed in worker threads, where one OpenMP thread runs these small LSTM steps
    # faster than two (benchmarks/README.md); the second core serves everything else.
    torch.set_num_threads(options.threads)
    try:
        demo = build_app(options=options)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if options.share and options.on_space:
        print("--share does not apply on a Hugging Face Space: the Space's own address is already public; "
              "serving without a gradio.live link.", file=sys.stderr)
        options.share = False
    # A streaming reply holds a worker thread while it waits for its characters: room for all.
    demo.launch(server_name=options.host, server_port=options.port, share=options.share, prevent_thread_lock=True,
                max_threads=options.concurrency + 40, app_kwargs={"routes": demo.plain_routes})
    if options.share and not options.custom_models:
        print("Public link: visitors can pick only the bundled models; set CUSTOM_MODELS=1 to let them load Hub "
              "repos and this machine's model folders.", file=sys.stderr)
    if options.share and not getattr(demo, "share_url", None):
        print("The public share link could not be created (no connection to gradio.live?); "
              f"the app keeps serving locally at {demo.local_url}.", file=sys.stderr)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())

