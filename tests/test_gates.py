import contextlib

import pytest
import torch

from lstm_model import CharLSTM
from lstm_model.gates import PATTERNS, top_changing_units, trace, units_following


@contextlib.contextmanager
def no_onednn():
    """nn.LSTM on PyTorch's native CPU kernel instead of oneDNN's: the arithmetic that trace()
    reproduces bit for bit (oneDNN rounds differently, ~1e-5 relative on large cell states)."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def assert_close_relative(a, b):
    """|a - b| <= 1e-5 * max(1, |b|), elementwise."""
    bound = 1e-5 * torch.clamp(b.abs(), min=1.0)
    worst = ((a - b).abs() / bound).max().item()
    assert worst <= 1.0, f"worst error is {worst:.2f}x the bound"


@pytest.mark.parametrize("start", ["zero", "nonzero"])
def test_trace_equals_nn_lstm_over_1000_characters(play_text, start):
    torch.manual_seed(1)
    model = CharLSTM(vocab=sorted(set(play_text)), embed_dim=16, hidden_size=32, num_layers=2, dropout=0.0).eval()
    # Forget gates near 1 and positive candidates: the cell state grows past 100, as it can on
    # repetitive text.
    with torch.no_grad():
        for layer in range(2):
            getattr(model.lstm, f"bias_ih_l{layer}")[32:64] += 6.0
            getattr(model.lstm, f"bias_ih_l{layer}")[64:96] += 2.0
    text = play_text[:1200]
    state = None
    if start == "nonzero":
        state = (torch.randn(2, 1, 32), torch.randn(2, 1, 32) * 5)
    tr = trace(model, text, state)
    assert tr.cell.shape == (2, len(text), 32) and tr.forget.shape == (2, len(text), 32)
    ids = torch.tensor([model.vocab.encode(text)])
    # The reference is nn.LSTM with PyTorch's native CPU kernel (the backend step-wise inference
    # uses); oneDNN's kernel rounds differently (1e-5 relative on a cell state of 500), which the
    # bundled-model test below covers on realistic values.
    with torch.no_grad(), no_onednn():
        x = model.embedding(ids)
        h0, c0 = state if state is not None else model.begin_state(1)
        # Layer by layer with nn.LSTM's own single-layer computation, to compare every H and C.
        inputs = x
        for layer in range(2):
            single = torch.nn.LSTM(inputs.shape[-1], 32, batch_first=True)
            single.load_state_dict({k.replace(f"_l{layer}", "_l0"): v for k, v in model.lstm.state_dict().items()
                                    if k.endswith(f"_l{layer}")})
            hs, cs = [], []
            h, c = h0[layer : layer + 1], c0[layer : layer + 1]
            for t in range(len(text)):  # nn.LSTM one step at a time, to read C at every t
                out, (h, c) = single(inputs[:, t : t + 1], (h, c))
                hs.append(out[0, 0])
                cs.append(c[0, 0])
            assert_close_relative(tr.hidden[layer], torch.stack(hs))
            assert_close_relative(tr.cell[layer], torch.stack(cs))
            inputs = torch.stack(hs)[None]
        _, (h_final, c_final) = model.lstm(x, (h0, c0))
    assert_close_relative(tr.state[0], h_final)
    assert_close_relative(tr.state[1], c_final)
    assert tr.cell.abs().max() > 100  # the test covers a cell state far beyond tanh's range
    # The gate values are the equations' own: C = F*C_prev + I*C', H = O*tanh(C).
    c_prev = torch.cat([c0[:, None, 0], tr.cell[:, :-1]], dim=1)
    torch.testing.assert_close(tr.cell, tr.forget * c_prev + tr.input * tr.candidate)
    torch.testing.assert_close(tr.hidden, tr.output * torch.tanh(tr.cell))


def test_trace_of_the_bundled_model_equals_nn_lstm(play_text):
    from lstm_model import load_model

    model = load_model()
    text = play_text[:1000]
    for state in (None, (torch.randn(2, 1, model.hidden_size), torch.randn(2, 1, model.hidden_size))):
        tr = trace(model, text, state)
        ids = torch.tensor([model.vocab.encode(tr.text)])
        with torch.no_grad():
            out, (h, c) = model.lstm(model.embedding(ids), state)
        assert_close_relative(tr.hidden[-1], out[0])
        assert_close_relative(tr.state[0], h)
        assert_close_relative(tr.state[1], c)


def test_trace_reports_skipped_characters(small_model):
    tr = trace(small_model, "ANNA: ☃ hi")
    assert tr.skipped == ["☃"] and "☃" not in tr.text and tr.cell.shape[1] == len(tr.text)


def test_units_following_finds_a_planted_unit():
    text = 'He said "the sea is calm" and "the moon" then sang.\n' * 4
    model = CharLSTM(vocab=sorted(set(text)), embed_dim=8, hidden_size=16).eval()
    tr = trace(model, text)
    assert tr.text == text
    pattern = PATTERNS["inside quotes"](text)
    assert sum(pattern) > 0 and len(pattern) == len(text)
    tr.cell[-1, :, 5] = torch.tensor(pattern) * 2 - 1 + 0.01 * torch.randn(len(text))  # plant a quote detector
    best = units_following(tr, "inside quotes", k=3)
    assert best[0][0] == 5 and best[0][1] > 0.99
    chosen = top_changing_units(tr, k=4)
    spread = torch.tanh(tr.cell[-1]).std(dim=0)
    others = [u for u in range(16) if u not in chosen]
    assert len(set(chosen)) == 4 and spread[chosen].min() >= spread[others].max()


def test_patterns():
    assert PATTERNS["position in the line"]("ab\ncd") == [0, 1, 2, 0, 1]
    assert PATTERNS["inside a speaker name"]("ANNA:\nhi") == [1, 1, 1, 1, 1, 0, 0, 0]
    assert PATTERNS["inside quotes"]("a 'b' know't \"c\"") == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
