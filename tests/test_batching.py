import threading

import torch

from lstm_model.batching import Decoder
from lstm_model.generate import stream
from lstm_model.session import ChatSession

PROMPTS = ["ANNA:\n", "BEN:\nThe sea is calm.\n\nCLEO:\n", "CLEO:\n", "ANNA:\nSing.\n\n", "BEN:\n", "ANNA:\nHome.\n"]


def settings(i):
    return dict(max_new_chars=150, temperature=0.9, top_k=8 if i % 2 else None, top_p=0.9 if i % 3 == 0 else None,
                seed=100 + i, stop="\n\n" if i % 2 == 0 else None)


def test_batched_sessions_get_the_text_they_would_get_alone(trained_model):
    alone = []
    for i, prompt in enumerate(PROMPTS):
        s = stream(trained_model, prompt, **settings(i))
        alone.append(("".join(s), s.state, s.stopped_by))
    decoder = Decoder(trained_model)
    together = [None] * len(PROMPTS)
    start = threading.Barrier(len(PROMPTS))

    def run(i):
        s = stream(trained_model, PROMPTS[i], decoder=decoder, **settings(i))
        start.wait()
        together[i] = ("".join(s), s.state, s.stopped_by)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for (a, state_a, why_a), (b, state_b, why_b) in zip(alone, together):
        assert a == b and why_a == why_b
        torch.testing.assert_close(state_a[1], state_b[1], atol=1e-4, rtol=1e-4)
    # The steps really were shared: fewer batched steps than characters produced.
    assert decoder.steps < decoder.rows


def test_sessions_join_and_leave_between_steps(trained_model):
    decoder = Decoder(trained_model)
    long = stream(trained_model, "ANNA:\n", max_new_chars=300, seed=1, decoder=decoder)
    first = next(long)
    short = "".join(stream(trained_model, "BEN:\n", max_new_chars=20, seed=2, decoder=decoder))
    rest = first + "".join(long)
    assert len(short) == 20 and len(rest) == 300
    assert rest == "".join(stream(trained_model, "ANNA:\n", max_new_chars=300, seed=1))


def test_an_abandoned_stream_leaves_the_decoder(trained_model):
    decoder = Decoder(trained_model)
    s = stream(trained_model, "ANNA:\n", max_new_chars=5000, seed=1, decoder=decoder)
    next(s)
    s.close()
    after = "".join(stream(trained_model, "BEN:\n", max_new_chars=30, seed=3, decoder=decoder))
    assert len(after) == 30
    assert not decoder._active


def test_chat_sessions_share_a_decoder_and_stay_reproducible(trained_model):
    decoder = Decoder(trained_model)
    shared = [ChatSession(trained_model, seed=7, max_new_chars=60, decoder=decoder) for _ in range(3)]
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


def test_short_prompts_are_fed_in_the_batched_steps(trained_model):
    calls = []
    handle = trained_model.lstm.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[1]))
    decoder = Decoder(trained_model)
    try:
        s = stream(trained_model, "CLEO:\nSing.\n\nANNA:\n", max_new_chars=40, seed=4, decoder=decoder)
        batched = "".join(s)
    finally:
        handle.remove()
    assert calls == []  # the prompt was read by the decoder's steps, not by an nn.LSTM call
    assert decoder.rows == len("CLEO:\nSing.\n\nANNA:\n") + 40
    alone = stream(trained_model, "CLEO:\nSing.\n\nANNA:\n", max_new_chars=40, seed=4)
    assert batched == "".join(alone)
    torch.testing.assert_close(s.state[1], alone.state[1], atol=1e-5, rtol=1e-5)
