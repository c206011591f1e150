"""Sessions belong to their visitor: no id a caller can send reaches another visitor's conversation
(the page's and Gradio's API's sessions, keyed by Gradio's session hash, and the stream route's,
keyed by tokens the server makes, are separate namespaces); every bad input is one sentence."""

import asyncio
import json
import logging
from types import SimpleNamespace

import httpx
import pytest
from test_app import stream


def run(url: str, name: str, data: list, session_hash: str | None = None) -> tuple[int, dict]:
    """A direct POST /gradio_api/run/<name>, with the session hash the caller chooses (or none)."""
    body = {"data": data, **({"session_hash": session_hash} if session_hash is not None else {})}
    response = httpx.post(url.rstrip("/") + f"/gradio_api/run/{name}", json=body, timeout=120)
    return response.status_code, response.json()


def test_no_id_a_caller_sends_reaches_a_stream_session(app_url):
    secret = "ROMEO:\nmy password is hunter2"
    status, events = stream(app_url, {"message": secret, "max_chars": 20, "seed": 1})
    assert status == 200
    token = events[-1][1]["session"]
    for guess in (token, "stream:" + token, f"('stream', '{token}')", "local", ""):
        status, answer = run(app_url, "memory", [], guess)
        assert status == 200 and "hunter2" not in str(answer), guess
        status, answer = run(app_url, "undo", [], guess)
        assert status == 200 and answer["data"] == ["Nothing to undo."], guess
    # the stream session still holds its turn: the next message is read after it
    status, events = stream(app_url, {"message": "JULIET:\nAnd then?", "session": token, "max_chars": 5})
    assert status == 200 and events[-1][1]["session"] == token
    status, events = stream(app_url, {"message": "JULIET:", "session": token[:-1] + "x", "max_chars": 5})
    assert status == 404 and "leave \"session\" out" in events[0][1]["error"]  # names are the server's to make


def test_calls_without_a_session_never_share_one(app_url):
    status, answer = run(app_url, "chat", ["ROMEO:\nmy password is hunter2", 0.8, 40, 1.0, 60, 3, "", True])
    assert status == 200
    reply = answer["data"][0]
    assert len(reply) == 60  # the whole reply, not its first update
    status, answer = run(app_url, "memory", [])
    assert status == 200 and answer["data"][0]["turns"] == []  # another caller without a session: a new one
    status, answer = run(app_url, "undo", [])
    assert answer["data"] == ["Nothing to undo."]


def test_a_direct_call_with_a_session_gets_the_whole_reply_and_keeps_the_turn(app_url):
    hash_ = "direct-caller-7f3a"
    status, answer = run(app_url, "chat", ["ROMEO:", 0.8, 40, 1.0, 80, 3, "", True], hash_)
    assert status == 200 and len(answer["data"][0]) == 80
    turns = run(app_url, "memory", [], hash_)[1]["data"][0]["turns"]
    assert len(turns) == 1 and turns[0]["reply"] == answer["data"][0] and turns[0]["stopped_by"] == "length"


def test_lone_surrogates_are_refused_where_they_enter(app_url):
    for name, data in (("chat", ["\ud800", 0.8, 40, 1.0, 5, 1, "", True]),
                       ("chat", ["ROMEO:", 0.8, 40, 1.0, 5, 1, "\udfff", True]),
                       ("model", ["\ud800/x"])):
        response = httpx.post(app_url.rstrip("/") + f"/gradio_api/run/{name}", timeout=60,
                              content=json.dumps({"data": data, "session_hash": "sur-1"}),
                              headers={"Content-Type": "application/json"})
        assert "lone surrogate" in response.text, name
    for body in ({"message": "\ud800"}, {"message": "hi", "stop": "\udc00"}):  # JSON can spell them: ASCII escapes
        response = httpx.post(app_url.rstrip("/") + "/chat/stream", content=json.dumps(body), timeout=60)
        assert response.status_code == 422 and "lone surrogate" in response.json()["error"]
    status, answer = run(app_url, "memory", [], "sur-1")
    assert status == 200 and answer["data"][0]["turns"] == []  # nothing was read, and /memory still answers


def test_a_deeply_nested_or_huge_stream_body_is_one_sentence(app_url):
    nested = ("[" * 100_000 + "]" * 100_000).encode()
    response = httpx.post(app_url.rstrip("/") + "/chat/stream", content=nested, timeout=60)
    assert response.status_code == 422 and "nested too deeply" in response.json()["error"]
    response = httpx.post(app_url.rstrip("/") + "/chat/stream", content=b'{"message": "' + b"a" * 300_000 + b'"}',
                          timeout=60)
    assert response.status_code == 422 and "KB" in response.json()["error"]
    status, events = stream(app_url, {f"field{i}": 1 for i in range(200_000)})
    assert status == 422 and len(events[0][1]["error"]) < 300


def test_two_turns_at_once_in_one_session_each_keep_their_settings():
    """The second turn's settings are applied under the session's lock, after the first turn ended."""
    from ui.actions import ChatApp, Options

    app = ChatApp(Options(fresh_replies=False))
    tab = SimpleNamespace(session_hash="same-tab")

    async def both():
        first = app.chat("ROMEO:\nOne.", max_chars=40, stop="QQQ", seed=1, request=tab)
        await anext(first)  # streaming, the session's lock held
        second = asyncio.ensure_future(collect(app.chat("ROMEO:\nTwo.", max_chars=7, stop="\\n", seed=2,
                                                        request=tab)))
        await asyncio.sleep(0)  # the second turn has started and waits for the lock
        async for _ in first:
            pass
        await second

    async def collect(texts):
        return [t async for t in texts]

    asyncio.run(both())
    one, two = app.state(tab).session.turns
    assert one.sampling.stop == ("QQQ",) and one.sampling.max_new_chars == 40 and "\n\n" in one.reply
    assert two.sampling.stop == ("\n",) and two.sampling.max_new_chars == 7


def test_sessions_are_bounded_and_the_least_recently_used_idle_one_leaves_first(monkeypatch):
    import gradio as gr

    import ui.actions as actions
    from ui.actions import PAGE, ChatApp, Options

    monkeypatch.setattr(actions, "MAX_SESSIONS", 3)
    app = ChatApp(Options())
    states = [app.state(SimpleNamespace(session_hash=f"s{i}")) for i in range(3)]
    app.state(SimpleNamespace(session_hash="s0"))  # used again: s1 is now the least recently used
    app.state(SimpleNamespace(session_hash="s3"))
    assert set(app._sessions) == {(PAGE, "s0"), (PAGE, "s2"), (PAGE, "s3")}
    for st in app._sessions.values():
        st.lock.acquire()  # every session busy: a new one is refused with a sentence
    with pytest.raises(gr.Error, match="send your message again in a minute"):
        app.state(SimpleNamespace(session_hash="s4"))
    assert states[0].lock.locked()
    monkeypatch.setattr(actions, "MAX_SESSIONS", 100)
    monkeypatch.setattr(actions, "MAX_SESSIONS_BYTES", 1)  # the bytes bound: any idle session with turns leaves
    for st in app._sessions.values():
        st.lock.release()
    st = app.state(SimpleNamespace(session_hash="s0"))
    "".join(st.session.send("ROMEO:", max_new_chars=5))
    st.measure()
    assert st.nbytes > 0
    app.state(SimpleNamespace(session_hash="s5"))
    assert (PAGE, "s0") not in app._sessions


def test_the_picker_says_the_same_whatever_exists_on_the_disk(tmp_path, monkeypatch):
    """A source of a repo id's form is looked up on the Hub whether or not a file of that name exists;
    a path gets one sentence whatever is there."""
    import gradio as gr

    from ui.actions import ChatApp, Options

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lstm_model").mkdir()
    (tmp_path / "lstm_model" / "train.py").write_text("print()")
    (tmp_path / "models" / "real").mkdir(parents=True)  # a folder of the repo id's form, not a model
    app = ChatApp(Options())

    def said(source):
        with pytest.raises(gr.Error) as err:
            app.model(source, request=SimpleNamespace(session_hash="picker"))
        return err.value.message

    assert said("lstm_model/train.py") == said("lstm_model/nonexist.py").replace("nonexist", "train")
    assert said("models/real") == said("models/unreal").replace("unreal", "real")
    assert "Hub" in said("models/real")
    paths = {said(p) for p in ("./lstm_model/train.py", "./lstm_model/nonexist.py", "/etc", "/proc/self",
                               "./models/real", "a/b/c", "~/nothing")}
    assert len(paths) == 1 and "local path" in paths.pop()


def test_share_turns_custom_models_off_unless_asked(capsys):
    from app import parse_args

    assert parse_args(["--share"], {}).custom_models is False
    assert parse_args(["--share"], {"CUSTOM_MODELS": "1"}).custom_models is True
    assert parse_args([], {}).custom_models is True


def test_a_refusal_logs_a_line_without_the_visitor_s_text(caplog):
    import gradio as gr

    from ui.actions import ChatApp, Options

    app = ChatApp(Options(share=True))
    with caplog.at_level(logging.INFO, logger="lstm_memory_chat"):
        with pytest.raises(gr.Error):
            app.model("/secret/hunter2-folder", request=SimpleNamespace(session_hash="log"))
    assert caplog.records and all("hunter2" not in r.getMessage() for r in caplog.records)
