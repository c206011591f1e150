"""Data-parallel training under torchrun (gloo on CPU) follows the single-process loss curve."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# With dropout off, two ranks averaging their gradients equal one process on the whole batch up
# to float32 rounding in the all-reduce; over 12 steps that stays far below this.
TOLERANCE = 1e-3


def losses(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def run(cmd, env):
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    return result


def test_two_ranks_match_one_process_and_resume_across_world_sizes(play_file, tmp_path):
    common = ["--dataset", play_file, "--hidden-size", "32", "--embed-dim", "8", "--batch-size", "8", "--seq-len", "32",
              "--max-steps", "12", "--dropout", "0", "--eval-every", "6", "--eval-batches", "2", "--quiet",
              "--sample-chars", "10", "--device", "cpu", "--warmup-steps", "2", "--lr", "5e-3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    run([sys.executable, "-m", "lstm_model.train", *common, "--out", str(tmp_path / "one")], env)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lstm_model.train",
         *common, "--out", str(tmp_path / "two")], env)
    single, double = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(single) == len(double) == 12
    assert max(abs(a - b) for a, b in zip(single, double)) < TOLERANCE, (single, double)
    assert single[-1] < single[0]  # it learned something, identically
    # Rank 0 alone wrote the run: one log line per step, a model that loads.
    from lstm_model import load_model

    assert load_model(tmp_path / "two").hidden_size == 32
    # The 2-rank run resumes in one process, and a 1-process run resumes under 2 ranks.
    run([sys.executable, "-m", "lstm_model.train", "--out", str(tmp_path / "two"), "--resume", "--max-steps", "14",
         "--quiet"], env)
    assert len(losses(tmp_path / "two")) == 14
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lstm_model.train",
         "--out", str(tmp_path / "one"), "--resume", "--max-steps", "14", "--quiet"], env)
    assert len(losses(tmp_path / "one")) == 14


def test_batch_must_split_evenly(play_file, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lstm_model.train",
         "--dataset", play_file, "--batch-size", "7", "--max-steps", "2", "--out", str(tmp_path / "x"), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "divisible" in result.stderr


def test_more_processes_than_gpus_is_refused_with_what_to_do(monkeypatch):
    from lstm_model.distributed import init_distributed
    from lstm_model.train_config import TrainingStopped

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for rank in ("0", "1"):  # every rank stops, not only the one without a GPU
        monkeypatch.setenv("LOCAL_RANK", rank)
        with pytest.raises(TrainingStopped, match=r"2 processes .* 1 CUDA GPU.*--nproc_per_node=1.*--device cpu"):
            init_distributed("cuda")
