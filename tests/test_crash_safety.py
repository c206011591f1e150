"""kill -9 inside a save leaves the last good checkpoint loadable, and --resume works from it.

The kill is made deterministic by the training process itself: a hook around the rename that
ends every atomic write (lstm_model.checkpoint.fsync_replace) sends SIGKILL to its own process at
the N-th rename. A checkpoint renames three files: training_state.safetensors, then config.json
and model.safetensors of the model folder.
"""

import os
import signal
import subprocess
import sys

import pytest
import torch

from lstm_model import load_model
from lstm_model.train import STATE_NAME, read_state_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLER = """
import os, signal, sys
import lstm_model.checkpoint as checkpoint
from lstm_model import train

kill_at, renames, original = int(sys.argv[1]), [0], checkpoint.fsync_replace

def fsync_replace(tmp, final):
    renames[0] += 1
    if renames[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is written, the rename not done
    original(tmp, final)

checkpoint.fsync_replace = fsync_replace
sys.exit(train.main(sys.argv[2:]))
"""


def leftovers(out) -> list[str]:
    return [n for n in os.listdir(out) if n.endswith(".tmp") or n.startswith(".save-")]


# Checkpoints every step: renames 1-3 save step 1, renames 4-6 step 2. Killed at rename 4, the
# step-2 training state never replaced step 1's; at 5 it did, but the model folder is step 1's;
# at 6 the config is new and the weights old (the same shapes: still a consistent model).
@pytest.mark.parametrize("kill_at, saved_step", [(4, 1), (5, 2), (6, 2)])
def test_kill_9_inside_a_save_never_breaks_the_checkpoint(play_file, tmp_path, kill_at, saved_step):
    out = tmp_path / "run"
    args = ["--out", str(out), "--quiet", "--dataset", play_file, "--hidden-size", "32", "--embed-dim", "8",
            "--batch-size", "4", "--seq-len", "16", "--max-steps", "100", "--eval-every", "1000",
            "--checkpoint-every", "1", "--sample-chars", "10"]
    killed = subprocess.run([sys.executable, "-c", KILLER, str(kill_at), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert leftovers(out)  # the kill landed inside a save
    model = load_model(out)  # whatever the moment, the model folder is complete and consistent
    assert model.hidden_size == 32 and all(torch.isfinite(p).all() for p in model.parameters())
    assert read_state_metadata(str(out / STATE_NAME))["step"] == saved_step
    # --resume continues from the last good checkpoint and cleans the leftovers.
    done = subprocess.run([sys.executable, "-m", "lstm_model.train", "--out", str(out), "--quiet", "--resume",
                           "--max-steps", str(saved_step + 3)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_state_metadata(str(out / STATE_NAME))["step"] == saved_step + 3
    assert not leftovers(out)
