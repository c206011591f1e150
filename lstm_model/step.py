"""The generation step: one LSTM step for a batch of characters, on torch or ONNX Runtime, fp32 or int8.

Every engine has the same interface: `step(ids, state) -> (logits, state)` for ids (batch,) and
(h, c) each (layers, batch, hidden), and `feed(ids, state)` for one sequence of prompt ids. Each
runs the equations of ARCHITECTURE.md ("The model") from the model's own weights, fused for
inference: layer 0's input projection X_t W_x* + b is a lookup table (vocab x 4H: the one-hot
product precomputed), each upper layer multiplies [H_below, H_prev] by its two weight matrices
stacked (one product instead of two), and nothing is kept for gradients.

- `TorchStep`: the fused step as ~25 torch operations. fp32, any device; the reference.
- `OrtStep`: the same weights as one ONNX graph run by ONNX Runtime: one native call a step,
  Python's GIL released for the whole of it. fp32 equals the torch step to 1e-5. With
  `int8=True` the recurrent matrices and the head multiply in integers: each weight matrix
  quantised once, symmetric, one scale per output column; the input H (always within [-1, 1])
  quantised with the fixed scale of that range, so a row is computed the same alone or in any
  batch. Activations use 0..128 (zero at 64): with weights within +-127 a pair of products fits
  the 16-bit sums that CPUs without VNNI use, so the result is the same everywhere.

`make_step(model, engine, int8, threads)` builds one; `pick_engine` says which engine "auto"
means here. Which step serves a model, and whether int8 may, is decided in lstm_model.serving.
oneDNN, whose per-call overhead dominates one-step nn.LSTM calls on CPU, is not involved.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
from torch import nn

ENGINES = ("auto", "onnxruntime", "torch")
X_LEVELS = 127  # H in [-1, 1] -> 0..128 (-1 -> 0.5 rounds to 0, +1 -> 127.5 rounds to 128)
X_SCALE = 2.0 / X_LEVELS
X_ZERO = 64  # the integer that 0.0 maps to
OPSET = 17
# The graph's ONNX IR version, set rather than onnx's newest: an onnxruntime older than the onnx
# package refuses newer IR versions (seen: onnx 1.23 writes IR 14, onnxruntime 1.30 reads <= 13).
IR_VERSION = 8


def weights_version(model) -> tuple:
    """Changes whenever a parameter of `model` is replaced or modified in place."""
    return tuple((id(p), p._version) for p in model.parameters())


class TorchStep:
    """The fused step in torch: fp32, on the model's device."""

    engine, int8 = "torch", False

    def __init__(self, model):
        lstm = model.lstm
        self.hidden_size, self.num_layers = model.hidden_size, model.num_layers
        self.version = weights_version(model)
        with torch.no_grad():
            self.table0 = (nn.functional.linear(model.embedding.weight, lstm.weight_ih_l0, lstm.bias_ih_l0)
                           + lstm.bias_hh_l0).contiguous()
            self.w_hh0_t = lstm.weight_hh_l0.t().contiguous()
            self.w_t, self.b = [None], [None]
            for layer in range(1, model.num_layers):
                w = torch.cat([getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")], dim=1)
                self.w_t.append(w.t().contiguous())
                self.b.append(getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
            self.head_w_t = model.head.weight.t().contiguous()
            self.head_b = model.head.bias.detach().clone()

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state):
        """ids (batch,) -> next-character logits (batch, vocab) and the new (h, c)."""
        h_prev, c_prev = state
        hs, cs, below = [], [], None
        for layer in range(self.num_layers):
            if layer == 0:
                rows = self.table0.index_select(0, ids)  # X_t W_x + b for each row's character
                z = torch.addmm(rows, h_prev[0], self.w_hh0_t)
            else:
                x = torch.cat([below, h_prev[layer]], dim=1)
                z = torch.addmm(self.b[layer], x, self.w_t[layer])
            z = z.view(z.shape[0], 4, self.hidden_size)
            gates = torch.sigmoid(z)  # input, forget, (unused), output
            c = gates[:, 1] * c_prev[layer] + gates[:, 0] * torch.tanh(z[:, 2])
            below = gates[:, 3] * torch.tanh(c)
            hs.append(below)
            cs.append(c)
        logits = torch.addmm(self.head_b, below, self.head_w_t)
        return logits, (torch.stack(hs), torch.stack(cs))

    @torch.no_grad()
    def feed(self, ids: list[int], state):
        """Step through `ids` (one sequence) from `state`: the last logits (1, vocab) and the state."""
        one = torch.zeros(1, dtype=torch.long, device=state[0].device)
        logits = None
        for idx in ids:
            one[0] = idx
            logits, state = self.step(one, state)
        return logits, state


@functools.lru_cache(maxsize=1)
def onnxruntime_available() -> bool:
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


def step_graph(fused: TorchStep, vocab_size: int, int8: bool = False):
    """The ONNX model of one step from a TorchStep's fused fp32 weights.

    Inputs: ids int64 (B,), h and c float (layers, B, hidden). Outputs: logits (B, vocab), h_new and
    c_new (layers, B, hidden).
    """
    from onnx import TensorProto, checker, helper, numpy_helper

    hidden, layers = fused.hidden_size, fused.num_layers
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
    const("table0", fused.table0.detach().cpu().float().numpy())
    const("split4", np.array([hidden] * 4, np.int64))
    const("axis0", np.array([0], np.int64))
    hs, cs, below = [], [], None
    for k in range(layers):
        const(f"layer{k}", np.array(k, np.int64))
        h_prev = node("Gather", ["h", f"layer{k}"], [f"h_prev{k}"], axis=0)
        c_prev = node("Gather", ["c", f"layer{k}"], [f"c_prev{k}"], axis=0)
        if k == 0:
            rows = node("Gather", ["table0", "ids"], ["rows0"], axis=0)  # X_t W_x + b, one row per id
            z = node("Add", [linear(h_prev, fused.w_hh0_t, None, "hh0"), rows], ["z0"])
        else:
            x = node("Concat", [below, h_prev], [f"x{k}"], axis=1)
            z = linear(x, fused.w_t[k], fused.b[k], f"z{k}")
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
    linear(below, fused.head_w_t, fused.head_b, "logits")
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
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                    producer_name="lstm_model")
    checker.check_model(graph_model)
    return graph_model


class OrtStep:
    """The fused step as one ONNX graph on ONNX Runtime (CPU), fp32 or int8, with `threads` threads.
    `spinning=False` makes those threads sleep at once after each run instead of spinning briefly
    for the next (slower steps: benchmarks/step_threads.py; kept for measuring)."""

    engine = "onnxruntime"

    def __init__(self, model, int8: bool = False, threads: int = 1, spinning: bool = True):
        import onnxruntime as ort

        fused = TorchStep(model)  # the fused fp32 weights, the same that the torch step uses
        self.version = fused.version
        self.int8 = int8
        self.hidden_size, self.num_layers = fused.hidden_size, fused.num_layers
        options = ort.SessionOptions()
        # Two threads make even a one-row step faster (benchmarks/README.md, step_threads.py).
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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

    feed = TorchStep.feed  # the same loop over self.step


class EngineError(ValueError):
    """An engine or precision that cannot serve here; the message says what to do."""


def pick_engine(model, engine: str = "auto") -> str:
    """The engine that `engine` means for `model`: "auto" is ONNX Runtime where it is installed
    and the model is on CPU, else torch."""
    if engine not in ENGINES:
        raise EngineError(f"The step engine must be one of {', '.join(ENGINES)}; got {engine!r}.")
    on_cpu = model.head.weight.device.type == "cpu"
    if engine == "onnxruntime" and not (on_cpu and onnxruntime_available()):
        raise EngineError("The ONNX Runtime step needs the model on CPU and onnxruntime (pip install onnxruntime onnx).")
    if engine == "auto":
        return "onnxruntime" if on_cpu and onnxruntime_available() else "torch"
    return engine


def make_step(model, engine: str = "auto", int8: bool = False, threads: int | None = None):
    """A new generation step of `model`: TorchStep (fp32) or OrtStep (fp32 or int8). `threads`:
    ONNX Runtime's threads (default: torch's current number)."""
    engine = pick_engine(model, engine)
    if engine == "onnxruntime":
        return OrtStep(model, int8=int8, threads=threads or torch.get_num_threads())
    if int8:
        raise EngineError("Int8 steps run on ONNX Runtime: pip install onnxruntime onnx, and keep the model on CPU.")
    return TorchStep(model)
