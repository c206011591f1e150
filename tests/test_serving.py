"""Serving (lstm_model/serving.py): the int8 decision, the step it owns, the decoder it owns."""

import pytest
import torch

from lstm_model import load_model
from lstm_model.generate import generate
from lstm_model.serving import MAX_LOSS_RISE, Serving, decide_int8
from lstm_model.session import ChatSession
from lstm_model.step import EngineError, OrtStep, TorchStep


def test_auto_serves_int8_only_where_the_measured_rise_is_small(trained_model):
    assert decide_int8("auto", {"loss_rise": MAX_LOSS_RISE / 2}, "onnxruntime")[0]
    on, why = decide_int8("auto", {"loss_rise": 0.02}, "onnxruntime")
    assert not on and "0.02" in why
    on, why = decide_int8("auto", None, "onnxruntime")
    assert not on and "not measured" in why
    assert not decide_int8("auto", {"loss_rise": "small"}, "onnxruntime")[0]  # a malformed check counts as none
    assert decide_int8("on", None, "onnxruntime")[0]
    assert not decide_int8("on", {"loss_rise": 0.0}, "torch")[0]
    assert not decide_int8("off", {"loss_rise": 0.0}, "onnxruntime")[0]
    with pytest.raises(EngineError, match="auto, on, off"):
        decide_int8("fast", None, "onnxruntime")


def test_the_serving_owns_the_step_and_the_model_holds_only_weights(trained_dir):
    model = load_model(trained_dir[0])  # a fresh copy: this test changes its weights
    attributes = set(vars(model))
    int8 = Serving(model, int8="auto", int8_check={"loss_rise": 0.001})
    fp32 = Serving(model, engine="torch")
    assert int8.step().int8 and isinstance(int8.step(), OrtStep) and int8.step() is int8.step()
    assert isinstance(fp32.step(), TorchStep) and not fp32.int8
    assert ChatSession(model, serving=int8).memory_report()["generation_steps"] == "int8"
    assert ChatSession(model, serving=fp32).memory_report()["generation_engine"] == "torch"
    before = int8.step()
    with torch.no_grad():
        model.head.bias.add_(1.0)  # new weights: the step is rebuilt from them
    assert int8.step() is not before
    assert set(vars(model)) == attributes  # nothing was hung on the model
    assert int8.decoder is None and Serving(model, batching=True).decoder is not None


def test_a_serving_is_for_one_model(trained_model, small_model):
    serving = Serving(trained_model)
    with pytest.raises(ValueError, match="another model"):
        generate(small_model, "A", max_new_chars=3, serving=serving)
    with pytest.raises(ValueError, match="another model"):
        ChatSession(small_model, serving=serving)
