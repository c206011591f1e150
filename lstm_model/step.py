"""The generation step: one step of the model's cell for a batch of characters, on torch or ONNX
Runtime, fp32 or int8.

Every engine has the same interface: `step(ids, state) -> (logits, state)` for ids (batch,) and
the pair (h, c), h (layers, batch, hidden) and c the same for an LSTM or (layers, batch, 0) for a
GRU or RNN (model.py: they have no cell state; their c is passed through), and `feed(ids, state)`
for one sequence of prompt ids. Each runs the equations of ARCHITECTURE.md ("The model") for the
model's cell from the model's own weights, fused for inference: layer 0's input projection
X_t W_x* + b is a lookup table (vocab x gates*H: the one-hot product precomputed), and nothing is
kept for gradients. An LSTM or RNN upper layer multiplies [H_below, H_prev] by its two weight
matrices stacked (one product instead of two); a GRU's keeps the two products apart, because its
reset gate multiplies H_prev W_hn + b_hn alone.

- `TorchStep`: the fused step as a few dozen torch operations. fp32, any device; the reference.
- `OrtStep`: the same weights as one ONNX graph run by ONNX Runtime: one native call a step,
  Python's GIL released for the whole of it. fp32 equals the torch step to 1e-5. With
  `int8=True` the recurrent matrices and the head multiply in integers: each weight matrix
  quantised once, symmetric, one scale per output column; the input H (always within [-1, 1]
  for every cell: an LSTM's and an RNN's H pass through tanh, a GRU's H mixes its tanh candidate
  with the H before it) quantised with the fixed scale of that range, so a row is computed the
  same alone or in any batch. Activations use 0..128 (zero at 64): with weights within +-127 a
  pair of products fits the 16-bit sums that CPUs without VNNI use, so the result is the same
  everywhere.

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
    """The fused step in torch: fp32, on the model's device.

    The fused weights: `table0` (vocab, gates*H), layer 0's X_t W_x + b per character; for an
    LSTM or RNN with both of layer 0's biases in it, `w_hh0_t` its recurrent matrix, and for
    layer k > 0 `w_t[k]` ([W_ih; W_hh] transposed) and `b[k]` (b_ih + b_hh); for a GRU, with b_ih
    alone in the table, `w_ih_t[k]` / `b_ih[k]` (k > 0) and `w_hh_t[k]` / `b_hh[k]` (every layer)."""

    engine, int8 = "torch", False

    def __init__(self, model):
        rnn = model.recurrent
        self.cell = getattr(model, "cell", "lstm")
        self.hidden_size, self.num_layers = model.hidden_size, model.num_layers
        self.version = weights_version(model)
        with torch.no_grad():
            if self.cell == "gru":  # b_hh stays apart: the reset gate multiplies H W_hn + b_hn
                self.table0 = nn.functional.linear(model.embedding.weight, rnn.weight_ih_l0, rnn.bias_ih_l0).contiguous()
                self.w_ih_t, self.b_ih, self.w_hh_t, self.b_hh = [None], [None], [], []
                for layer in range(model.num_layers):
                    if layer:
                        self.w_ih_t.append(getattr(rnn, f"weight_ih_l{layer}").t().contiguous())
                        self.b_ih.append(getattr(rnn, f"bias_ih_l{layer}").detach().clone())
                    self.w_hh_t.append(getattr(rnn, f"weight_hh_l{layer}").t().contiguous())
                    self.b_hh.append(getattr(rnn, f"bias_hh_l{layer}").detach().clone())
            else:
                self.table0 = (nn.functional.linear(model.embedding.weight, rnn.weight_ih_l0, rnn.bias_ih_l0)
                               + rnn.bias_hh_l0).contiguous()
                self.w_hh0_t = rnn.weight_hh_l0.t().contiguous()
                self.w_t, self.b = [None], [None]
                for layer in range(1, model.num_layers):
                    w = torch.cat([getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")], dim=1)
                    self.w_t.append(w.t().contiguous())
                    self.b.append(getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}"))
            self.head_w_t = model.head.weight.t().contiguous()
            self.head_b = model.head.bias.detach().clone()

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state):
        """ids (batch,) -> next-character logits (batch, vocab) and the new (h, c)."""
        if self.cell == "gru":
            below, state = self._gru(ids, state)
        else:
            below, state = self._stacked(ids, state)
        return torch.addmm(self.head_b, below, self.head_w_t), state

    def _stacked(self, ids, state):
        """An LSTM's or a plain RNN's layers: the top H and the new (h, c)."""
        h_prev, c_prev = state
        hs, cs, below = [], [], None
        for layer in range(self.num_layers):
            if layer == 0:
                rows = self.table0.index_select(0, ids)  # X_t W_x + b for each row's character
                z = torch.addmm(rows, h_prev[0], self.w_hh0_t)
            else:
                x = torch.cat([below, h_prev[layer]], dim=1)
                z = torch.addmm(self.b[layer], x, self.w_t[layer])
            if self.cell == "rnn":
                below = torch.tanh(z)
            else:
                z = z.view(z.shape[0], 4, self.hidden_size)
                gates = torch.sigmoid(z)  # input, forget, (unused), output
                c = gates[:, 1] * c_prev[layer] + gates[:, 0] * torch.tanh(z[:, 2])
                below = gates[:, 3] * torch.tanh(c)
                cs.append(c)
            hs.append(below)
        return below, (torch.stack(hs), torch.stack(cs) if cs else c_prev)

    def _gru(self, ids, state):
        """A GRU's layers: the top H and the new (h, c), c passed through."""
        h_prev, c_prev = state
        hs, below, size = [], None, self.hidden_size
        for layer in range(self.num_layers):
            if layer == 0:
                x_part = self.table0.index_select(0, ids)
            else:
                x_part = torch.addmm(self.b_ih[layer], below, self.w_ih_t[layer])
            h = h_prev[layer]
            h_part = torch.addmm(self.b_hh[layer], h, self.w_hh_t[layer])
            rz = torch.sigmoid(x_part[:, : 2 * size] + h_part[:, : 2 * size])  # reset, update
            n = torch.tanh(x_part[:, 2 * size :] + rz[:, :size] * h_part[:, 2 * size :])
            below = (h - n) * rz[:, size:] + n
            hs.append(below)
        return below, (torch.stack(hs), c_prev)

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

    Inputs: ids int64 (B,), h float (layers, B, hidden) and, for an LSTM, c the same. Outputs:
    logits (B, vocab), h_new and, for an LSTM, c_new (layers, B, hidden). (A GRU's or RNN's c,
    which has no units, stays outside the graph: OrtStep passes it through.)
    """
    from onnx import TensorProto, checker, helper, numpy_helper

    hidden, layers, cell = fused.hidden_size, fused.num_layers, fused.cell
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
    const("axis0", np.array([0], np.int64))
    hs, cs, below = [], [], None
    for k in range(layers):
        const(f"layer{k}", np.array(k, np.int64))
        h_prev = node("Gather", ["h", f"layer{k}"], [f"h_prev{k}"], axis=0)
        if cell == "gru":
            below = _gru_nodes(node, const, linear, fused, k, h_prev, below)
        else:
            if k == 0:
                rows = node("Gather", ["table0", "ids"], ["rows0"], axis=0)  # X_t W_x + b, one row per id
                z = node("Add", [linear(h_prev, fused.w_hh0_t, None, "hh0"), rows], ["z0"])
            else:
                x = node("Concat", [below, h_prev], [f"x{k}"], axis=1)
                z = linear(x, fused.w_t[k], fused.b[k], f"z{k}")
            if cell == "rnn":
                below = node("Tanh", [z], [f"h{k}"])
            else:
                c_prev = node("Gather", ["c", f"layer{k}"], [f"c_prev{k}"], axis=0)
                below, c = _lstm_nodes(node, const, hidden, k, z, c_prev)
                cs.append(node("Unsqueeze", [c, "axis0"], [f"cu{k}"]))
        hs.append(node("Unsqueeze", [below, "axis0"], [f"hu{k}"]))
    linear(below, fused.head_w_t, fused.head_b, "logits")
    node("Concat", hs, ["h_new"], axis=0)
    state = ["layers", "B", hidden]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B"]),
              helper.make_tensor_value_info("h", TensorProto.FLOAT, state)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", vocab_size]),
               helper.make_tensor_value_info("h_new", TensorProto.FLOAT, state)]
    if cs:
        node("Concat", cs, ["c_new"], axis=0)
        inputs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, state))
        outputs.append(helper.make_tensor_value_info("c_new", TensorProto.FLOAT, state))
    graph = helper.make_graph(nodes, f"{cell}_step", inputs, outputs, inits)
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                    producer_name="lstm_model")
    checker.check_model(graph_model)
    return graph_model


def _lstm_nodes(node, const, hidden: int, k: int, z: str, c_prev: str) -> tuple[str, str]:
    """An LSTM layer's gates from its pre-activations z (B, 4H): the new H and C."""
    if k == 0:
        const("split4", np.array([hidden] * 4, np.int64))
    zi, zf, zg, zo = (f"{g}{k}" for g in ("zi", "zf", "zg", "zo"))
    node("Split", [z, "split4"], [zi, zf, zg, zo], axis=1)
    i = node("Sigmoid", [zi], [f"i{k}"])
    f = node("Sigmoid", [zf], [f"f{k}"])
    o = node("Sigmoid", [zo], [f"o{k}"])
    g = node("Tanh", [zg], [f"g{k}"])
    c = node("Add", [node("Mul", [f, c_prev], [f"fc{k}"]), node("Mul", [i, g], [f"ig{k}"])], [f"c{k}"])
    return node("Mul", [o, node("Tanh", [c], [f"tc{k}"])], [f"h{k}"]), c


def _gru_nodes(node, const, linear, fused: TorchStep, k: int, h_prev: str, below: str | None) -> str:
    """A GRU layer (nn.GRU's formulation, as TorchStep._gru computes it): the new H."""
    hidden = fused.hidden_size
    if k == 0:
        const("split_rz_n", np.array([2 * hidden, hidden], np.int64))
        const("split2", np.array([hidden, hidden], np.int64))
        x_part = node("Gather", ["table0", "ids"], ["xp0"], axis=0)
    else:
        x_part = linear(below, fused.w_ih_t[k], fused.b_ih[k], f"xp{k}")
    h_part = linear(h_prev, fused.w_hh_t[k], fused.b_hh[k], f"hp{k}")
    node("Split", [x_part, "split_rz_n"], [f"x_rz{k}", f"x_n{k}"], axis=1)
    node("Split", [h_part, "split_rz_n"], [f"h_rz{k}", f"h_n{k}"], axis=1)
    rz = node("Sigmoid", [node("Add", [f"x_rz{k}", f"h_rz{k}"], [f"zrz{k}"])], [f"rz{k}"])
    node("Split", [rz, "split2"], [f"r{k}", f"u{k}"], axis=1)
    n = node("Tanh", [node("Add", [f"x_n{k}", node("Mul", [f"r{k}", f"h_n{k}"], [f"rh{k}"])], [f"zn{k}"])], [f"n{k}"])
    keep = node("Mul", [node("Sub", [h_prev, n], [f"hn{k}"]), f"u{k}"], [f"keep{k}"])  # (H - N) ⊙ Z
    return node("Add", [keep, n], [f"h{k}"])


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
        self.cell = fused.cell
        self.carries_c = self.cell == "lstm"  # else c (no units) stays outside the graph
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
        inputs = {"ids": np.ascontiguousarray(ids.numpy(), dtype=np.int64),
                  "h": np.ascontiguousarray(h.detach().numpy(), dtype=np.float32)}
        if not self.carries_c:
            logits, h_new = self.session.run(None, inputs)
            return torch.from_numpy(logits), (torch.from_numpy(h_new), c)
        inputs["c"] = np.ascontiguousarray(c.detach().numpy(), dtype=np.float32)
        logits, h_new, c_new = self.session.run(None, inputs)
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
