"""Between Gradio's event loop and the threads that write replies: a reply stream read without
blocking the loop, its updates paced, a session's lock taken without blocking, and a direct API
call answered with the whole reply."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import anyio
import gradio as gr

from lstm_model.text_stream import SLOW, WAIT

from .checks import direct_call

STREAM_INTERVAL_S = 0.04  # a streamed reply is updated at most 25 times a second...
MAX_UPDATES_PER_S = 200  # ...and all of them together about this often: each costs Gradio time on its event loop
LOCK_POLL_S = 0.01  # how often a handler looks again at a session lock another action holds
_END = object()


def waker():
    """(wake, event): `wake()`, safe to call from any thread (the decoder's), sets `event` on this
    event loop; calls that come before the loop has run the last one are merged into it."""
    loop, event, pending = asyncio.get_running_loop(), asyncio.Event(), [False]

    def ready():
        pending[0] = False
        event.set()

    def wake():
        if not pending[0]:
            pending[0] = True
            try:
                loop.call_soon_threadsafe(ready)
            except RuntimeError:  # the loop has closed: nobody reads this reply any more
                pass
    return wake, event


async def unblocked(pieces, event: asyncio.Event):
    """A reply stream made with `wake` (ChatSession.wake), read without blocking the event loop:
    on WAIT it awaits the decoder's next item, after SLOW it reads on in a worker thread. So a
    streaming reply holds no thread while the decoder writes it."""
    in_thread = False
    while True:
        item = await anyio.to_thread.run_sync(next, pieces, _END) if in_thread else next(pieces, _END)
        if item is _END:
            return
        if item is WAIT:
            await event.wait()
            event.clear()
        elif item is SLOW:
            in_thread = True
        else:
            yield item


async def paced(pieces, interval=lambda: STREAM_INTERVAL_S):
    """The reply so far, at most once per `interval()` seconds (and at once for the first piece,
    and at the end): each update costs Gradio more than sampling a character does."""
    text, last = "", None
    async for piece in pieces:
        text += piece
        now = time.monotonic()
        if last is None or now - last >= interval():
            yield text
            last = now
    yield text


async def acquire(lock: threading.Lock) -> None:
    """Take a session's lock without blocking the event loop (another action may hold it a while:
    the memory panel's figures, a fresh reply)."""
    while not lock.acquire(blocking=False):
        await asyncio.sleep(LOCK_POLL_S)


async def whole_if_direct(texts, request: gr.Request | None):
    """A reply's updates; for a direct call, only the whole reply (see direct_call)."""
    async with contextlib.aclosing(texts):
        if not direct_call(request):
            async for text in texts:
                yield text
            return
        text = None
        async for text in texts:
            pass
        if text is not None:
            yield text

