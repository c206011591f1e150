"""The generation step on ONNX Runtime: one native call per step, fp32 or int8.

`generate.Stepper` runs the fused LSTM step as ~25 small torch operations, each with its own
dispatch overhead, each taking and giving back Python's GIL.
`OrtStepper` runs the same equations (DESIGN.md; the same fused weights as Stepper: layer 0's
input projection as a lookup table, each upper layer's [H_below, H_prev] times its two weight
matrices stacked) as one ONNX graph in ONNX Runtime: one call per step, the GIL released for the
whole of it. Measured on 2 CPU cores in benchmarks/README.md ("Batched serving", "Int8
generation steps"): fp32 about 1.2x, int8 about 2x the speed of the torch step's torch.ao int8.

int8: each weight matrix is quantised once, symmetric, one scale per output column; the graph
quantises its input H with the fixed scale of [-1, 1] (H = O * tanh(C) always lies there) and
multiplies in integers (ONNX `MatMulInteger`). The scale is fixed, not picked per call from the
batch, so every row is quantised the same alone or batched: a session's text does not depend on
who it shares the step with. Activations use about 7 bits (0..128, zero at 64): with weights
within +-127, a pair of products (at most 2 * 128 * 127 = 32,512) fits the 16-bit sums that
CPUs without VNNI use, so the result is the same everywhere.
Whether a model may serve in int8 is measured (lstm_model.quantize).

onnxruntime is optional for the package (`available()`); without it generation uses Stepper.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from .generate import Stepper, _weights_version

X_LEVELS = 127  # H in [-1, 1] -> 0..128 (-1 -> 0.5 rounds to 0, +1 -> 127.5 rounds to 128)
X_SCALE = 2.0 / X_LEVELS
X_ZERO = 64  # the integer that 0.0 maps to
OPSET = 17
# The graph's ONNX IR version, set rather than onnx's newest: an onnxruntime older than the onnx
# package refuses newer IR versions (seen: onnx 1.23 writes IR 14, onnxruntime 1.30 reads <= 13).
IR_VERSION = 8


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether onnxruntime (and onnx, to build the graph) are installed and run a graph of this
    module's opset and IR version (checked once, on a one-node graph). If they are installed but
    cannot, a warning says so and generation uses the torch step."""
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return False
    try:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Tanh", ["x"], ["y"])], "probe", [x], [y])
        probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
        ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - any failure means: do not use it
        warnings.warn(f"onnxruntime {getattr(ort, '__version__', '?')} cannot run this package's step graph "
                      f"({str(err).splitlines()[0][:200]}); generation uses the torch step. "
                      "pip install -r requirements.txt installs versions that work together.", stacklevel=2)
        return False
    return True


def quantize_columns(w_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights, one scale per output column of w_t (in, out): (int8, scales)."""
    scale = np.maximum(np.abs(w_t).max(axis=0), 1e-12).astype(np.float32) / 127.0
    q = np.clip(np.rint(w_t / scale), -127, 127).astype(np.int8)
    return q, scale


def step_graph(stepper, vocab_size: int, int8: bool = False):
    """The ONNX model of one step for a fused `generate.Stepper` (its fp32 weights).

    Inputs: ids int64 (B,), h and c float (layers, B, hidden). Outputs: logits (B, vocab), h_new and
    c_new (layers, B, hidden).
    """
    from onnx import TensorProto, checker, helper, numpy_helper

    hidden, layers = stepper.hidden_size, stepper.num_layers
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d scalars 0-d
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    def linear(x, w_t: torch.Tensor, b: torch.Tensor | None, out: str) -> str:
        """x (B, K) @ w_t (K, N) (+ b), in fp32 or int8."""
        w = w_t.detach().cpu().float().numpy()
        if int8:
            q, scale = quantize_columns(w)
            xq = node("QuantizeLinear", [x, "x_scale", "x_zero"], [out + "_xq"])
            acc = node("MatMulInteger", [xq, const(out + "_wq", q), "x_zero"], [out + "_acc"])
            acc = node("Cast", [acc], [out + "_accf"], to=TensorProto.FLOAT)
            mm = node("Mul", [acc, const(out + "_scale", scale * np.float32(X_SCALE))], [out + "_mm"])
        else:
            mm = node("MatMul", [x, const(out + "_w", w)], [out + "_mm"])
        if b is None:
            return mm
        return node("Add", [mm, const(out + "_b", b.detach().cpu().float().numpy())], [out])

    if int8:
        const("x_scale", np.array(X_SCALE, np.float32))
        const("x_zero", np.array(X_ZERO, np.uint8))
    const("table0", stepper.table0.detach().cpu().float().numpy())
    const("split4", np.array([hidden] * 4, np.int64))
    const("axis0", np.array([0], np.int64))
    hs, cs, below = [], [], None
    for k in range(layers):
        const(f"layer{k}", np.array(k, np.int64))
        h_prev = node("Gather", ["h", f"layer{k}"], [f"h_prev{k}"], axis=0)
        c_prev = node("Gather", ["c", f"layer{k}"], [f"c_prev{k}"], axis=0)
        if k == 0:
            rows = node("Gather", ["table0", "ids"], ["rows0"], axis=0)  # X_t W_x + b, one row per id
            z = node("Add", [linear(h_prev, stepper.w_hh0_t, None, "hh0"), rows], ["z0"])
        else:
            x = node("Concat", [below, h_prev], [f"x{k}"], axis=1)
            z = linear(x, stepper.w_t[k], stepper.b[k], f"z{k}")
        zi, zf, zg, zo = (f"{g}{k}" for g in ("zi", "zf", "zg", "zo"))
        node("Split", [z, "split4"], [zi, zf, zg, zo], axis=1)
        i = node("Sigmoid", [zi], [f"i{k}"])
        f = node("Sigmoid", [zf], [f"f{k}"])
        o = node("Sigmoid", [zo], [f"o{k}"])
        g = node("Tanh", [zg], [f"g{k}"])
        c = node("Add", [node("Mul", [f, c_prev], [f"fc{k}"]), node("Mul", [i, g], [f"ig{k}"])], [f"c{k}"])
        below = node("Mul", [o, node("Tanh", [c], [f"tc{k}"])], [f"h{k}"])
        hs.append(node("Unsqueeze", [below, "axis0"], [f"hu{k}"]))
        cs.append(node("Unsqueeze", [c, "axis0"], [f"cu{k}"]))
    linear(below, stepper.head_w_t, stepper.head_b, "logits")
    node("Concat", hs, ["h_new"], axis=0)
    node("Concat", cs, ["c_new"], axis=0)
    state = ["layers", "B", hidden]
    graph = helper.make_graph(
        nodes, "lstm_step",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B"]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, state),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, state)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", vocab_size]),
         helper.make_tensor_value_info("h_new", TensorProto.FLOAT, state),
         helper.make_tensor_value_info("c_new", TensorProto.FLOAT, state)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="lstm_model")
    checker.check_model(model)
    return model


class OrtStepper:
    """`generate.Stepper`'s interface (step, feed) on ONNX Runtime, fp32 or int8, on CPU with
    torch's number of threads."""

    def __init__(self, model, int8: bool = False):
        import onnxruntime as ort

        fused = Stepper(model)  # the fused fp32 weights, the same that the torch step uses
        self.version = _weights_version(model)
        self.int8 = int8
        self.hidden_size, self.num_layers = fused.hidden_size, fused.num_layers
        options = ort.SessionOptions()
        # As many threads as torch uses: 1 in the app (TORCH_THREADS; the other core serves the
        # page), all cores in a script. A 2 x 512 fp32 step at batch 1: 345 us on 2 threads, 560 on 1.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        graph = step_graph(fused, model.vocab_size, int8=int8).SerializeToString()
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def step(self, ids: torch.Tensor, state):
        """ids (batch,) -> next-character logits (batch, vocab) and the new (h, c)."""
        h, c = state
        logits, h_new, c_new = self.session.run(None, {
            "ids": np.ascontiguousarray(ids.numpy(), dtype=np.int64),
            "h": np.ascontiguousarray(h.detach().numpy(), dtype=np.float32),
            "c": np.ascontiguousarray(c.detach().numpy(), dtype=np.float32),
        })
        return torch.from_numpy(logits), (torch.from_numpy(h_new), torch.from_numpy(c_new))

    feed = Stepper.feed  # the same loop over self.step
