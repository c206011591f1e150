"""The batching decoder (lstm_model/batching.py), reached through a Serving with batching on."""

import threading

import pytest
import torch

from lstm_model.generate import stream
from lstm_model.serving import Serving
from lstm_model.session import ChatSession

PROMPTS = ["ANNA:\n", "BEN:\nThe sea is calm.\n\nCLEO:\n", "CLEO:\n", "ANNA:\nSing.\n\n", "BEN:\n", "ANNA:\nHome.\n"]


def settings(i):
    return dict(max_new_chars=150, temperature=0.9, top_k=8 if i % 2 else None, top_p=0.9 if i % 3 == 0 else None,
                seed=100 + i, stop="\n\n" if i % 2 == 0 else None)


@pytest.fixture
def batched(trained_model):
    return Serving(trained_model, batching=True)


def alone_and_together(model, prompts, batched, alone_serving=None):
    """Each prompt's (text, state, stopped_by) written alone, then all of them at once through
    `batched` (threads that start together, so that the decoder steps them as one batch)."""
    alone = []
    for i, prompt in enumerate(prompts):
        s = stream(model, prompt, serving=alone_serving, **settings(i))
        alone.append(("".join(s), s.state, s.stopped_by))
    together = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def run(i):
        s = stream(model, prompts[i], serving=batched, **settings(i))
        start.wait()
        together[i] = ("".join(s), s.state, s.stopped_by)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return alone, together


def test_batched_sessions_get_the_text_they_would_get_alone(trained_model, batched):
    alone, together = alone_and_together(trained_model, PROMPTS, batched)
    for (a, state_a, why_a), (b, state_b, why_b) in zip(alone, together):
        assert a == b and why_a == why_b
        torch.testing.assert_close(state_a[1], state_b[1], atol=1e-4, rtol=1e-4)
    # The steps really were shared: fewer batched steps than characters produced.
    assert batched.decoder.steps < batched.decoder.rows


def test_sessions_join_and_leave_between_steps(trained_model, batched):
    long = stream(trained_model, "ANNA:\n", max_new_chars=300, seed=1, serving=batched)
    first = next(long)
    short = "".join(stream(trained_model, "BEN:\n", max_new_chars=20, seed=2, serving=batched))
    rest = first + "".join(long)
    assert len(short) == 20 and len(rest) == 300
    assert rest == "".join(stream(trained_model, "ANNA:\n", max_new_chars=300, seed=1))


def test_an_abandoned_stream_leaves_the_decoder(trained_model, batched):
    s = stream(trained_model, "ANNA:\n", max_new_chars=5000, seed=1, serving=batched)
    next(s)
    s.close()
    after = "".join(stream(trained_model, "BEN:\n", max_new_chars=30, seed=3, serving=batched))
    assert len(after) == 30
    assert not batched.decoder._active


def test_chat_sessions_share_a_decoder_and_stay_reproducible(trained_model, batched):
    shared = [ChatSession(trained_model, seed=7, max_new_chars=60, serving=batched) for _ in range(3)]
    solo = ChatSession(trained_model, seed=7, max_new_chars=60)
    expected = "".join(solo.send("ANNA:\nThe moon."))
    replies = [None] * 3

    def talk(i):
        replies[i] = "".join(shared[i].send("ANNA:\nThe moon."))

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert replies == [expected] * 3
    assert torch.allclose(shared[0].state[1], solo.state[1], atol=1e-4)


@pytest.mark.parametrize("flush_seconds", [0.0, 0.02])
def test_stop_sequences_end_batched_replies_as_they_end_lone_ones(trained_model, batched, flush_seconds, monkeypatch):
    # Both paths must cut at the same place, keep the stop out of the text and feed it to the LSTM.
    # Handing the text over at every step (0 s) means that nothing is left to send when the stop
    # completes: the final state must arrive all the same.
    monkeypatch.setattr("lstm_model.batching.FLUSH_SECONDS", flush_seconds)
    monkeypatch.setattr("lstm_model.batching.MAX_HANDOVERS_PER_S", float("inf") if flush_seconds == 0 else 250)
    settings = dict(max_new_chars=400, temperature=0.8, stop=["\n\n", "zzz"])
    for seed in range(30):  # the first seed whose reply ends with a blank line
        alone = stream(trained_model, "ANNA:\n", seed=seed, **settings)
        text = "".join(alone)
        if alone.stopped_by == "stop":
            break
    together = stream(trained_model, "ANNA:\n", seed=seed, serving=batched, **settings)
    assert "".join(together) == text == together.text and alone.stopped_by == together.stopped_by == "stop"
    assert together.stop_text == alone.stop_text == "\n\n" and "\n\n" not in text
    torch.testing.assert_close(together.state[1], alone.state[1], atol=1e-5, rtol=1e-5)


def test_the_decoder_reads_prompts_as_the_loss_loop_does(trained_model, batched):
    """Prompts read by the decoder, batched with other replies: the same scored loss and state as
    the loss loop reading them alone with the same step, and the text that follows is the text
    of a lone reply (a reading row draws no random numbers)."""
    from lstm_model.evaluate import text_loss
    from lstm_model.generate import Stream
    from lstm_model.sampling import Sampling

    prompts = ["ANNA:\nThe sea is calm and the moon is bright.\n\n", "BEN:\nHome.\n\n", "CLEO:\nSing to me of home, sing.\n\n"]
    state = stream(trained_model, "ANNA:\nSo.\n\n", max_new_chars=0).state  # a carried state, not a fresh one
    streams, threads = [None] * 3, []

    def run(i):
        sampling = Sampling(max_new_chars=40, temperature=0.9, seed=i, stop=None)
        s = streams[i] = Stream(batched, prompts[i], state, sampling, score=len(prompts[i]) - 2)
        "".join(s)

    for i in range(3):
        threads.append(threading.Thread(target=run, args=(i,)))
        threads[-1].start()
    for t in threads:
        t.join(timeout=120)
    for i, prompt in enumerate(prompts):
        ids = torch.tensor(trained_model.vocab.encode(prompt))
        alone = text_loss(trained_model, ids, state, scored=len(prompt) - 2, step=batched.step())
        read = streams[i].read
        assert read.count == alone.count == len(prompt) - 2 and streams[i].read_by_step
        assert abs(read.mean - alone.mean) < 1e-5
        torch.testing.assert_close(read.state[1], alone.state[1], atol=1e-5, rtol=1e-5)
        lone = Serving(trained_model, batching=False)
        expected = Stream(lone, prompt, state, Sampling(max_new_chars=40, temperature=0.9, seed=i, stop=None))
        if len(prompt) <= 32:  # read by the step alone too: the same state, so the same text
            assert "".join(expected) == streams[i].text


def test_a_short_reply_is_not_held_up_by_a_long_one(trained_model, batched):
    """Fairness: every row advances one character a step, so 50 characters asked next to 5,000
    take 50 steps, however long the other reply is."""
    long = stream(trained_model, "ANNA:\n", max_new_chars=5000, seed=1, stop=None, serving=batched)
    next(long)
    short = stream(trained_model, "BEN:\n", max_new_chars=50, seed=2, stop=None, serving=batched)
    assert len("".join(short)) == 50
    assert short.steps == len("BEN:\n") + 50  # its prompt read, then one character a step
    assert batched.decoder._active  # the long reply is still being written
    long.close()


@pytest.mark.parametrize("read_first_s", [float("inf"), 0.0])
def test_a_newcomer_reads_its_message_while_the_writers_wait(trained_model, batched, read_first_s):
    """Reads go first: next to a reply being written, a newcomer's prompt is read in steps of the
    reading rows alone (read_first_s = inf: the whole prompt so; 0: every row at every step), and
    the newcomer's text is the one it gets alone."""
    decoder = batched.decoder
    decoder.read_first_s = read_first_s
    long = stream(trained_model, "ANNA:\n", max_new_chars=5000, seed=1, stop=None, serving=batched)
    next(long)
    before = decoder.read_steps
    prompt = "BEN:\nThe sea is calm.\n"
    short = stream(trained_model, prompt, max_new_chars=50, seed=2, stop=None, serving=batched)
    text = "".join(short)
    assert decoder.read_steps - before == (len(prompt) if read_first_s else 0)
    assert short.steps == len(prompt) + 50 and decoder._active  # the long reply is still being written
    assert text == "".join(stream(trained_model, prompt, max_new_chars=50, seed=2, stop=None))
    long.close()


@pytest.mark.parametrize("batching", [True, False])
def test_a_reader_that_must_not_block_gets_the_same_reply_and_is_woken(trained_model, batching):
    """ChatSession.wake (an asyncio handler's): the reply's stream never blocks on the decoder, it
    says WAIT when nothing is ready and SLOW before work that may block; the text, the turn and the
    state are those a blocking reader gets."""
    from lstm_model.generate import SLOW, WAIT

    serving = Serving(trained_model, batching=batching)
    blocking = ChatSession(trained_model, serving=serving, seed=3, max_new_chars=80)
    text = "".join(blocking.send("ANNA:\nThe sea."))
    woken = []
    polled = ChatSession(trained_model, serving=serving, seed=3, max_new_chars=80)
    polled.wake = lambda: woken.append(1)
    items = list(polled.send("ANNA:\nThe sea."))  # a busy reader: WAIT may come many times
    assert "".join(i for i in items if isinstance(i, str)) == text == polled.turns[-1].reply
    assert set(map(type, items)) <= {str, type(WAIT), type(SLOW)} and SLOW in items
    for a, b in zip(blocking.state, polled.state):
        torch.testing.assert_close(a, b)
    assert polled.turns[-1].measures["loss_carried_bpc"] == pytest.approx(blocking.turns[-1].measures["loss_carried_bpc"])
    if batching:  # the decoder woke the reader for every item it handed over; nothing ran before SLOW but reading
        assert woken and items[-1] is SLOW
    else:  # no decoder: everything may block, so SLOW comes first and nobody needs waking
        assert items[0] is SLOW and not woken


class GatedStep:
    """A generation step that takes a permit before each step, so that a test decides how far the
    decoder goes: `permits.release(n)` lets it take n more steps; `stalled` is set once it waits
    with none left (in the middle of a step, its step count not yet moved on)."""

    def __init__(self, step):
        self.inner, self.version = step, step.version
        self.permits = threading.Semaphore(0)
        self.stalled = threading.Event()

    def step(self, ids, state):
        if not self.permits.acquire(blocking=False):
            self.stalled.set()
            self.permits.acquire()
        return self.inner.step(ids, state)


def recording_submits(decoder) -> list:
    """Every request submitted to `decoder` from now on, in order."""
    requests, submit = [], decoder.submit

    def recorded(*args, **kwargs):
        requests.append(submit(*args, **kwargs))
        return requests[-1]

    decoder.submit = recorded
    return requests


def test_a_reply_cancelled_before_it_joins_never_takes_a_step(trained_model, batched):
    """A request cancelled while it waits to join (its reader gone at once) leaves as it joins;
    it used to join after the decoder had cleared its cancelled flag and then write its whole reply."""
    from lstm_model.sampling import Sampling, make_generator

    decoder = batched.decoder
    gate = GatedStep(batched.step())
    decoder.get_step = lambda: gate
    gate.permits.release(10)
    writer = stream(trained_model, "ANNA:\n", max_new_chars=5000, seed=1, stop=None, serving=batched)
    next(writer)
    gate.stalled.wait()  # the decoder is inside a step: whatever is submitted now waits to join
    state = trained_model.begin_state(1)
    with torch.no_grad():
        logits = trained_model.logits_from_state(state)[0]
    request = decoder.submit(logits, state, Sampling(max_new_chars=300, seed=2, stop=None), make_generator(2),
                             feed=trained_model.vocab.encode("BEN:\n"))
    request.cancel()
    gate.permits.release(10_000)
    while request.outbox.get() is not None:
        pass
    assert request.left == request.joined and request.fed == 0  # it joined and left between two steps
    writer.close()


def test_a_long_message_is_read_in_turns_with_the_replies_being_written(trained_model, batched):
    """Beyond its first `read_first_chars`, a prompt's reading rows step alone (the writers
    waiting) for as long as the last full step took, then everyone takes a full step: half the
    decoder's time each. Time here is a clock that each step moves on by its rows, so the schedule
    is exact: the first 8 characters read alone, then two alone (1 unit each) per full step of the
    reader and the writer (2 units). The read (loss and state) is the one the loss loop gets with
    the same step, and the reply the one written alone from it."""
    import math

    from lstm_model.evaluate import text_loss
    from lstm_model.generate import Stream
    from lstm_model.sampling import Sampling

    decoder, real = batched.decoder, batched.step()
    decoder.read_first_chars, decoder.read_first_s = 8, float("inf")  # only the turns bound the reads
    now = [0.0]
    decoder.clock = lambda: now[0]

    class Timed:
        version = real.version

        def step(self, ids, state):
            now[0] += len(ids)
            return real.step(ids, state)

    timed = Timed()
    decoder.get_step = lambda: timed
    writer = stream(trained_model, "ANNA:\n", max_new_chars=5000, seed=1, stop=None, serving=batched)
    next(writer)
    prompt = "BEN:\nThe sea is calm and the moon is bright so sing to me of home.\n" * 5 + "\n"
    assert trained_model.vocab.decode(trained_model.vocab.encode(prompt)) == prompt  # every character is read
    state = stream(trained_model, "ANNA:\nSo.\n\n", max_new_chars=0).state  # a carried state
    sampling = Sampling(max_new_chars=40, temperature=0.9, seed=3, stop=None)
    before = decoder.read_steps
    s = Stream(batched, prompt, state, sampling, score=len(prompt) - 2)
    text = "".join(s)
    rest = len(prompt) - 8  # read in turns: full step, two alone, full step, two alone...
    assert decoder.read_steps - before == 8 + rest - math.ceil(rest / 3)
    assert decoder._active  # the writer went on meanwhile
    writer.close()
    ids = torch.tensor(trained_model.vocab.encode(prompt))
    alone = text_loss(trained_model, ids, state, scored=len(prompt) - 2, step=real)
    assert s.read.count == alone.count == len(prompt) - 2 and abs(s.read.mean - alone.mean) < 1e-5
    torch.testing.assert_close(s.read.state[1], alone.state[1], atol=1e-5, rtol=1e-5)
    lone = Stream(Serving(trained_model, batching=False), "", alone.state, sampling)
    assert text == "".join(lone)


def test_a_stream_that_only_reads_is_read_by_the_decoder(trained_model, batched):
    """max_new_chars=0 with a batching serving: the decoder reads the prompt (scored) as one more
    row and the row leaves once read; the same loss and state as the loss loop with the step."""
    from lstm_model.evaluate import text_loss
    from lstm_model.generate import Stream
    from lstm_model.sampling import Sampling

    requests = recording_submits(batched.decoder)
    prompt = "BEN:\nThe sea is calm and the moon is bright.\n\n"
    s = Stream(batched, prompt, None, Sampling(max_new_chars=0), score=len(prompt) - 2)
    assert "".join(s) == "" and s.stopped_by == "length" and s.read_by_step
    assert len(requests) == 1 and requests[0].read_only and requests[0].left - requests[0].joined == len(prompt)
    alone = text_loss(trained_model, torch.tensor(trained_model.vocab.encode(prompt)), scored=len(prompt) - 2,
                      step=batched.step())
    assert s.read.count == alone.count and abs(s.read.mean - alone.mean) < 1e-5
    torch.testing.assert_close(s.state[1], alone.state[1], atol=1e-5, rtol=1e-5)


def test_a_newcomer_joins_while_a_long_prompt_is_read(trained_model, batched):
    """The rest of a long prompt is read in slices of steps; a request that arrives meanwhile
    ends the slice after the step under way and joins (here a slice could otherwise run to the
    prompt's end: nobody writes and read_first_s is unbounded)."""
    from lstm_model.sampling import Sampling, make_generator

    decoder = batched.decoder
    decoder.read_first_chars, decoder.read_first_s = 8, float("inf")
    gate = GatedStep(batched.step())
    decoder.get_step = lambda: gate
    state = trained_model.begin_state(1)
    with torch.no_grad():
        logits = trained_model.logits_from_state(state)[0]
    ids = trained_model.vocab.encode("ANNA:\nThe sea is calm and the moon is bright.\n" * 50)
    gate.permits.release(50)  # the first 8 characters, then into a slice
    long = decoder.submit(logits, state, Sampling(max_new_chars=0), make_generator(1), feed=ids, score=len(ids))
    gate.stalled.wait()
    at_stall = decoder.steps
    newcomer = decoder.submit(logits, state, Sampling(max_new_chars=5, seed=2, stop=None), make_generator(2),
                              feed=trained_model.vocab.encode("BEN:\n"))
    gate.permits.release(100_000)
    for request in (newcomer, long):
        while request.outbox.get() is not None:
            pass
    assert newcomer.joined == at_stall + 1 and len(newcomer.matcher.text) == 5
    assert long.fed == len(ids) and long.left > newcomer.joined
