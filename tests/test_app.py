"""The app through its API (gradio_client), launched for real on a local port."""

import asyncio
import os
import threading

import pytest


def drain(replies) -> list:
    """Every update of one of the app's async reply streams (a handler called directly)."""
    async def collect():
        return [text async for text in replies]
    return asyncio.run(collect())


@pytest.fixture(scope="module")
def server(app_url):
    return app_url


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_named_endpoints_and_defaults(server):
    c = client(server)
    endpoints = c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/chat", "/undo", "/retry", "/reset", "/memory"} <= set(endpoints)
    reply = c.predict("ROMEO:\nWhat light through yonder window breaks?", api_name="/chat")
    assert isinstance(reply, str) and reply.strip()


def test_chat_streams_and_memory_follows_the_turns(server):
    c = client(server)
    # 3000 characters, no stop sequence: long enough to arrive in several updates (one per 40 ms).
    job = c.submit("JULIET:\nO Romeo, Romeo!", 0.8, 40, 1.0, 3000, 3, "", True, api_name="/chat")
    pieces = list(job)
    final = job.result()
    assert len(pieces) > 3 and final == pieces[-1] and final.startswith(pieces[0]) and len(final) == 3000
    report = c.predict(api_name="/memory")
    assert len(report["turns"]) == 1
    turn = report["turns"][0]
    assert turn["user"] == "JULIET:\nO Romeo, Romeo!" and turn["reply"] == final
    assert len(turn["c_norm"]) == 2 and turn["c_norm"][0] > 0
    c.predict("ROMEO:\nShall I hear more?", api_name="/chat")
    second = c.predict(api_name="/memory")["turns"][1]
    assert second["memory_benefit_bpc"] is not None and second["loss_fresh_bpc"] > 0
    assert "Undid" in c.predict(api_name="/undo")
    assert len(c.predict(api_name="/memory")["turns"]) == 1
    retried = c.predict(api_name="/retry")
    assert c.predict(api_name="/memory")["turns"][0]["reply"] == retried
    assert "Fresh" in c.predict(api_name="/reset")
    assert c.predict(api_name="/memory")["turns"] == []


def test_two_clients_at_once_see_only_their_own_turns(server):
    a, b = client(server), client(server)
    results = {}

    def talk(name, c, line):
        for _ in range(2):
            c.predict(line, api_name="/chat")
        results[name] = c.predict(api_name="/memory")

    threads = [threading.Thread(target=talk, args=("a", a, "ANNA-ALPHA:\nzzz first client")),
               threading.Thread(target=talk, args=("b", b, "BEN-BRAVO:\nqqq second client"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    users_a = {t["user"] for t in results["a"]["turns"]}
    users_b = {t["user"] for t in results["b"]["turns"]}
    assert users_a == {"ANNA-ALPHA:\nzzz first client"} and len(results["a"]["turns"]) == 2
    assert users_b == {"BEN-BRAVO:\nqqq second client"} and len(results["b"]["turns"]) == 2


def test_hostile_input_and_bad_settings_do_not_break_the_chat(server):
    c = client(server)
    nasty = "<script>alert(1)</script> **bold** [x](http://e.vil) \u202e\u0301 😀\x00 " + "a" * 200_000
    reply = c.predict(nasty, 1.0, 0, 1.0, 40, 1, "", True, api_name="/chat")
    assert isinstance(reply, str)
    turn = c.predict(api_name="/memory")["turns"][-1]
    assert turn["truncated_chars"] > 0 and "😀" in turn["skipped"]
    # Out-of-range settings through the API get one clear message, and the session goes on.
    from gradio_client.exceptions import AppError

    for bad, sentence in (([5.0, 40, 1.0, 40], "Temperature must be from 0.05 to 2; got 5."),
                          ([0.8, 40, 1.0, 10**9], "Max characters must be from 1 to 5000"),
                          ([0.8, -5, 1.0, 40], "Top-k must be 0 \\(off\\) or more"),
                          (["warm", 40, 1.0, 40], "Temperature must be a number; got 'warm'."),
                          ([0.8, "many", 1.0, 40], "Top-k must be a whole number")):
        with pytest.raises(AppError, match=sentence):
            c.predict("ROMEO:", *bad, 1, "", True, api_name="/chat")
    assert isinstance(c.predict("", api_name="/chat"), str)
    assert len(c.predict(api_name="/memory")["turns"]) == 2


def test_app_cli_reports_a_bad_model_in_one_sentence():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "app.py", "--model", "nobody/no-such-model"], cwd=root,
                            capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: The model 'nobody/no-such-model' is not in the local Hub cache and HF_HUB_OFFLINE is set; "
        "unset HF_HUB_OFFLINE to download it, or give a local folder.")
    assert "Traceback" not in result.stderr


def test_options_come_from_the_flags_then_the_environment():
    from app import parse_args

    options = parse_args(["--int8", "off", "--port", "7000"], environ={"INT8": "on", "LSTM_STEP_ENGINE": "torch",
                                                                       "BATCHING": "0", "CHAT_CONCURRENCY": "4"})
    assert (options.int8, options.port, options.engine, options.batching, options.concurrency, options.threads) == (
        "off", 7000, "torch", False, 4, 1)
    assert parse_args([], environ={"INT8": "on"}).int8 == "on"
    assert parse_args([], environ={}).step_threads == min(2, os.cpu_count() or 1) >= 1
    assert parse_args([], environ={"STEP_THREADS": "3"}).step_threads == 3
    assert parse_args([], environ={}).fresh_replies and not parse_args([], environ={"FRESH_REPLIES": "0"}).fresh_replies
    for environ in ({"INT8": "fast"}, {"LSTM_STEP_ENGINE": "gpu"}, {"TORCH_THREADS": "0"}, {"STEP_THREADS": "x"},
                    {"FRESH_REPLIES": "maybe"}):
        with pytest.raises(SystemExit):
            parse_args([], environ=environ)


def test_a_panel_refresh_overtaken_by_a_newer_change_is_not_shown(trained_model):
    import gradio as gr
    import matplotlib.pyplot as plt

    from lstm_model.serving import Serving
    from ui.actions import ChatState, panel_figures

    st = ChatState(Serving(trained_model))
    "".join(st.session.send("ANNA:\nThe moon."))
    assert "after turn 1" in panel_figures(st, "cell", 0, "2")["status"]
    original = st.session.trace_recent

    def meanwhile(*args, **kwargs):
        st.changes += 1  # another action changes the conversation while this refresh computes
        return original(*args, **kwargs)

    st.session.trace_recent = meanwhile
    assert list(panel_figures(st, "cell", 0, "2").values()) == [gr.skip()] * 11
    plt.close("all")


def test_the_model_endpoint_switches_the_session_and_tells_nothing_about_the_disk(server, tmp_path):
    from gradio_client.exceptions import AppError

    c = client(server)
    assert "Serving **timemachine**" in c.predict("timemachine", api_name="/model")
    assert c.predict(api_name="/memory")["hidden_size"] == 384
    c.predict("The time traveller", api_name="/chat")
    assert len(c.predict(api_name="/memory")["turns"]) == 1
    (tmp_path / "config.json").write_text("{}")
    sentences = []
    for path in ("/root", "/etc/passwd", str(tmp_path), str(tmp_path / "missing"), "./nowhere"):
        with pytest.raises(AppError) as info:
            c.predict(path, api_name="/model")
        sentences.append(str(info.value))
    assert len(set(sentences)) == 1 and "local path" in sentences[0] and "keeps working" in sentences[0]
    with pytest.raises(AppError, match="not in the local Hub cache and HF_HUB_OFFLINE is set"):
        c.predict("nobody/no-such-model", api_name="/model")
    assert c.predict(api_name="/memory")["hidden_size"] == 384  # still the model it had


def test_every_spelling_of_a_folder_is_one_served_model_and_evicted_models_end_their_threads(trained_dir):
    import os
    import shutil

    from lstm_model.generate import generate
    from ui.actions import MAX_MODELS, Options, ServedModels

    folder = trained_dir[0]
    served = ServedModels(Options(model=folder))
    aliases = [folder, folder + "/", folder + "//", os.path.relpath(folder), os.path.join(folder, ".")]
    assert len({id(served.get(a)) for a in aliases}) == 1 and len(served) == 1
    first = served.get(folder)
    generate(first.model, "ANNA:\n", max_new_chars=5, serving=first)  # starts its decoder thread
    assert first.decoder.running
    copies = []
    for i in range(MAX_MODELS):  # other models push the first one out
        copy = os.path.join(os.path.dirname(folder), f"copy{i}")
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        copies.append(served.get(copy))
    assert len(served) == MAX_MODELS and served.get(folder) is not first
    first.decoder._thread and first.decoder._thread.join(timeout=60)
    assert not first.decoder.running


def test_seeds_of_any_size_and_non_finite_numbers_through_the_api(server):
    from gradio_client.exceptions import AppError

    c = client(server)
    replies = [c.predict("ROMEO:", 0.8, 40, 1.0, 30, 2**70, "", True, api_name="/chat") for _ in range(2)]
    assert all(len(r) == 30 for r in replies) and len(c.predict(api_name="/memory")["turns"]) == 2
    with pytest.raises(AppError, match="Seed must be a whole number; got 1.5"):
        c.predict("ROMEO:", 0.8, 40, 1.0, 30, 1.5, "", True, api_name="/chat")
    assert len(c.predict(api_name="/memory")["turns"]) == 2  # refused before any turn began
    import gradio as gr

    from ui.actions import sampling_from

    for bad in (float("nan"), float("inf"), "NaN"):  # as raw JSON sends them
        with pytest.raises(gr.Error, match="Top-p must be a number"):
            sampling_from(0.8, 40, bad, 30, 1, "")


def test_replies_beyond_the_admission_limit_are_told_to_come_back():
    """CHAT_CONCURRENCY replies stream at once; one more is refused with a sentence, not queued,
    and its place is free again when a reply ends."""
    from types import SimpleNamespace

    import gradio as gr

    from ui.actions import ChatApp, Options

    app = ChatApp(Options(concurrency=2))
    tab = [SimpleNamespace(session_hash=name) for name in ("a", "b", "c")]

    async def crowd():
        first = app.chat("ROMEO:\nOne.", max_chars=3000, stop="", request=tab[0])
        second = app.chat("ROMEO:\nTwo.", max_chars=3000, stop="", request=tab[1])
        await anext(first), await anext(second)  # both streaming
        with pytest.raises(gr.Error) as refused:
            await anext(app.chat("ROMEO:\nThree.", request=tab[2]))
        assert "replies at once" in refused.value.message and "send it again" in refused.value.message
        assert app.state(tab[2]).session.turns == []  # nothing was read: the message is the user's to resend
        assert app.interval() >= 0.04
        await first.aclose()  # a tab closed mid-reply gives its place back
        assert app.state(tab[0]).session.turns[0].reply  # and keeps the reply so far
        third = app.chat("ROMEO:\nThree.", max_chars=5, request=tab[2])
        assert await anext(third)
        await third.aclose(), await second.aclose()
        assert not any(app.state(t).lock.locked() for t in tab)  # every handler gave its session back

    asyncio.run(crowd())


def test_lazy_session_state_gives_gradio_s_configs():
    """ui/sessions.py: a session's component configs, made on first use, equal Gradio's own."""
    from ui.layout import build_app
    from ui.sessions import GradioSessionState, LazySessionState

    demo = build_app()
    ours, theirs = LazySessionState(demo), GradioSessionState(demo)
    assert ours.config_values == {}  # nothing made up front
    some = list(demo.blocks)[:5]
    for k in some:
        ours._update_value_in_config(k, "value")
        theirs._update_value_in_config(k, "value")
    assert set(ours.config_values) == set(some)
    assert list(ours.components) == list(theirs.components)


def test_a_capped_reply_is_marked_in_the_chat(trained_model):
    from lstm_model.session import ChatSession
    from ui.actions import history_of

    for seed in range(20):
        session = ChatSession(trained_model, seed=seed, max_new_chars=6, stop="\n\n")
        "".join(session.send("ANNA:\nThe sea."))
        if session.turns[-1].stopped_by == "length":
            break
    shown = history_of(session)[-1]["content"]
    reply = shown.split('<div class="memory-note">')[0]  # the reply, before the memory badge under it
    assert reply.endswith("[cut at the length cap]") and session.turns[-1].closed_with == "\n\n"


def test_each_reply_comes_with_what_a_fresh_memory_writes(server):
    from lstm_model import load_model
    from lstm_model.hub import load_int8_check
    from lstm_model.serving import Serving
    from lstm_model.session import ChatSession

    c = client(server)
    c.predict("ROMEO:\nWhat light through yonder window breaks?", 0.8, 40, 1.0, 120, 7, "\\n\\n", True, api_name="/chat")
    c.predict("JULIET:\nIt is the east.", 0.8, 40, 1.0, 120, 7, "\\n\\n", True, api_name="/chat")
    turn = c.predict(api_name="/memory")["turns"][1]
    assert turn["memory"] is True and isinstance(turn["fresh_reply"], str) and isinstance(turn["seed"], int)
    # The same message, settings and seed in a fresh session of the same model served the same way.
    model = load_model()
    serving = Serving(model, int8="auto", int8_check=load_int8_check(None), batching=True)
    fresh = ChatSession(model, serving=serving, seed=turn["seed"], max_new_chars=120, temperature=0.8, top_k=40,
                        stop="\n\n")
    "".join(fresh.send("JULIET:\nIt is the east."))
    serving.close()
    assert turn["fresh_reply"] == fresh.turns[0].reply
    assert "Fresh" in c.predict(api_name="/reset")


def test_the_transcript_shows_the_memory_badge_and_where_the_fresh_reply_parts(trained_model):
    from lstm_model.session import ChatSession
    from ui.actions import INLINE_FRESH_CHARS, history_of

    session = ChatSession(trained_model, seed=5, max_new_chars=30, temperature=1.0)
    "".join(session.send("ANNA:\n<b>The sea.</b>"))
    first = history_of(session)[1]["content"]
    assert "memory-badge fresh" in first and "nothing carried yet" in first  # turn 1 started from a fresh memory
    session.fresh_reply(0)  # what the app computes once a reply has streamed
    "".join(session.send("BORIS:\nThe ship."))
    turn = session.turns[1]
    reply = turn.reply
    turn.fresh_reply = reply[:4] + "<i>zz</i>" + "z" * INLINE_FRESH_CHARS  # a long one that parts after four characters
    first, second = history_of(session)[1]["content"], history_of(session)[3]["content"]
    assert "memory-badge fresh" in first and "same reply" not in first  # still the first turn's own badge
    assert "memory on" in second and "after 4 same characters" in second and '<span class="fork"' in second
    assert "&lt;i&gt;zz&lt;/i&gt;" in second and "<i>" not in second  # shown as text, never as HTML
    turn.fresh_reply, turn.reply = "I don't <know>.", "kitchen"  # a short one: beside the reply, nothing to open
    second = history_of(session)[3]["content"]
    assert "<details" not in second and "fresh memory: <span" in second and "I don't &lt;know&gt;." in second
    assert 'with memory: <span class="carried-inline">kitchen</span>' in second
    turn.reply = reply
    session.reset()  # after Reset, the next turn starts from a fresh memory again
    "".join(session.send("CLARA:\nThe bay."))
    assert "memory-badge fresh" in history_of(session)[1]["content"]
    session.memory = False
    "".join(session.send("CLARA:\nThe shore."))
    assert "memory off" in history_of(session)[3]["content"]


def test_the_memory_test_s_verdict_judges_both_answers():
    import re

    from ui.actions import verdict_html
    from ui.guides import GUIDES

    html = verdict_html(GUIDES["babi"], "kitchen", "I don't know.", 0.97)
    rows = re.findall(r'<div class="verdict-row[^"]*">.*?</div>', html)
    assert len(rows) == 2 and "Where is Mary?" in html
    assert "with its memory" in rows[0] and ">kitchen<" in rows[0] and "✓ right" in rows[0] and "(sure: 97%)" in rows[0]
    assert "from a fresh memory" in rows[1] and ">I don't know.<" in rows[1] and "✗ wrong" in rows[1]
    shown = verdict_html(GUIDES["babi"], "<b>office</b>", "kitchen", None)
    assert "<b>office</b>" not in shown and "&lt;b&gt;office&lt;/b&gt;" in shown  # a reply is text, never HTML
    assert re.findall(r'<div class="verdict-row ([a-z]+)">', shown) == ["wrong", "right"]


def test_the_model_picker_s_sentences(server):
    """The model action: the served model again changes nothing; a text that is neither a path nor a
    repo id is told what a repo id looks like; with custom models off, anything but a bundled name is
    refused in one sentence that names no setting."""
    import gradio as gr
    from gradio_client.exceptions import AppError

    from ui.actions import ChatApp, Options

    c = client(server)
    c.predict("ROMEO:\nStay.", api_name="/chat")
    assert c.predict("shakespeare", api_name="/model").startswith("Already serving **shakespeare**: nothing changed")
    assert len(c.predict(api_name="/memory")["turns"]) == 1  # the conversation went on
    for text in ("not a repo!!", "shakespear"):
        with pytest.raises(AppError, match="a Hub repo id looks like user/name") as info:
            c.predict(text, api_name="/model")
        assert "local path" not in str(info.value)
    app = ChatApp(Options(custom_models=False))
    for text in ("nobody/missing", "./model", "not a repo!!"):
        with pytest.raises(gr.Error) as err:
            app.model(text)
        sentence = err.value.message
        assert "shakespeare" in sentence and "babi" in sentence and "CUSTOM_MODELS" not in sentence
        assert sentence.count(". ") == 0 and sentence.endswith(".")  # one sentence
    assert app.model("babi").startswith("Serving **babi**")


def test_the_page_s_guide_follows_the_model(trained_model):
    from lstm_model import load_model
    from ui.guides import GUIDES, guide_for

    babi = guide_for("babi", load_model("babi"))
    assert "Where is the milk?" in babi.examples and "Reset" in babi.intro and babi.test_answer == "kitchen"
    assert guide_for("shakespeare", trained_model).placeholder.startswith("ROMEO:")
    other = guide_for("someone/else", trained_model)  # any other model: from its own chat protocol
    assert other.examples == () and "\\n\\n" in other.intro
    from lstm_model.hub import bundled_models

    assert set(GUIDES) == set(bundled_models())  # every bundled model has its own guide


def test_the_panel_colours_the_last_turn_by_what_the_memory_saved(trained_model):
    import matplotlib.pyplot as plt

    from lstm_model.serving import Serving
    from ui.actions import ChatState, panel_figures

    st = ChatState(Serving(trained_model))
    "".join(st.session.send("ANNA:\nThe <moon>."))
    sentence, coloured = map(panel_figures(st, "cell", 0, "2").get, ("benefit_sentence", "benefit"))
    assert "fresh memory" in sentence and "nothing to compare" in sentence  # the first turn started fresh
    "".join(st.session.send("ANNA:\nThe sea."))
    sentence, coloured = map(panel_figures(st, "cell", 0, "2").get, ("benefit_sentence", "benefit"))
    benefits = st.session.char_benefits(-1)
    read = benefits["read"]
    assert "".join(ch for ch, _ in read) == "ANNA:\nThe sea.\n\n"  # the message and the separator, as fed
    mean = sum(v for _, v in read) / len(read)
    assert f"{abs(mean):.2f} bits/char" in sentence
    # the message's mean benefit agrees with the turn's own measure (message characters only, step vs nn.LSTM)
    message = read[: st.session.turns[-1].message_chars]
    assert abs(sum(v for _, v in message) / len(message) - st.session.turns[-1].measures["memory_benefit_bpc"]) < 0.01
    assert coloured.count('class="ct-seg ct-you"') == 1 and coloured.count('class="ct-seg ct-model"') == 1
    assert "↵" in coloured  # line breaks kept, and shown
    from lstm_model.views import coloured_text_html

    tag = coloured_text_html([("user", [("<", 1.0), ("b", -1.0)])], 4.0, "bits")
    assert '>&lt;</span>' in tag and '><</span>' not in tag  # characters are shown as text, never as HTML
    assert "rgba(33,102,172,0.25)" in tag and "rgba(178,24,43,0.25)" in tag  # +1 and -1 bit on a 4-bit scale
    st.session.memory = False
    "".join(st.session.send("CLARA:\nThe shore."))
    sentence, coloured = map(panel_figures(st, "cell", 0, "2").get, ("benefit_sentence", "benefit"))
    assert "memory off" in sentence and coloured == ""
    plt.close("all")


def test_a_model_trained_on_its_replies_is_judged_on_its_replies():
    from lstm_model.views import benefit_html, benefit_sentence

    benefits = {"read": [("W", -29.0), ("?", 3.5)], "written": [("k", 0.7), ("\n", 0.3)]}
    plain = benefit_sentence(benefits)
    assert "cost 12.75 bits/char" in plain and "29.0 bits lost" in plain
    judged = benefit_sentence(benefits, replies_only=True)
    assert "replies only" in judged and "saved 0.50 bits/char" in judged and "29.0" not in judged
    assert "rgba(178,24,43,1.00)" in benefit_html(benefits) and "rgba(178,24,43" not in benefit_html(benefits, True)


def test_the_unit_inspector_starts_on_a_unit_worth_seeing_and_keeps_the_visitor_s(trained_model):
    import matplotlib.pyplot as plt

    from lstm_model.gates import DEFAULT_PATTERN, units_following
    from lstm_model.serving import Serving
    from ui.actions import ChatState, found_units, panel_figures

    st = ChatState(Serving(trained_model))
    "".join(st.session.send("ANNA:\nThe moon.\nThe sea."))
    figures = panel_figures(st, "cell", 0, "2")
    best = units_following(st.session.trace_recent(1500), DEFAULT_PATTERN, layer=1, k=1)[0][0]
    assert figures["unit"]["value"] == best and f"shows unit {best}" in figures["status"]
    st.unit_chosen = True  # the visitor typed a unit: later refreshes keep it
    assert panel_figures(st, "cell", 3, "2")["unit"]["value"] == 3
    unit, text, html, pick = found_units(st, "inside a speaker name", "2")
    assert pick["visible"] and pick["value"] == str(unit) and [v for _, v in pick["choices"]][0] == str(unit)
    assert f"Showing unit {unit}" in text and "ct-seg" in html
    plt.close("all")


def test_the_heatmap_labels_every_character_shades_the_message_and_shows_values_on_hover(trained_model):
    import html
    import re

    from lstm_model.gates import top_changing_units, trace
    from lstm_model.views import HEATMAP_CHARS, heatmap_html

    short, long = "ANNA:\nThe sea.\n\nANNA:\nThe moon.", "ANNA:\nThe sea. " * 40
    tr = trace(trained_model, short)
    page = heatmap_html(tr, "cell", -1, units=5, message_chars=16)
    chars_row = re.search(r'<tr class="hm-chars">(.*?)</tr>', page).group(1)
    labels = [html.unescape(x) for x in re.findall(r"<td [^>]*>(.*?)</td>", chars_row)]
    assert labels == [{"\n": "⏎", " ": "␣"}.get(c, c) for c in short]  # every character, in order
    assert re.findall(r'<td class="(you|model)"', chars_row) == ["you"] * 16 + ["model"] * (len(short) - 16)
    # Hover: each cell's title is that unit's exact value at that character, from the trace.
    unit = top_changing_units(tr, layer=-1, k=5)[0]
    first_row = re.search(r"<tr><th>(\d+)</th>(.*?)</tr>", page)
    assert int(first_row.group(1)) == unit
    shown = [float(v) for v in re.findall(r'title="unit \d+, “[^”]*”: ([-+][\d.]+)"', first_row.group(2))]
    expected = tr.cell[-1][:, unit].tolist()
    assert len(shown) == len(short) and all(abs(a - b) < 6e-4 for a, b in zip(shown, expected))
    assert page.count('<tr class="hm-meter">') == trained_model.num_layers  # the retention meter, per layer
    gates = heatmap_html(tr, "forget", 0, units=5)
    assert re.search(r'class=g(\d+) title="unit \d+, “[^”]*”: 0\.\d{3}"', gates)
    wide = heatmap_html(trace(trained_model, long))
    assert len(re.findall(r"<td [^>]*>", re.search(r'<tr class="hm-chars">(.*?)</tr>', wide).group(1))) == HEATMAP_CHARS
    assert f"the last {HEATMAP_CHARS} characters of {len(long)}" in wide
    assert "hm-empty" in heatmap_html(None)


def test_fresh_replies_can_be_switched_off_for_a_busy_server(trained_model):
    from types import SimpleNamespace

    from lstm_model.serving import Serving
    from ui.actions import ChatApp, Options

    for on in (True, False):
        app = ChatApp(Options(fresh_replies=on))
        tab = SimpleNamespace(session_hash="tab")
        st = app.state(tab)
        st.switch(Serving(trained_model), "trained")
        for line in ("ANNA:\nThe sea.", "ANNA:\nThe moon."):
            drain(app.chat(line, 0.8, 40, 1.0, 30, 3, "\\n\\n", True, request=tab))
        assert (st.session.turns[-1].fresh_reply is not None) == on


def test_the_timeline_charts_the_reply_s_benefit_for_a_model_trained_on_its_replies(trained_model):
    import matplotlib.pyplot as plt

    from lstm_model.serving import Serving
    from ui.actions import ChatState, panel_figures

    st = ChatState(Serving(trained_model))
    for message in ("ANNA:\nThe moon.", "ANNA:\nThe sea."):
        "".join(st.session.send(message))
        plain = panel_figures(st, "cell", 0, "2")
    turns = plain["report"]["turns"]
    assert turns[0]["reply_benefit_bpc"] == 0.0  # a fresh first turn: the carried memory is the fresh one
    written = st.session.char_benefits(-1)["written"]
    assert turns[1]["reply_benefit_bpc"] == round(sum(b for _, b in written) / len(written), 4)
    bars = [p.get_height() for p in plain["timeline"].axes[2].patches]
    assert bars[1] == st.session.turns[1].measures["memory_benefit_bpc"]  # the message's, for a plain model
    st.source = "babi"  # the page's guide for the bAbI model, trained on its replies only
    assert st.guide.replies_only
    for message in ("ANNA:\nThe sun.", "BEN:\nThe home."):  # two turns, one panel refresh (as the memory test does)
        "".join(st.session.send(message))
    parts = panel_figures(st, "cell", 0, "2")
    figure, report = parts["timeline"], parts["report"]
    judged = figure.axes[2]
    heights = [p.get_height() for p in judged.patches]
    measured = [t.measures["reply_benefit_bpc"] for t in st.session.turns]
    assert None not in measured and heights[1:] == measured[1:] and abs(heights[0]) < 1e-5
    assert [t["reply_benefit_bpc"] for t in report["turns"]] == [round(m, 4) for m in measured]
    assert "reply" in judged.get_ylabel() and "reply" not in plain["timeline"].axes[2].get_ylabel()
    plt.close("all")


def stream(url: str, body, client=None) -> tuple[int, list[tuple[str | None, dict]]]:
    """POST /chat/stream (ui/stream.py): the status and the events (name, data) it sent."""
    import json

    import httpx

    with httpx.stream("POST", url.rstrip("/") + "/chat/stream", json=body, timeout=120) as response:
        if response.status_code != 200:
            return response.status_code, [(None, json.loads(response.read()))]
        events, name = [], None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                name = None
        return 200, events


def test_the_plain_stream_is_the_chat_with_its_memory_outside_the_queue(server):
    c = client(server)
    messages = ("ROMEO:\nWhat light through yonder window breaks?", "JULIET:\nIt is the east.")
    plain, fresh, token, first_fresh = [], [], None, None
    for turn, message in enumerate(messages):
        body = {"message": message, "max_chars": 120, "seed": 7, **({"session": token} if token else {})}
        status, events = stream(server, body)
        assert status == 200 and events[-1][0] == "done" and all(name is None for name, _ in events[:-1])
        done = events[-1][1]
        assert "".join(data["text"] for _, data in events[:-1]) == done["reply"]
        assert done["session"] == (token or done["session"]) and len(done["session"]) >= 24  # the server's token
        token = done["session"]
        plain.append(done["reply"])
        # the reply a fresh memory writes is a new session's first reply to the same message, with the
        # turn's seed (ChatSession draws turn i with seed + 1000 i)
        _, alone = stream(server, {"message": message, "max_chars": 120, "seed": 7 + 1000 * turn})
        first_fresh = first_fresh or alone[-1][1]["session"]
        fresh.append(done["fresh_reply"])
        assert alone[-1][1]["reply"] == done["fresh_reply"]
    # the same two turns through Gradio's /chat: the same replies, so the same memory carried
    through_queue = [c.predict(m, 0.8, 40, 1.0, 120, 7, "\\n\\n", True, api_name="/chat") for m in messages]
    assert through_queue == plain and plain[1] != fresh[1]  # the memory changed the second reply
    # memory off, in the session that has read the first message: the second turn starts fresh
    status, events = stream(server, {"message": messages[1], "session": first_fresh, "memory": False, "seed": 7,
                                     "max_chars": 120})
    assert events[-1][1]["reply"] == fresh[1]


def test_the_plain_stream_answers_bad_bodies_in_a_sentence(server):
    for body, said in (([1], "JSON object"), ({"mesage": "hi"}, "Unknown field 'mesage'"),
                       ({"message": 5}, "as text"), ({"message": "hi", "top_p": 7}, "Top-p must be"),
                       ({"message": "hi", "session": "x" * 201}, "leave it out"),
                       ({"message": "hi", "session": 0}, "leave it out"), ({"message": "hi", "session": []}, "leave it out"),
                       ({"message": "hi", "stop": {"a": 1}}, "stop sequence is text"), ({"message": "hi", "stop": 5}, "text"),
                       ({f"x{i}": 1 for i in range(20000)}, "and 19997 more"),
                       ({"message": "hi", "memory": "yes"}, "true or false")):
        status, events = stream(server, body)
        assert status == 422 and said in events[0][1]["error"], body
    status, events = stream(server, {"message": "ROMEO: \u263a", "max_chars": 5})
    assert status == 200 and events[-1][1]["session"]  # no session named: a new one, named in the answer
    assert any("\u263a" in note for note in events[-1][1]["notes"])  # the skipped character, told


def test_the_plain_stream_is_refused_beyond_the_admission_limit_and_a_client_that_leaves_frees_its_place():
    import socket
    import time

    import httpx
    import uvicorn
    from starlette.applications import Starlette

    from ui.actions import ChatApp, Options
    from ui.stream import stream_route

    chat_app = ChatApp(Options(concurrency=1))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[stream_route(chat_app)]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:  # waiting for a condition, not a race
            time.sleep(0.05)
        other = stream(url, {"message": "JULIET:", "max_chars": 3})[1][-1][1]["session"]
        with chat_app.admitted():  # the one place taken
            status, events = stream(url, {"message": "JULIET:", "session": other})
            assert stream(url, {"message": "JULIET:"})[0] == 503  # a refused first call leaves no session
        assert status == 503 and "send it again" in events[0][1]["error"]
        assert len(chat_app.stream_session(other).session.turns) == 1  # nothing was read: the user's to resend
        assert len(chat_app._sessions) == 1
        long = {"message": "ROMEO:", "max_chars": 5000, "stop": ""}
        with httpx.stream("POST", url + "chat/stream", json=long, timeout=60) as first:
            lines = first.iter_lines()
            assert first.status_code == 200 and next(lines).startswith("data: ")
            token = first.headers["X-Chat-Session"]
        deadline = time.monotonic() + 60  # the client has left after its first piece
        while chat_app._streaming and time.monotonic() < deadline:  # the server notices: a condition, not a race
            time.sleep(0.05)
        status, events = stream(url, {"message": "JULIET:", "session": other, "max_chars": 20})
        assert status == 200 and events[-1][0] == "done"
        assert 0 < len(chat_app.stream_session(token).session.turns[0].reply) < 5000  # the reply so far is kept
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.parametrize("cell, choices, memory", [("lstm", ["cell", "forget", "input", "output", "hidden"], "cell state"),
                                                   ("gru", ["hidden", "update", "reset", "candidate"], "hidden state H"),
                                                   ("rnn", ["hidden"], "hidden state H")])
def test_the_panel_offers_each_cell_its_own_quantities_and_guide(play_text, cell, choices, memory):
    import matplotlib.pyplot as plt
    import torch

    from lstm_model import CharLSTM, views
    from lstm_model.serving import Serving
    from ui.actions import PANEL_PARTS, ChatState, found_units, panel_figures

    torch.manual_seed(0)
    model = CharLSTM(vocab=sorted(set(play_text)), embed_dim=8, hidden_size=16, num_layers=2, dropout=0.0,
                     cell=cell).eval()
    st = ChatState(Serving(model))
    "".join(st.session.send("ANNA:\nThe moon."))
    parts = panel_figures(st, "forget", 0, "2")  # a quantity this cell may not have
    assert set(parts) == set(PANEL_PARTS)
    assert parts["quantity"]["choices"] == [(c, c) for c in choices] or parts["quantity"]["choices"] == choices
    assert parts["quantity"]["value"] == ("forget" if cell == "lstm" else choices[0])
    assert parts["explanation"] == views.explanation(cell) and "ct-" in parts["heatmap"]
    assert memory in parts["status"] and memory in found_units(st, "inside a speaker name", "2")[1]
    plt.close("all")


def test_bAbI_answers_are_marked_right_or_wrong_against_the_facts_told():
    from lstm_model.hub import load_model
    from lstm_model.session import ChatSession
    from ui.render import history_of

    session = ChatSession(load_model("babi"), greedy=True, seed=0)
    for text in ("mary went to the kitchen", "John moved to the office.", "where is mary"):
        "".join(session.send(text))
    answer = history_of(session, judge=True)[-1]["content"]
    assert session.turns[-1].reply == "kitchen" and "✓ right" in answer
    assert "✓" not in history_of(session)[-1]["content"]  # a model of other forms is not judged
    session.memory = False  # the same question from a fresh memory: the facts still say kitchen
    "".join(session.send("Where is Mary?"))
    assert session.turns[-1].reply == "I don't know."
    assert "✗ the facts told say “kitchen”" in history_of(session, judge=True)[-1]["content"]
