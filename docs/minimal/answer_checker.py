"""How well the trainer's answer checker agrees with a careful human grader, on both of its paths.

The corpus (tests/data/answer_checker_corpus.jsonl) holds (completion, reference, verdict) triples
written in the forms models print: boxed and unboxed, chatty, several boxes, nested braces, cut off,
and the equivalent forms of fractions, decimals, thousands separators, the Unicode minus,
percentages, units and multiple-choice letters. This script judges every pair with
math_answer_reward of minimal/ngrpo_train.py, once with math-verify and once with it hidden (the
plain path), and writes docs/minimal/answer_checker.md. The test suite checks that neither path
marks a wrong answer right and that the page is what this script writes.

.venv/bin/python docs/minimal/answer_checker.py
"""
import contextlib
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "answer_checker_corpus.jsonl"
PAGE = ROOT / "docs" / "minimal" / "answer_checker.md"


def load_trainer():
    if "ngrpo_train" not in sys.modules:
        path = ROOT / "minimal" / "ngrpo_train.py"
        spec = importlib.util.spec_from_file_location("ngrpo_train", path)
        sys.modules["ngrpo_train"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["ngrpo_train"])
    return sys.modules["ngrpo_train"]


def read_corpus() -> list:
    text = CORPUS.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def math_verify_hidden():
    """The trainer as it runs where math-verify is not installed."""
    real = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *args: \
        None if name == "math_verify" else real(name, *args)
    try:
        yield
    finally:
        importlib.util.find_spec = real


def judge(corpus: list, path: str) -> list:
    """The checker's verdict (True: right) on every pair, by `path`: "math-verify" or "plain"."""
    trainer = load_trainer()
    if path == "math-verify" and importlib.util.find_spec("math_verify") is None:
        raise RuntimeError("math-verify is not installed: pip install math-verify")
    with math_verify_hidden() if path == "plain" else contextlib.nullcontext():
        return [trainer.math_answer_reward(item["completion"], item["reference"]) == 1.0
                for item in corpus]


def page(corpus: list, verdicts: dict) -> str:
    """The markdown page: agreement per path and per form, and every remaining disagreement."""
    right = sum(item["right"] for item in corpus)
    intro = (f"`docs/minimal/answer_checker.py` judges the {len(corpus)} pairs of "
             "`tests/data/answer_checker_corpus.jsonl` (completion, reference answer, verdict of a "
             f"careful human grader; {right} right, {len(corpus) - right} wrong) with "
             "`math_answer_reward` of `minimal/ngrpo_train.py`: once with math-verify, once with "
             "it hidden (the plain path). Both read the same final answer (the last box; else the "
             "stated answer; else a closing number) and differ only in deciding equality. A false "
             "positive marks a wrong answer right, which RL would learn to exploit; the tests "
             "require none. A false negative costs a missed reward.")
    trainer = load_trainer()
    speed = ("Both paths take time linear in the completion's length: "
             "`benchmarks/bench_answer_checker.py` times them on degenerate completions of up to "
             "100,000 characters, and `tests/test_answer_checker.py` reads every regex of the "
             "checker for backtracking. math-verify's own parser is slow on long and on deeply "
             "nested input, so it parses only final answers of at most "
             f"{trainer.LONGEST_PARSED_ANSWER} characters and {trainer.DEEPEST_PARSED_ANSWER} "
             "levels of brackets; longer or deeper ones go to the plain checker, which also "
             f"compares a number of more than {trainer.LONGEST_PARSED_ANSWER} characters as text: "
             "a number of thousands of digits is a wrong answer, not an unknown reward.")
    lines = ["# The answer checker against a careful human grader", "",
             *textwrap.wrap(intro, width=100, break_on_hyphens=False), "",
             *textwrap.wrap(speed, width=100, break_on_hyphens=False), "",
             "| path | agreement | false positives | false negatives |", "|---|---|---|---|"]
    for path, judged in verdicts.items():
        agree = sum(v == item["right"] for v, item in zip(judged, corpus))
        false_pos = sum(v and not item["right"] for v, item in zip(judged, corpus))
        false_neg = sum(not v and item["right"] for v, item in zip(judged, corpus))
        share = f"{agree}/{len(corpus)} ({agree / len(corpus):.1%})"
        lines.append(f"| {path} | {share} | {false_pos} | {false_neg} |")
    forms = list(dict.fromkeys(item["form"] for item in corpus))
    lines += ["", "Agreement by form:", "", "| form | pairs | " + " | ".join(verdicts) + " |",
              "|---|---|" + "---|" * len(verdicts)]
    for form in forms:
        members = [i for i, item in enumerate(corpus) if item["form"] == form]
        cells = [f"{sum(judged[i] == corpus[i]['right'] for i in members)}/{len(members)}"
                 for judged in verdicts.values()]
        lines.append(f"| {form} | {len(members)} | " + " | ".join(cells) + " |")
    lines += ["", "Remaining false negatives (right answers the checker misses):", "",
              "| id | completion | reference | missed by |", "|---|---|---|---|"]
    for i, item in enumerate(corpus):
        missed = [path for path, judged in verdicts.items() if item["right"] and not judged[i]]
        if missed:
            completion = item["completion"].replace("\n", " ").replace("|", "\\|")
            completion = completion if len(completion) <= 70 else "..." + completion[-67:]
            reference = item["reference"]
            lines.append(f"| {item['id']} | `{completion}` | `{reference}` | {', '.join(missed)} |")
    return "\n".join(lines) + "\n"


def main():
    corpus = read_corpus()
    verdicts = {path: judge(corpus, path) for path in ("math-verify", "plain")}
    PAGE.write_text(page(corpus, verdicts))
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
