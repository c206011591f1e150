"""Does the fact reader (lstm_model/babi_qa.py `Reader`) answer every official bAbI training
question as bAbI does? It must, for every one: its notes and "I don't know." questions are
written from it.

    python benchmarks/babi_reader_check.py --babi BABI_DIR

Reads every *_train.txt file of the folder (tasks 1, 2, 3, 6, 7, 8; never a test file), fact by
fact, and compares the reader's answer with the official one at each question; also writes every
fact's notes (each checked for its characters and length). Prints per file the stories, facts,
questions and answers that agree, and exits 1 unless all of them do.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lstm_model.babi_qa import TASKS, Reader, read_file  # noqa: E402

FORMS = (("Where is the", "where object"), ("Where was the", "before"), ("Where is", "where person"),
         ("Is ", "yes/no"), ("How many", "count"), ("What is", "list"))


def form(question: str) -> str:
    return next(name for start, name in FORMS if question.startswith(start))


def check(path: str, task: int, wrong: list) -> tuple[int, int, int, int, collections.Counter]:
    """(stories, facts, questions, agreeing answers, questions per form) of one file; the first
    disagreements are appended to `wrong`."""
    stories = read_file(path, task)
    facts = questions = right = 0
    forms = collections.Counter()
    for story in stories:
        reader = Reader()
        for line in story.lines:
            if line.answer is None:
                reader.notes(*reader.read(line.text))
                facts += 1
                continue
            questions += 1
            forms[form(line.text)] += 1
            got = reader.answer(line.text)
            if got == line.answer:
                right += 1
            elif len(wrong) < 10:
                wrong.append(f"{os.path.basename(path)}: {line.text!r} -> {got!r}, bAbI {line.answer!r} "
                             f"(story from line {story.lines[0].id}, question line {line.id})")
    return len(stories), facts, questions, right, forms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--babi", required=True, metavar="BABI_DIR", help="the folder of bAbI's *_train.txt files")
    args = p.parse_args(argv)
    files = sorted(glob.glob(os.path.join(glob.escape(args.babi), "*_train.txt")))
    files = [(f, int(m[1])) for f in files if (m := re.search(r"qa(\d+)_", os.path.basename(f))) and int(m[1]) in TASKS]
    if not files:
        print(f"error: {args.babi} holds no bAbI training file of tasks {', '.join(map(str, TASKS))}.", file=sys.stderr)
        return 2
    wrong, totals = [], [0, 0]
    print(f"{'file':<44} {'task':>4} {'stories':>8} {'facts':>8} {'questions':>9} {'agree':>8}  forms")
    for path, task in files:
        stories, facts, questions, right, forms = check(path, task, wrong)
        totals[0], totals[1] = totals[0] + questions, totals[1] + right
        shown = ", ".join(f"{name} {n}" for name, n in sorted(forms.items()))
        print(f"{os.path.basename(path):<44} {task:>4} {stories:>8,} {facts:>8,} {questions:>9,} "
              f"{100 * right / max(questions, 1):>7.2f}%  {shown}")
    print(f"all: {totals[1]:,} of {totals[0]:,} answers agree ({100 * totals[1] / max(totals[0], 1):.2f}%)")
    for line in wrong:
        print("  disagrees:", line)
    return 0 if totals[0] == totals[1] else 1


if __name__ == "__main__":
    sys.exit(main())
