"""kill -9 at any moment leaves the last good checkpoint loadable, and --resume works from it."""

import os
import signal
import subprocess
import sys
import time

from lstm_model import load_model
from lstm_model.train import STATE_NAME, read_state_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kill_9_during_saves_never_breaks_the_checkpoint(play_file, tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "lstm_model.train", "--out", str(out), "--quiet"]
    args = base + ["--dataset", play_file, "--hidden-size", "192", "--embed-dim", "16", "--batch-size", "4",
                   "--seq-len", "16", "--max-steps", "100000", "--eval-every", "100000", "--checkpoint-every", "1"]
    killed_mid_save = 0
    for attempt in range(12):
        cmd = args + (["--resume"] if (out / STATE_NAME).exists() else [])
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait until the run has saved at least once more, then kill it at an arbitrary moment.
        start_step = read_state_metadata(str(out / STATE_NAME))["step"] if (out / STATE_NAME).exists() else 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / STATE_NAME).exists():
                try:
                    if read_state_metadata(str(out / STATE_NAME))["step"] > start_step + 2:
                        break
                except Exception:  # the file is replaced atomically, so this should not happen
                    raise
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        time.sleep(0.013 * (attempt + 1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        leftovers = [n for n in os.listdir(out) if n.endswith(".tmp") or n.startswith(".save-")]
        killed_mid_save += bool(leftovers)
        # Whatever the moment, the checkpoint is complete and consistent.
        model = load_model(out)
        meta = read_state_metadata(str(out / STATE_NAME))
        assert meta["step"] >= 1 and model.hidden_size == 192
        if killed_mid_save >= 2:
            break
    assert killed_mid_save >= 1, "no kill landed inside a save; the test did not test what it claims"
    # --resume continues from the last good checkpoint and cleans the leftovers.
    step = read_state_metadata(str(out / STATE_NAME))["step"]
    done = subprocess.run(base + ["--resume", "--max-steps", str(step + 3), "--eval-every", "1000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_state_metadata(str(out / STATE_NAME))["step"] == step + 3
    assert not [n for n in os.listdir(out) if n.endswith(".tmp") or n.startswith(".save-")]
