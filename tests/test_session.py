import json
import math

import pytest
import torch

from lstm_model.generate import stream
from lstm_model.session import MAX_MESSAGE_CHARS, ChatSession


def run(reply):
    return "".join(reply)


def test_memory_carries_across_turns_and_undo_restores_exact_tensors(trained_model):
    session = ChatSession(trained_model, seed=1, max_new_chars=80)
    fresh = session.state
    assert not fresh[0].any()
    run(session.send("ANNA:\nThe sea is calm."))
    after_one = tuple(t.clone() for t in session.state)
    assert after_one[1].abs().sum() > 0
    run(session.send("BEN:\nSing to me of home."))
    assert len(session.turns) == 2
    assert not torch.equal(session.state[1], after_one[1])
    assert session.undo()
    assert torch.equal(session.state[0], after_one[0]) and torch.equal(session.state[1], after_one[1])
    assert len(session.turns) == 1
    assert session.undo() and torch.equal(session.state[1], fresh[1])
    assert not session.undo()


def test_retry_resamples_from_the_state_after_the_message(trained_model):
    session = ChatSession(trained_model, seed=4, max_new_chars=60, temperature=1.2)
    first = run(session.send("CLEO:\nThe moon is bright."))
    after_user = session.turns[-1].state_after_user
    replies = {first}
    for _ in range(3):
        replies.add(run(session.retry()))
        assert torch.equal(session.turns[-1].state_after_user[1], after_user[1])
    assert len(replies) > 1 and len(session.turns) == 1
    # The reply's state is the state after the message, fed the reply (and the stop).
    turn = session.turns[-1]
    fed = turn.reply + ("\n\n" if turn.stopped_by == "stop" else "")
    ids = torch.tensor([trained_model.vocab.encode(fed)])
    with torch.no_grad():
        _, (h, c) = trained_model.lstm(trained_model.embedding(ids), turn.state_after_user)
    torch.testing.assert_close(session.state[1], c, atol=1e-5, rtol=1e-5)


def test_seeded_conversations_are_reproducible(trained_model):
    a = ChatSession(trained_model, seed=9, max_new_chars=50)
    b = ChatSession(trained_model, seed=9, max_new_chars=50)
    for message in ["ANNA:\nHi.", "BEN:\nThe sea."]:
        assert run(a.send(message)) == run(b.send(message))


def test_memory_off_starts_every_turn_fresh(trained_model):
    session = ChatSession(trained_model, memory=False, seed=1, max_new_chars=40)
    run(session.send("ANNA:\nThe sea is calm."))
    assert not session.state[0].any()
    run(session.send("BEN:\nSo sing."))
    assert not session.turns[-1].state_before[1].any()
    assert session.turns[-1].measures["memory_benefit_bpc"] == 0.0


def test_reset_clears_transcript_and_state(trained_model):
    session = ChatSession(trained_model, seed=1, max_new_chars=40)
    run(session.send("ANNA:\nHome."))
    session.reset()
    assert session.turns == [] and not session.state[1].any() and session.memory_report()["turns"] == []


def test_memory_report_is_plain_data_with_the_measurements(trained_model):
    session = ChatSession(trained_model, seed=1, max_new_chars=60)
    run(session.send("ANNA:\nThe sea is calm and the moon is bright."))
    run(session.send("the sea is calm and the moon is bright"))
    report = json.loads(json.dumps(session.memory_report()))
    assert [t["turn"] for t in report["turns"]] == [0, 1] and [t["number"] for t in report["turns"]] == [1, 2]
    t0, t1 = report["turns"]
    for t in (t0, t1):
        assert len(t["h_norm"]) == len(t["c_norm"]) == 2 and all(x > 0 for x in t["c_norm"])
        assert len(t["c_change"]) == 2
        assert abs(t["memory_benefit_bpc"] - (t["loss_fresh_bpc"] - t["loss_carried_bpc"])) < 1e-9
    assert t0["memory_benefit_bpc"] == 0.0  # the first turn starts from a fresh state either way
    # The carried loss is the message's loss read from the state the turn started from.
    turn = session.turns[1]
    ids = torch.tensor([trained_model.vocab.encode(turn.user)])
    with torch.no_grad():
        logits, _ = trained_model(ids, turn.state_before)
        first = trained_model.logits_from_state(turn.state_before)
        predictions = torch.cat([first, logits[0, :-1]])
        expected = torch.nn.functional.cross_entropy(predictions, ids[0]).item() / math.log(2)
    assert abs(t1["loss_carried_bpc"] - expected) < 1e-4


def test_carried_memory_helps_the_bundled_model_at_a_speech_boundary():
    """After a reply that ended at a blank line, the memory knows a new speech starts: the next
    speaker's name and line cost fewer bits than from a fresh, all-zero state."""
    from lstm_model import load_model

    model = load_model()
    for seed in (1, 2, 3):
        session = ChatSession(model, seed=seed, max_new_chars=3000)
        run(session.send("ROMEO:\nWhat light through yonder window breaks?"))
        assert session.turns[0].stopped_by == "stop"  # the reply ended its speech with a blank line
        run(session.send("JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?"))
        # The bundled 2 x 768 model saves 0.062, 0.046 and 0.058 bits/char with these seeds.
        assert session.memory_report()["turns"][1]["memory_benefit_bpc"] > 0.03, seed


def test_unknown_characters_and_long_messages_are_reported(trained_model):
    session = ChatSession(trained_model, seed=1, max_new_chars=10)
    run(session.send("ANNA: 😀<script>alert(1)</script>"))
    notices = session.notices()
    assert any("😀" in n and "skipped" in n for n in notices)
    assert session.turns[-1].skipped[0] == "😀"
    run(session.send("a" * (MAX_MESSAGE_CHARS + 5)))
    assert any("cap" in n for n in session.notices())
    assert session.turns[-1].truncated == 5
    run(session.send(""))  # an empty message is a turn too: the separator alone
    assert session.turns[-1].measures["message_chars"] == 0


def test_trace_turn_replays_the_turn_exactly(trained_model):
    session = ChatSession(trained_model, seed=1, max_new_chars=60)
    run(session.send("ANNA:\nThe sea."))
    run(session.send("BEN:\nThe moon."))
    tr = session.trace_turn(-1)
    turn = session.turns[-1]
    assert tr.text == turn.fed + turn.reply
    torch.testing.assert_close(tr.state[1][:, 0], _feed(trained_model, tr.text, turn.state_before)[1][:, 0])


def _feed(model, text, state):
    ids = torch.tensor([model.vocab.encode(text)])
    with torch.no_grad():
        return model.lstm(model.embedding(ids), state)[1]


def test_a_reply_that_fails_leaves_no_half_recorded_turn(trained_model):
    from lstm_model.serving import Serving

    serving = Serving(trained_model, engine="torch")
    chat = ChatSession(trained_model, seed=1, max_new_chars=40, serving=serving)
    first = "".join(chat.send("ANNA:\nThe moon."))
    state = chat.state[1].clone()
    step = serving.step()
    original, calls = step.step, []

    def failing(ids, state):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("the engine failed")
        return original(ids, state)

    step.step = failing
    try:
        with pytest.raises(RuntimeError):
            "".join(chat.send("BEN:\nSing."))
        assert len(chat.turns) == 1 and torch.equal(chat.state[1], state)  # taken back whole
        calls.clear()
        with pytest.raises(RuntimeError):
            "".join(chat.retry())
        assert len(chat.turns) == 1 and chat.turns[0].reply == first and chat.turns[0].done
        assert torch.equal(chat.state[1], state)
    finally:
        step.step = original
    assert len(chat.memory_report()["turns"]) == 1


def test_the_transcript_keeps_what_was_read(trained_model):
    chat = ChatSession(trained_model, max_new_chars=5)
    "".join(chat.send("a" * (MAX_MESSAGE_CHARS + 7)))
    turn = chat.memory_report()["turns"][0]
    assert len(turn["user"]) == MAX_MESSAGE_CHARS and turn["truncated_chars"] == 7


def test_a_reply_cut_by_the_length_cap_is_closed_by_the_stop_sequence(trained_model):
    """The next message must not be glued on mid-line: after a capped reply the stop sequence is
    fed, the turn says so, and its text (what the LSTM read) includes it."""
    for seed in range(20):  # the first seed whose reply the cap cuts
        session = ChatSession(trained_model, seed=seed, max_new_chars=7, stop="\n\n")
        "".join(session.send("ANNA:\nThe sea."))
        turn = session.turns[-1]
        if turn.stopped_by == "length":
            break
    assert turn.stopped_by == "length" and turn.closed_with == "\n\n"
    assert session.memory_report()["turns"][-1]["closed_with"] == "\n\n"
    reread = stream(trained_model, turn.reply + "\n\n", turn.state_after_user, max_new_chars=0)
    "".join(reread)  # a stream does its work when read
    expected = reread.state
    torch.testing.assert_close(turn.state_after[1], expected[1], atol=1e-5, rtol=1e-5)
    assert session.turn_text(turn).endswith(turn.reply + "\n\n")
    finished = ChatSession(trained_model, seed=0, max_new_chars=2000, stop="\n\n")
    "".join(finished.send("ANNA:\nThe sea."))
    assert finished.turns[-1].stopped_by == "stop" and finished.turns[-1].closed_with == ""


def test_the_fresh_memory_reply_is_what_a_fresh_session_writes(trained_model):
    from lstm_model.serving import Serving

    settings = dict(max_new_chars=40, temperature=1.0)
    differs = 0
    for serving in (None, Serving(trained_model, batching=True)):  # alone, and through the batching decoder
        for seed in (11, 12, 13):
            session = ChatSession(trained_model, serving=serving, seed=seed, **settings)
            run(session.send("ANNA:\nThe sea."))
            run(session.send("BORIS:\nThe ship."))
            turn = session.turns[1]
            fresh = session.fresh_reply(1)
            alone = ChatSession(trained_model, seed=turn.sampling.seed, **settings)
            run(alone.send("BORIS:\nThe ship."))
            assert fresh == alone.turns[0].reply
            report = session.memory_report()["turns"]
            assert report[1]["fresh_reply"] == fresh and report[1]["memory"] is True
            assert report[1]["seed"] == turn.sampling.seed
            assert session.fresh_reply(0) == session.turns[0].reply  # the first turn started fresh anyway
            differs += fresh != turn.reply
        if serving is not None:
            serving.close()
    assert differs  # the carried memory changed some replies: the comparison shows something
    # Memory off: every turn starts fresh, so the reply is its own fresh reply.
    off = ChatSession(trained_model, memory=False, seed=3, **settings)
    run(off.send("ANNA:\nThe sea."))
    run(off.send("BORIS:\nThe ship."))
    assert off.fresh_reply(1) == off.turns[1].reply and off.memory_report()["turns"][1]["memory"] is False
    # Without a seed each turn still draws a seed of its own, reported, so the turn can be replayed.
    loose = ChatSession(trained_model, **settings)
    run(loose.send("ANNA:\nThe sea."))
    seed = loose.memory_report()["turns"][0]["seed"]
    again = ChatSession(trained_model, seed=seed, **settings)
    run(again.send("ANNA:\nThe sea."))
    assert isinstance(seed, int) and again.turns[0].reply == loose.turns[0].reply


def test_the_recent_text_knows_who_wrote_each_character(trained_model):
    session = ChatSession(trained_model, seed=2, max_new_chars=60)
    for line in ("ANNA:\nThe sea.", "BORIS:\nThe ship.", "ANNA:\nThe moon."):
        run(session.send(line))
    everything = session.recent_roles(10_000)
    assert len(everything) == len(session.trace_recent(10_000).text)
    expected = [role for t in session.turns for role in
                ["user"] * len(t.fed) + ["model"] * (len(session.turn_text(t)) - len(t.fed))]
    assert everything == expected
    cut = session.recent_roles(50)  # a window that starts inside an older turn
    assert len(cut) == len(session.trace_recent(50).text) and cut == everything[-len(cut):]
    from lstm_model.views import unit_html

    html = unit_html(session.trace_recent(10_000), session.recent_roles(10_000), unit=3)
    assert html.count('class="ct-seg ct-you"') == 3 and html.count('class="ct-seg ct-model"') == 3


def test_the_recent_trace_traces_each_turn_once_and_equals_a_trace_from_scratch(trained_model, monkeypatch):
    import lstm_model.session as session_module
    from lstm_model.gates import QUANTITIES, join_traces, trace

    traced = []
    monkeypatch.setattr(session_module, "trace", lambda model, text, state: traced.append(text) or trace(model, text, state))
    session = ChatSession(trained_model, seed=2, max_new_chars=60)
    for line in ("ANNA:\nThe sea.", "BORIS:\nThe ship.", "ANNA:\nThe moon."):
        run(session.send(line))
        session.trace_recent(10_000)
    assert traced == [session.turn_text(t) for t in session.turns]  # one trace a turn, never again
    run(session.retry())
    recent = session.trace_recent(10_000)
    assert traced[-1] == session.turn_text(session.turns[-1]) and len(traced) == 4  # the retried reply alone
    scratch = join_traces([trace(trained_model, session.turn_text(t), t.state_before) for t in session.turns])
    assert recent.text == scratch.text
    for name in QUANTITIES:
        assert torch.allclose(recent.get(name), scratch.get(name), atol=1e-6)
    window = session.trace_recent(50)
    assert window.text == scratch.text[-50:] and torch.allclose(window.cell, scratch.cell[:, -50:], atol=1e-6)
    last = session.turn_text(session.turns[-1])
    assert session.cache_bytes() > 0 and session.undo()
    assert session.trace_recent(10_000).text == scratch.text[:-len(last)]  # the undone turn is left out
    session.reset()
    assert session.cache_bytes() == 0 and session.trace_recent() is None


@pytest.mark.parametrize("action", ["send", "retry"])
def test_a_reader_that_leaves_takes_its_reply_out_of_the_decoder_at_once(trained_model, action):
    """Closing the reply iterator (what the app does when a client disconnects) closes the stream:
    its decoder row leaves after the step under way, not when the garbage collector runs. The
    turn keeps the reply so far, and the memory is the state after it; the message's fresh-memory
    loss is measured in a thread of its own (the closer does not wait for it). The decoder steps
    only when given a permit (GatedStep), so nothing here depends on timing."""
    from test_batching import GatedStep, recording_submits

    from lstm_model.evaluate import text_loss
    from lstm_model.serving import Serving

    serving = Serving(trained_model, batching=True)
    session = ChatSession(trained_model, serving=serving, seed=5, max_new_chars=20, stop=None)
    run(session.send("ANNA:\nThe moon."))  # a carried memory: the message has a fresh-memory loss to measure
    gate = GatedStep(serving.step())
    serving.decoder.get_step = lambda: gate
    requests = recording_submits(serving.decoder)
    session.update_settings(max_new_chars=5000)
    gate.permits.release(50)  # the message and a first piece, then the decoder waits inside a step
    reply = session.send("BEN:\nThe sea is calm.") if action == "send" else session.retry()
    first = next(reply)
    gate.stalled.wait()
    reply.close()
    request = requests[0]
    assert request.cancelled  # at once, by the close
    at_close = serving.decoder.steps
    gate.permits.release(10_000)  # room for the whole reply, were it still being written
    while request.outbox.get() is not None:
        pass
    assert request.left == at_close + 1  # it left after the step under way
    turn = session.turns[-1]
    assert turn.reply == first and turn.stopped_by == "interrupted" and not turn.done
    assert torch.equal(session.state[1], turn.state_after[1])
    torch.testing.assert_close(turn.state_after[1], _feed(trained_model, turn.reply, turn.state_after_user)[1],
                               atol=1e-5, rtol=1e-5)
    if turn.measuring is not None:
        turn.measuring.join()
    assert (action == "send") == (turn.measuring is not None)  # a retry's message was measured by its first reply
    ids = torch.tensor(trained_model.vocab.encode(turn.fed))
    fresh = text_loss(trained_model, ids, scored=turn.message_chars, step=serving.step()).mean / math.log(2)
    assert abs(turn.measures["loss_fresh_bpc"] - fresh) < 1e-5
    assert turn.measures["memory_benefit_bpc"] == turn.measures["loss_fresh_bpc"] - turn.measures["loss_carried_bpc"]
    assert len(run(session.send("CLEO:\nHome.", max_new_chars=10))) == 10  # the session goes on from there
    serving.close()


def test_the_fresh_memory_loss_is_read_by_the_decoder_as_the_carried_one(trained_model):
    """With a batching serving the second pass over the message (from a fresh memory) is one more
    decoder row that only reads, not a loop of steps in the reader's thread; its loss is the one
    the loss loop gets with the same step."""
    from test_batching import recording_submits

    from lstm_model.evaluate import text_loss
    from lstm_model.serving import Serving

    serving = Serving(trained_model, batching=True)
    session = ChatSession(trained_model, serving=serving, seed=2, max_new_chars=30)
    run(session.send("ANNA:\nThe sea."))
    requests = recording_submits(serving.decoder)
    run(session.send("BEN:\nSing to me of home and the moon."))
    turn = session.turns[-1]
    assert [r.read_only for r in requests] == [False, True] and turn.measuring is None
    ids = torch.tensor(trained_model.vocab.encode(turn.fed))
    fresh = text_loss(trained_model, ids, scored=turn.message_chars, step=serving.step()).mean / math.log(2)
    assert abs(turn.measures["loss_fresh_bpc"] - fresh) < 1e-5
    serving.close()


def test_a_fresh_reply_nobody_waits_for_leaves_the_decoder(trained_model):
    """fresh_reply's `cancelled`: asked between pieces; once True the fresh reply's stream is
    closed, its row leaves the decoder unfinished and nothing is kept."""
    from test_batching import GatedStep, recording_submits

    from lstm_model.serving import Serving

    serving = Serving(trained_model, batching=True)
    session = ChatSession(trained_model, serving=serving, seed=2, max_new_chars=3000, stop=None)
    run(session.send("ANNA:\nThe sea.", max_new_chars=10))
    run(session.send("BEN:\nThe moon.", max_new_chars=3000))
    gate = GatedStep(serving.step())
    serving.decoder.get_step = lambda: gate
    requests = recording_submits(serving.decoder)
    gate.permits.release(100)  # the message and a first piece; far from the 3,000 characters asked
    asked = []
    assert session.fresh_reply(-1, cancelled=lambda: asked.append(1) or True) is None
    assert asked == [1] and requests[0].cancelled and session.turns[-1].fresh_reply is None
    gate.permits.release(10_000)
    while requests[0].outbox.get() is not None:
        pass
    assert requests[0].matcher.stopped_by is None and requests[0].left - requests[0].joined <= 101  # left unfinished
    serving.close()
