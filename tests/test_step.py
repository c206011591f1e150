"""The generation step's engines (lstm_model/step.py): ONNX Runtime against the torch step."""

import pytest
import torch

from lstm_model import step as step_module
from lstm_model.generate import stream
from lstm_model.serving import Serving
from lstm_model.step import EngineError, OrtStep, TorchStep, make_step, pick_engine, quantize_columns, step_graph


def random_state(model, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(model.num_layers, batch, model.hidden_size, generator=g) * 2 - 1
    c = torch.randn(model.num_layers, batch, model.hidden_size, generator=g) * 2
    ids = torch.randint(0, model.vocab_size, (batch,), generator=g)
    return ids, (h, c)


def test_the_fp32_graph_computes_the_torch_step(trained_model):
    ids, state = random_state(trained_model, 5)
    want_logits, (want_h, want_c) = TorchStep(trained_model).step(ids, state)
    logits, (h, c) = OrtStep(trained_model).step(ids, state)
    assert logits.shape == want_logits.shape and h.shape == want_h.shape and c.shape == want_c.shape
    assert torch.allclose(logits, want_logits, atol=1e-5)
    assert torch.allclose(h, want_h, atol=1e-6) and torch.allclose(c, want_c, atol=1e-5)


def test_the_torch_step_equals_nn_lstm(trained_model):
    ids = torch.tensor(trained_model.vocab.encode("ANNA:\nThe moon is bright.\n\nBEN:\n"))
    step = TorchStep(trained_model)
    state = trained_model.begin_state(1)
    for t in range(len(ids)):
        logits, state = step.step(ids[t : t + 1], state)
    with torch.no_grad():
        out, (h, c) = trained_model.lstm(trained_model.embedding(ids[None]))
        expected = trained_model.head(out[0, -1])
    torch.testing.assert_close(logits[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[1], c, atol=1e-5, rtol=1e-5)


def test_int8_weights_are_symmetric_per_output_column():
    w = torch.randn(16, 6).numpy()
    w[:, 2] *= 100  # one column with a much larger range
    q, scale = quantize_columns(w)
    assert q.dtype.name == "int8" and scale.shape == (6,)
    assert (abs(q).max(axis=0) == 127).all()  # every column uses its whole range
    assert (abs(q * scale - w) <= scale / 2 * 1.0001).all()  # rounding error at most half a step


def test_an_int8_row_is_computed_the_same_on_two_threads_in_a_batch_as_alone_on_one(trained_model):
    """The app steps a crowd on two ONNX Runtime threads (STEP_THREADS): each row of a 64-row int8
    batch equals that row stepped alone on one thread, so a reply's text does not depend on the
    threads or on who else is being served."""
    ids, (h, c) = random_state(trained_model, 64, seed=3)
    logits, (h2, c2) = OrtStep(trained_model, int8=True, threads=2).step(ids, (h, c))
    one = OrtStep(trained_model, int8=True, threads=1)
    for row in (0, 17, 63):
        alone, (h1, c1) = one.step(ids[row:row + 1], (h[:, row:row + 1], c[:, row:row + 1]))
        torch.testing.assert_close(logits[row:row + 1], alone, atol=1e-6, rtol=0)
        torch.testing.assert_close(h2[:, row:row + 1], h1, atol=1e-6, rtol=0)
        torch.testing.assert_close(c2[:, row:row + 1], c1, atol=1e-6, rtol=0)


def test_feed_reads_a_prompt_like_single_steps(trained_model):
    step = OrtStep(trained_model)
    ids = trained_model.vocab.encode("ANNA:\n")
    state = trained_model.begin_state(1)
    fed_logits, fed_state = step.feed(ids, state)
    for idx in ids:
        logits, state = step.step(torch.tensor([idx]), state)
    assert torch.equal(fed_logits, logits) and torch.equal(fed_state[0], state[0])


def test_engines_are_chosen_by_argument(trained_model):
    assert pick_engine(trained_model) == "onnxruntime"
    assert isinstance(make_step(trained_model), OrtStep)
    assert type(make_step(trained_model, "torch")) is TorchStep
    assert make_step(trained_model, "onnxruntime", int8=True).int8
    with pytest.raises(EngineError, match="Int8 steps run on ONNX Runtime"):
        make_step(trained_model, "torch", int8=True)
    with pytest.raises(EngineError, match="auto, onnxruntime, torch"):
        pick_engine(trained_model, "fast")


def test_without_onnxruntime_int8_stays_off_and_text_is_the_same(trained_model, monkeypatch):
    with_ort = "".join(stream(trained_model, "ANNA:\n", max_new_chars=80, temperature=0.8, seed=3))
    monkeypatch.setattr(step_module, "onnxruntime_available", lambda: False)
    assert pick_engine(trained_model) == "torch"
    with pytest.raises(EngineError, match="onnxruntime"):
        pick_engine(trained_model, "onnxruntime")
    serving = Serving(trained_model, int8="on", int8_check={"loss_rise": 0.001})
    assert not serving.int8 and "onnxruntime" in serving.int8_reason and serving.engine == "torch"
    without = "".join(stream(trained_model, "ANNA:\n", max_new_chars=80, temperature=0.8, seed=3, serving=serving))
    assert without == with_ort  # fp32 on either engine: the same draws


def test_the_graph_keeps_an_ir_version_that_older_onnxruntimes_read(trained_model):
    graph = step_graph(TorchStep(trained_model), trained_model.vocab_size, int8=True)
    assert graph.ir_version == step_module.IR_VERSION <= 10  # onnxruntime 1.30 reads up to 13
    assert step_module.onnxruntime_available()
