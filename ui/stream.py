"""POST /chat/stream: the chat action as a plain HTTP stream, beside Gradio's queue.

Every call through Gradio's queue pays for the queue's bookkeeping and its event stream on the
server's event loop: on 2 vCPUs a crowd of 128 calls arriving at once waits 0.8-1.3 s (p95) for
its first pieces even from an endpoint that does nothing (benchmarks/README.md, "Serve a crowd").
This route runs the same action as `/chat` (`ChatApp.send`: the same checks, the admission
limit, the session's lock, the batching decoder, the fresh reply after it) without the queue,
and streams the reply as Server-Sent Events:

    curl -N http://127.0.0.1:7860/chat/stream -H 'Content-Type: application/json' \\
         -d '{"message": "ROMEO:\\nWhat light?", "session": "my-chat", "max_chars": 200}'

    data: {"text": "..."}                 the reply's next characters, as they come
    event: done
    data: {"reply": "...", "fresh_reply": "...", "cut": false, "notes": [], "session": "my-chat"}

The body is a JSON object: `message` (required), `session` (any name up to 200 characters: calls
with the same name share one memory; without it each call starts a new session, whose name the
`done` event gives), and optionally `temperature`, `top_k`, `top_p`, `max_chars`, `seed`, `stop`
and `memory`, as `/chat` takes them. A bad body or value is answered 422, a full server 503 (with
Retry-After), each with {"error": "one sentence"}; nothing is read into the memory then. A
failure after the stream began ends it with `event: error` and {"error": ...}.
"""

from __future__ import annotations

import json
import secrets

import gradio as gr
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .actions import DEFAULTS, Busy, ChatApp

PATH = "/chat/stream"
SETTINGS = ("temperature", "top_k", "top_p", "max_chars", "seed", "stop", "memory")
MAX_SESSION_NAME = 200
RETRY_AFTER_S = 3


def event(data: dict, name: str | None = None) -> bytes:
    """One Server-Sent Event."""
    return ((f"event: {name}\n" if name else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n").encode()


def refused(sentence: str, status: int = 422, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers=headers)


def parse(body: bytes) -> tuple[str, str, dict]:
    """(session name, message, settings) from a request body; ValueError with a sentence."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ValueError("The body must be a JSON object such as {\"message\": \"Hello\"}.") from None
    if not isinstance(data, dict):
        raise ValueError("The body must be a JSON object such as {\"message\": \"Hello\"}.")
    unknown = sorted(set(data) - {"message", "session", *SETTINGS})
    if unknown:
        raise ValueError(f"Unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                         f"the fields are message, session, {', '.join(SETTINGS)}.")
    message = data.get("message")
    if not isinstance(message, str):
        raise ValueError("Send the message as text in the field \"message\".")
    session = data.get("session") or secrets.token_urlsafe(12)
    if not isinstance(session, str) or len(session) > MAX_SESSION_NAME:
        raise ValueError(f"The session is a name of up to {MAX_SESSION_NAME} characters.")
    memory = data.get("memory", DEFAULTS["memory"])
    if not isinstance(memory, bool):
        raise ValueError("memory is true or false.")
    settings = {k: data[k] for k in SETTINGS if k in data and k != "memory"}
    return session, message, {**settings, "memory": memory}


def stream_route(app: ChatApp) -> Route:
    """The route for Gradio's launch (`app_kwargs={"routes": [...]}`), served by `app`."""

    async def chat_stream(request: Request):
        try:
            session, message, settings = parse(await request.body())
        except ValueError as err:
            return refused(str(err))
        key = "stream:" + session
        texts = app.send(key, message, **settings)
        try:  # the checks and the admission happen before the first piece: answered with a status
            first = await anext(texts)
        except Busy as err:
            return refused(err.message, 503, {"Retry-After": str(RETRY_AFTER_S)})
        except gr.Error as err:
            return refused(err.message)
        except Exception as err:  # noqa: BLE001 - an engine failure: a sentence, not a traceback
            return refused(f"The server could not write a reply ({type(err).__name__}): try again.", 500)
        st = app.state_of(key)  # the session's lock is held while the reply streams: this turn is ours
        turn, notes = st.session.turns[-1], list(st.notes)

        async def body():
            sent = first
            try:
                yield event({"text": first})
                async for text in texts:
                    if len(text) > len(sent):
                        yield event({"text": text[len(sent):]})
                        sent = text
                yield event({"reply": turn.reply, "fresh_reply": turn.fresh_reply, "cut": bool(turn.closed_with),
                             "notes": notes, "session": session}, "done")
            except gr.Error as err:
                yield event({"error": err.message}, "error")
            except Exception as err:  # noqa: BLE001 - the reply so far stays in the session
                yield event({"error": f"The reply stopped: the server failed ({type(err).__name__}); send again."},
                            "error")
            finally:
                await texts.aclose()  # a client that left: the place and the session's lock are given back

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return Route(PATH, chat_stream, methods=["POST"])
