"""kill -9 inside a save leaves the last good checkpoint loadable, and --resume works from it.

The kill is made deterministic by the training process itself: a hook around the rename that
ends every atomic write (lstm_model.checkpoint.fsync_replace) sends SIGKILL to its own process at
the N-th rename. A checkpoint renames three files: training_state.safetensors, then config.json
and model.safetensors of the model folder.
"""

import os
import shutil
import signal
import subprocess
import sys

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


def train(out, play_file, *flags, kill_at=None):
    """Run the training CLI (killed at its `kill_at`-th rename when given); the finished process."""
    args = ["--out", str(out), "--quiet", "--dataset", play_file, "--hidden-size", "32", "--embed-dim", "8",
            "--batch-size", "4", "--seq-len", "16", "--eval-every", "1000", "--checkpoint-every", "1",
            "--sample-chars", "10", *flags]
    command = ["-c", KILLER, str(kill_at)] if kill_at else ["-m", "lstm_model.train"]
    return subprocess.run([sys.executable, *command, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_killed_with_a_good_checkpoint(run, out, step):
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert leftovers(out)  # the kill landed inside a save
    model = load_model(out)  # whatever the moment, the model folder is complete and consistent
    assert model.hidden_size == 32 and all(torch.isfinite(p).all() for p in model.parameters())
    assert read_state_metadata(str(out / STATE_NAME))["step"] == step


def test_kill_9_inside_a_save_never_breaks_the_checkpoint(play_file, tmp_path):
    out = tmp_path / "run"
    # A checkpoint every step, three renames each. Killed at rename 4, step 2's training state
    # never replaced step 1's.
    run = train(out, play_file, "--max-steps", "100", kill_at=4)
    assert_killed_with_a_good_checkpoint(run, out, step=1)
    # Resumed, killed at rename 3 of step 2's checkpoint: its state and config.json are new, its
    # weights are step 1's (the same shapes: still a consistent model).
    run = train(out, play_file, "--resume", kill_at=3)
    assert_killed_with_a_good_checkpoint(run, out, step=2)
    # Resumed, killed at rename 2 of step 3's checkpoint: the state is newer than the model folder.
    run = train(out, play_file, "--resume", kill_at=2)
    assert_killed_with_a_good_checkpoint(run, out, step=3)
    # --resume continues from the last good checkpoint and cleans the leftovers.
    done = train(out, play_file, "--resume", "--max-steps", "6")
    assert done.returncode == 0, done.stderr
    assert read_state_metadata(str(out / STATE_NAME))["step"] == 6
    assert not leftovers(out)


def snapshot(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_a_damaged_training_state_ends_resume_in_one_sentence_and_changes_nothing(play_file, tmp_path, capsys):
    """Truncated, a byte of its header flipped, a byte of its numbers flipped (caught by the
    checksum saved with them), or empty: --resume names the file and what to do, status 1."""
    from lstm_model.train import main

    small = ["--quiet", "--dataset", play_file, "--hidden-size", "16", "--embed-dim", "8", "--batch-size", "4",
             "--seq-len", "16", "--eval-every", "1000", "--sample-chars", "5", "--max-steps", "2"]
    good = tmp_path / "good"
    assert main(["--out", str(good), *small]) == 0
    data = (good / STATE_NAME).read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "header": data[:8] + bytes([data[8] ^ 0xFF]) + data[9:],
               "numbers": data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:], "empty": b""}
    capsys.readouterr()
    reasons = {}
    for name, content in damaged.items():
        out = tmp_path / name
        shutil.copytree(good, out)
        (out / STATE_NAME).write_bytes(content)
        before = snapshot(out)
        code = main(["--out", str(out), "--resume", "--max-steps", "4"])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err, err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"error: {out / STATE_NAME} cannot be resumed from ("), line
        assert line.endswith("); start the run again with --overwrite instead of --resume, or --resume from another "
                             "checkpoint (--out at its folder)."), line
        assert snapshot(out) == before, name
        reasons[name] = line
    assert "(its numbers do not match the checksum saved with them)" in reasons["numbers"]
    assert "(SafetensorError: " in reasons["truncated"]
    # What the sentence says to do works.
    assert main(["--out", str(tmp_path / "truncated"), "--overwrite", *small]) == 0
    assert read_state_metadata(str(tmp_path / "truncated" / STATE_NAME))["step"] == 2
