import warnings

import pytest
import torch

from lstm_model.generate import generate, stream
from lstm_model.sampling import SamplingError


def test_same_seed_same_text_and_stream_equals_generate(trained_model):
    a, state_a = generate(trained_model, "ANNA:\n", max_new_chars=120, temperature=0.9, seed=7)
    b, state_b = generate(trained_model, "ANNA:\n", max_new_chars=120, temperature=0.9, seed=7)
    c, _ = generate(trained_model, "ANNA:\n", max_new_chars=120, temperature=0.9, seed=8)
    assert a == b and a != c and len(a) == 120
    assert torch.equal(state_a[0], state_b[0])
    s = stream(trained_model, "ANNA:\n", max_new_chars=120, temperature=0.9, seed=7)
    pieces = list(s)
    assert len(pieces) > 10 and "".join(pieces) == a == s.text
    assert torch.equal(s.state[1], state_a[1])


def test_long_prompts_go_through_the_lstm_in_one_call_short_ones_through_the_step(trained_model):
    from lstm_model.generate import PROMPT_STEP_CHARS

    long, short = "ANNA:\nThe sea is calm and the moon is bright.\n", "ANNA:\n"
    assert len(short) <= PROMPT_STEP_CHARS < len(long)
    calls = []
    handle = trained_model.lstm.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[1]))
    try:
        generate(trained_model, long, max_new_chars=30, seed=1)
        assert calls == [len(long)]
        calls.clear()
        _, state = generate(trained_model, short, max_new_chars=0)
        assert calls == []  # fed by the fused step, to the same state
    finally:
        handle.remove()
    with torch.no_grad():
        _, (h, c) = trained_model.lstm(trained_model.embedding(torch.tensor([trained_model.vocab.encode(short)])))
    torch.testing.assert_close(state[1], c, atol=1e-5, rtol=1e-5)


def test_state_after_generation_is_the_state_of_everything_read(trained_model):
    """The returned state equals feeding prompt + sampled text (+ the stop) through nn.LSTM."""
    text, state = generate(trained_model, "BEN:\n", max_new_chars=200, seed=3, stop="\n\n")
    fed = "BEN:\n" + text + "\n\n"
    ids = torch.tensor([trained_model.vocab.encode(fed)])
    with torch.no_grad():
        _, (h, c) = trained_model.lstm(trained_model.embedding(ids))
    torch.testing.assert_close(state[0], h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[1], c, atol=1e-5, rtol=1e-5)


def test_stop_sequence_ends_the_reply_and_is_not_included(trained_model):
    released = False
    for seed in range(12):
        text, _ = generate(trained_model, "ANNA:\n", max_new_chars=400, seed=seed, stop="\n\n")
        assert "\n\n" not in text and len(text) < 400
        s = stream(trained_model, "ANNA:\n", max_new_chars=400, seed=seed, stop="\n\n")
        assert "".join(s) == text and s.stopped_by == "stop"
        # A held-back partial match ("\n") is released when it turns out not to be the stop.
        released = released or "\n" in text
    assert released


def test_greedy_top_k_top_p(trained_model):
    g1, _ = generate(trained_model, "CLEO:\n", max_new_chars=60, greedy=True, seed=1)
    g2, _ = generate(trained_model, "CLEO:\n", max_new_chars=60, greedy=True, seed=2)
    assert g1 == g2
    k1, _ = generate(trained_model, "CLEO:\n", max_new_chars=60, top_k=1, seed=5)
    assert k1 == g1  # top-k 1 is greedy
    p, _ = generate(trained_model, "CLEO:\n", max_new_chars=60, top_p=1e-6, seed=5)
    assert p == g1  # a tiny nucleus keeps only the most likely character


def test_unknown_prompt_characters_are_reported_not_fatal(trained_model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text, _ = generate(trained_model, "ANNA: 😀 héllo\x00", max_new_chars=20, seed=1)
    assert len(text) == 20
    assert any("😀" in str(w.message) for w in caught)
    s = stream(trained_model, "ANNA: 😀 héllo\x00", max_new_chars=5)
    list(s)
    assert s.skipped == ["😀", "é", "\x00"]


@pytest.mark.parametrize("settings", [
    {"temperature": 0}, {"temperature": -1}, {"top_k": 0}, {"top_p": 0}, {"top_p": 1.5},
    {"max_new_chars": -1}, {"max_new_chars": 10**9}, {"temperature": "hot"}, {"temperature": float("nan")},
])
def test_bad_settings_are_clear(trained_model, settings):
    with pytest.raises(SamplingError):
        generate(trained_model, "A", **settings)


def test_top_k_above_vocabulary_is_clamped(trained_model):
    text, _ = generate(trained_model, "A", max_new_chars=10, top_k=10**6, seed=1)
    assert len(text) == 10


def test_cli_chat_carries_memory_and_takes_any_text(trained_dir):
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lines = ["ANNA:", "The sea is calm. \u202eRTL\u202c e\u0301 😀 <b>x</b>", "/memory", "/undo", "/retry", "",
             "x" * 50_000, "/reset", "/memory", "/quit"]
    result = subprocess.run(
        [sys.executable, "-m", "lstm_model.generate", "--model", trained_dir[0], "--chat", "--length", "40", "--seed", "3"],
        input="\n".join(lines) + "\n", cwd=root, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "never seen" in result.stderr and "😀" in result.stderr  # unknown characters reported
    assert "cap per message" in result.stderr
    reports = [json.loads(block) for block in _json_blocks(result.stdout)]
    assert len(reports[0]["turns"]) == 2 and reports[-1]["turns"] == []
    assert "(undid the last turn)" in result.stdout


def _json_blocks(text):
    """The pretty-printed JSON objects in the chat's output (/memory answers)."""
    blocks, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                blocks.append(text[start : i + 1])
    return [b for b in blocks if '"turns"' in b]
