"""A pointer for the next step of issue 7, not used by the app: do two decoder threads help once
the step no longer holds the GIL?

    python benchmarks/gil_free_lanes.py

Runs 300 fp32 LSTM steps of a 2 x 512 model (the fused step of lstm_model.generate.Stepper, no
sampling) inside one `torch.jit.script` function, which runs without the GIL: one thread at batch
16, two threads at batch 8 each, and one thread at batch 1; prints rows (characters) per second,
medians of 5. `torch.jit.script` is deprecated in torch 2.13 (hence a pointer, not a feature).
"""

import os
import statistics
import sys
import threading
import time
import warnings

warnings.simplefilter("ignore")  # torch.jit.script's deprecation warning
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from lstm_model import CharLSTM  # noqa: E402
from lstm_model.generate import Stepper  # noqa: E402

VOCAB = [chr(c) for c in range(32, 127)] + ["\n"]


@torch.jit.script
def steps(ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor, table0: torch.Tensor, w0: torch.Tensor,
          w1: torch.Tensor, b1: torch.Tensor, head_w: torch.Tensor, head_b: torch.Tensor, hidden: int, n: int):
    """n steps of Stepper.step (fp32, two layers), feeding the same ids."""
    logits = torch.empty(0)
    for _ in range(n):
        z = torch.addmm(table0.index_select(0, ids), h[0], w0).view(ids.shape[0], 4, hidden)
        gates = torch.sigmoid(z)
        c0 = gates[:, 1] * c[0] + gates[:, 0] * torch.tanh(z[:, 2])
        h0 = gates[:, 3] * torch.tanh(c0)
        z = torch.addmm(b1, torch.cat([h0, h[1]], 1), w1).view(ids.shape[0], 4, hidden)
        gates = torch.sigmoid(z)
        c1 = gates[:, 1] * c[1] + gates[:, 0] * torch.tanh(z[:, 2])
        h1 = gates[:, 3] * torch.tanh(c1)
        logits = torch.addmm(head_b, h1, head_w)
        h, c = torch.stack([h0, h1]), torch.stack([c0, c1])
    return logits


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = CharLSTM(vocab=VOCAB, embed_dim=64, hidden_size=512, num_layers=2, dropout=0.0).eval()
    st = Stepper(model)

    def run(batch, n):
        ids = torch.randint(0, len(VOCAB), (batch,))
        h = c = torch.zeros(2, batch, 512)
        steps(ids, h, c, st.table0, st.w_hh0_t, st.w_t[1], st.b[1], st.head_w_t, st.head_b, 512, n)

    def rows_per_second(lanes, batch, n=300):
        threads = [threading.Thread(target=run, args=(batch, n)) for _ in range(lanes)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return lanes * batch * n / (time.perf_counter() - start)

    run(16, 5)
    run(8, 5)
    runs = [(rows_per_second(1, 16), rows_per_second(2, 8), rows_per_second(1, 1)) for _ in range(5)]
    one, two, single = (statistics.median(r[i] for r in runs) for i in range(3))
    print(f"torch {torch.__version__}: one thread at batch 16 {one:,.0f} rows/s; two threads at batch 8 {two:,.0f} rows/s "
          f"({statistics.median(r[1] / r[0] for r in runs):.2f}x); one thread at batch 1 {single:,.0f} rows/s (medians of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
