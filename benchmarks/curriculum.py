"""Run curriculum stages: each stage file says what its training set is made of and how to train.

    python benchmarks/curriculum.py --babi DIR_OR_HUB_ID [--runs runs/babi] benchmarks/stages/babi-s4.json ...
    python benchmarks/curriculum.py --babi DIR_OR_HUB_ID --check benchmarks/stages/babi-s4.json

A stage file (JSON) holds:
- "data": a `lstm_model.babi_qa.StoryMix` (bAbI's own training stories, notes, "I don't know."
  questions, generated stories, probes), built into RUNS/data-<stage> by `babi_qa.build`;
- "train": settings of `python -m lstm_model.train` (TrainConfig's names), written into
  RUNS/<stage>.train.json and passed with `--config`;
- "from": the model the stage starts from (`--init-from`): a model folder, "stage:<name>" for
  RUNS/<name>, the stage before, or null for a model made from scratch (its shape in "train");
- "train_sha256": the digest (`babi_qa.train_sha256`) of the training set the stage was trained on.

A stage whose RUNS/<stage> holds a training state resumes it (`--resume`), so a stopped run goes
on where it stopped. `--check` only rebuilds each stage's training set and compares its digest with
the recorded one: the stage file of the bundled model rebuilds its training set byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lstm_model.babi_qa import StoryMix, build, load_stories, train_sha256  # noqa: E402


def read_stage(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        stage = json.load(f)
    for key in ("data", "train", "from"):
        if key not in stage:
            raise SystemExit(f"error: the stage file {path} has no \"{key}\"; see benchmarks/stages/ for the form.")
    return stage


def stage_data(babi: str, path: str, folder: str | None) -> str:
    """Build (or, where `folder` holds it already, read) the stage's training set; its digest."""
    import datasets

    if folder and os.path.isdir(folder) and os.listdir(folder):
        return train_sha256(datasets.load_from_disk(folder))
    mix = StoryMix.from_stage(path)
    dd = build(load_stories(babi, mix.tasks), mix)
    if folder:
        dd.save_to_disk(folder)
    return train_sha256(dd)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="+", metavar="STAGE.json")
    p.add_argument("--babi", required=True, metavar="DIR_OR_HUB_ID",
                   help="a folder of bAbI's *_train.txt files, or facebook/babi_qa")
    p.add_argument("--runs", default="runs/babi", help="where the stages' data and models go (default runs/babi)")
    p.add_argument("--check", action="store_true", help="rebuild each training set and compare its digest; no training")
    args = p.parse_args(argv)
    failed = 0
    for path in args.stages:
        stage, name = read_stage(path), os.path.splitext(os.path.basename(path))[0]
        recorded = stage.get("train_sha256")
        digest = stage_data(args.babi, path, None if args.check else os.path.join(args.runs, f"data-{name}"))
        same = recorded is None or digest == recorded
        print(f"{name}: training set sha256 {digest}" + ("" if recorded is None else
                                                         " (as recorded)" if same else f" (recorded: {recorded})"))
        if args.check:
            failed += not same
            continue
        out = os.path.join(args.runs, name)
        settings = {**stage["train"], "dataset": os.path.join(args.runs, f"data-{name}"), "out": out}
        if os.path.isfile(os.path.join(out, "training_state.safetensors")):
            start = ["--resume"]
        elif stage["from"] is None:  # from scratch: the shape and the cell are the stage's own
            start = []
        else:
            origin = stage["from"]
            start = ["--init-from", os.path.join(args.runs, origin[6:]) if origin.startswith("stage:") else origin]
        config = os.path.join(args.runs, f"{name}.train.json")
        os.makedirs(args.runs, exist_ok=True)
        with open(config, "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=2)
        done = subprocess.run([sys.executable, "-m", "lstm_model.train", "--config", config, *start])
        if done.returncode:
            return done.returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
