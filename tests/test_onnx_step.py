"""The generation step on ONNX Runtime (lstm_model/onnx_step.py) against the torch step."""

import pytest
import torch

from lstm_model import onnx_step
from lstm_model.generate import Stepper, make_stepper, step_engine, stream
from lstm_model.onnx_step import OrtStepper
from lstm_model.quantize import resolve_int8


def random_state(model, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(model.num_layers, batch, model.hidden_size, generator=g) * 2 - 1
    c = torch.randn(model.num_layers, batch, model.hidden_size, generator=g) * 2
    ids = torch.randint(0, model.vocab_size, (batch,), generator=g)
    return ids, (h, c)


def test_the_fp32_graph_computes_the_torch_step(trained_model):
    ids, state = random_state(trained_model, 5)
    want_logits, (want_h, want_c) = Stepper(trained_model).step(ids, state)
    logits, (h, c) = OrtStepper(trained_model).step(ids, state)
    assert logits.shape == want_logits.shape and h.shape == want_h.shape and c.shape == want_c.shape
    assert torch.allclose(logits, want_logits, atol=1e-5)
    assert torch.allclose(h, want_h, atol=1e-6) and torch.allclose(c, want_c, atol=1e-5)


def test_int8_weights_are_symmetric_per_output_column():
    w = torch.randn(16, 6).numpy()
    w[:, 2] *= 100  # one column with a much larger range
    q, scale = onnx_step.quantize_columns(w)
    assert q.dtype.name == "int8" and scale.shape == (6,)
    assert (abs(q).max(axis=0) == 127).all()  # every column uses its whole range
    assert (abs(q * scale - w) <= scale / 2 * 1.0001).all()  # rounding error at most half a step


def test_feed_reads_a_prompt_like_single_steps(trained_model):
    stepper = OrtStepper(trained_model)
    ids = trained_model.vocab.encode("ANNA:\n")
    state = trained_model.begin_state(1)
    fed_logits, fed_state = stepper.feed(ids, state)
    for idx in ids:
        logits, state = stepper.step(torch.tensor([idx]), state)
    assert torch.equal(fed_logits, logits) and torch.equal(fed_state[0], state[0])


def test_onnxruntime_serves_a_cpu_model_and_torch_is_the_fallback(trained_model, monkeypatch):
    assert step_engine(trained_model) == "onnxruntime"
    assert isinstance(Stepper.for_model(trained_model), OrtStepper)
    monkeypatch.setenv("LSTM_STEP_ENGINE", "torch")
    assert step_engine(trained_model) == "torch"
    assert type(Stepper.for_model(trained_model)) is Stepper
    with pytest.raises(ValueError, match="onnxruntime"):
        make_stepper(trained_model, "torch", int8=True)
    monkeypatch.setenv("LSTM_STEP_ENGINE", "fast")
    with pytest.raises(ValueError, match="LSTM_STEP_ENGINE"):
        step_engine(trained_model)


def test_without_onnxruntime_int8_stays_off_and_text_is_the_same(trained_model, monkeypatch):
    with_ort = "".join(stream(trained_model, "ANNA:\n", max_new_chars=80, temperature=0.8, seed=3))
    monkeypatch.setattr(onnx_step, "available", lambda: False)
    assert step_engine(trained_model) == "torch"
    saved = trained_model.int8_check, trained_model.serve_int8, trained_model.serve_int8_reason
    trained_model.int8_check = {"loss_rise": 0.001, "ok": True}
    try:
        on, why = resolve_int8(trained_model, "on")
        assert not on and "onnxruntime" in why
        without = "".join(stream(trained_model, "ANNA:\n", max_new_chars=80, temperature=0.8, seed=3))
    finally:
        trained_model.int8_check, trained_model.serve_int8, trained_model.serve_int8_reason = saved
    assert without == with_ort  # fp32 on either engine: the same draws


def test_the_graph_keeps_an_ir_version_that_older_onnxruntimes_read(trained_model):
    graph = onnx_step.step_graph(Stepper(trained_model), trained_model.vocab_size, int8=True)
    assert graph.ir_version == onnx_step.IR_VERSION <= 10  # onnxruntime 1.30 reads up to 13
    assert onnx_step.available()
