"""POST /chat/stream: the chat action as a plain HTTP stream, beside Gradio's queue.

Every call through Gradio's queue pays for the queue's bookkeeping and its event stream on the
server's event loop: a crowd of calls arriving at once waits for its first pieces even from an
endpoint that does nothing (benchmarks/README.md, "A crowd arriving at once").
This route runs the same action as `/chat` (`ChatApp.send`: the same checks, the admission
limit, the session's lock, the batching decoder, the fresh reply after it) without the queue,
and streams the reply as Server-Sent Events:

    curl -N http://127.0.0.1:7860/chat/stream -H 'Content-Type: application/json' \\
         -d '{"message": "ROMEO:\\nWhat light?", "max_chars": 200}'

    data: {"text": "..."}                 the reply's next characters, as they come
    event: done
    data: {"reply": "...", "fresh_reply": "...", "cut": false, "notes": [], "session": "<token>"}

The body is a JSON object: `message` (required), `session` (a token this route gave: the
conversation goes on with its memory; without one a new session starts, and its token comes in
the `X-Chat-Session` header and the `done` event), and optionally `temperature`, `top_k`, `top_p`,
`max_chars`, `seed`, `stop` and `memory`, as `/chat` takes them. The server makes every token
(unguessable, 144 random bits), so no caller can name another's session, and the stream's sessions
are a namespace of their own, apart from the page's and Gradio's API's. A bad body or value is
answered 422, an unknown or expired token 404, a full server 503 (with Retry-After), each with
{"error": "one sentence"}; nothing is read into the memory then. A failure after the stream began
ends it with `event: error` and {"error": ...}.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import gradio as gr
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError
from starlette.routing import Route

from .actions import ChatApp
from .checks import DEFAULTS, Busy

PATH = "/chat/stream"
SETTINGS = ("temperature", "top_k", "top_p", "max_chars", "seed", "stop", "memory")
MAX_SESSION_NAME = 200
MAX_BODY_BYTES = 256 * 1024  # a 20,000-character message, every character escaped, and the settings
log = logging.getLogger("lstm_memory_chat")
RETRY_AFTER_S = 3


def event(data: dict, name: str | None = None) -> bytes:
    """One Server-Sent Event."""
    return ((f"event: {name}\n" if name else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n").encode()


def refused(sentence: str, status: int = 422, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers=headers)


class StreamBody(BaseModel):
    """The body this route reads, declared once: pydantic checks the kinds, and FIELD_SENTENCES
    says in one sentence what each field must be. The sampling settings' ranges are checked
    where `/chat`'s are (`sampling_from`), so both routes refuse the same values alike."""

    model_config = ConfigDict(extra="forbid")
    message: StrictStr
    session: StrictStr | None = Field(None, min_length=1, max_length=MAX_SESSION_NAME)
    memory: StrictBool = DEFAULTS["memory"]
    stop: StrictStr | None = None
    temperature: Any = None
    top_k: Any = None
    top_p: Any = None
    max_chars: Any = None
    seed: Any = None


OBJECT_SENTENCE = "The body must be a JSON object such as {\"message\": \"Hello\"}."
FIELD_SENTENCES = {
    "message": "Send the message as text in the field \"message\".",
    "session": "The session is the token a reply of this route gave (in its done event); leave it out to start a "
               "new session.",
    "memory": "memory is true or false.",
    "stop": "The stop sequence is text, with \\n for a newline (\"\" for none).",
}


def parse(body: bytes) -> tuple[str | None, str, dict]:
    """(session token or None, message, settings) from a request body; ValueError with a sentence."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"The body is over {MAX_BODY_BYTES // 1024} KB; messages are read up to 20,000 characters.")
    try:
        data = json.loads(body or b"null")
    except RecursionError:
        raise ValueError("The body is nested too deeply; send a flat JSON object such as {\"message\": \"Hello\"}.") from None
    except ValueError:
        raise ValueError(OBJECT_SENTENCE) from None
    if not isinstance(data, dict):
        raise ValueError(OBJECT_SENTENCE)
    try:
        parsed = StreamBody.model_validate(data)
    except ValidationError as err:
        raise ValueError(refusal_of(err.errors())) from None
    settings = {name: getattr(parsed, name) for name in SETTINGS if name in parsed.model_fields_set and name != "memory"}
    return parsed.session, parsed.message, {**settings, "memory": parsed.memory}


def refusal_of(errors: list) -> str:
    """One sentence for pydantic's errors: the unknown fields (a few of them, shortened: an error
    never grows with the body), else the first field's own sentence."""
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        return (f"Unknown field{'s' if len(unknown) > 1 else ''} {shown}: "
                f"the fields are message, session, {', '.join(SETTINGS)}.")
    field = str(errors[0]["loc"][0]) if errors[0]["loc"] else ""
    return FIELD_SENTENCES.get(field, OBJECT_SENTENCE)


def stream_route(app: ChatApp) -> Route:
    """The route for Gradio's launch (`app_kwargs={"routes": [...]}`), served by `app`."""

    async def chat_stream(request: Request):
        try:
            token, message, settings = parse(await request.body())
        except ValueError as err:
            log.info("refused a stream request: bad body")
            return refused(str(err))
        new = token is None
        try:
            if new:
                token = app.new_stream_session()
            st = app.stream_session(token)
            if st is None:
                log.info("refused a stream request: unknown session")
                return refused("No such session: it expired or was never made here; leave \"session\" out to "
                               "start a new one.", 404)
            texts = app.send(st, message, **settings)
            first = await anext(texts)  # the checks and the admission happen before the first piece
        except Exception as err:  # noqa: BLE001 - refused before anything was read
            if new and token is not None:
                app.drop_stream_session(token)  # a refused first call leaves no session behind
            if isinstance(err, Busy):
                return refused(err.message, 503, {"Retry-After": str(RETRY_AFTER_S)})
            if isinstance(err, gr.Error):
                return refused(err.message)
            return refused(f"The server could not write a reply ({type(err).__name__}): try again.", 500)
        turn, notes = st.session.turns[-1], list(st.notes)  # the session's lock is held while the reply streams

        async def body():
            sent = first
            try:
                yield event({"text": first})
                async for text in texts:
                    if len(text) > len(sent):
                        yield event({"text": text[len(sent):]})
                        sent = text
                yield event({"reply": turn.reply, "fresh_reply": turn.fresh_reply, "cut": bool(turn.closed_with),
                             "notes": notes, "session": token}, "done")
            except gr.Error as err:
                yield event({"error": err.message}, "error")
            except Exception as err:  # noqa: BLE001 - the reply so far stays in the session
                yield event({"error": f"The reply stopped: the server failed ({type(err).__name__}); send again."},
                            "error")
            finally:
                await texts.aclose()  # a client that left: the place and the session's lock are given back

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Chat-Session": token})

    return Route(PATH, chat_stream, methods=["POST"])
