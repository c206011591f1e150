"""Gradio alone, for `benchmarks/capacity.py --floor`: a `/chat` endpoint with the app's signature
that yields the whole reply at once, no model, served with the app's queue and thread settings.
What a crowd's first pieces wait for here is the framework's own cost per event (HTTP, queue,
event stream, worker thread) on this machine: the floor under the app's figures.

    python benchmarks/floor_app.py --port 7861
"""

from __future__ import annotations

import argparse

import gradio as gr


def chat(message: str, temperature: float = 0.8, top_k: int = 40, top_p: float = 1.0, max_chars: int = 500,
         seed: int = -1, stop: str = "\\n\\n", memory: bool = True) -> str:
    """The reply at once: max_chars characters."""
    yield "x" * int(max_chars)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=7861)
    port = p.parse_args().port
    with gr.Blocks() as demo:
        gr.api(chat, api_name="chat")
    demo.queue(default_concurrency_limit=None, max_size=None)  # as the app's queue (ui/layout.py)
    demo.launch(server_port=port, max_threads=256 + 40)  # as app.py: CHAT_CONCURRENCY + 40


if __name__ == "__main__":
    main()
