"""The answer checker's time against the completion's length: `math_answer_reward` of
minimal/ngrpo_train.py on degenerate completions of 10^2 to 10^5 characters, on both paths (with
math-verify, and with it hidden: the plain checker), and the reasoning-gym reward's search for the
last <answer> tag, beside the checker as it was before it was made linear (the BASELINE section
below, kept here only to measure against; the tests use it as the oracle of the new checker on
short texts).

Each completion ends in a shape that models print when they degenerate: a long number, a run of
digits or spaces followed by words, boxes that never close, nested braces, many $, "The answer is"
over and over, and the answers that reach the normaliser's rules (a percent sign, a degree sign or
an assignment after a run of spaces). The reference answer is 42. Every shape is judged once by
both checkers before anything is timed (math-verify's parser builds its tables on first use). A
point is the median CPU time of up to 5 calls of today's checker (until 50 ms are spent) and of one
call of the baseline, with math-verify's parse caches emptied and the reference parsed again before
each (as in training, where the reference's parse is cached and the answer's is new). The exponent
is the slope of log(time) on log(length) over the lengths from 10^3 (1: linear). The baseline stops
after the first length at which one call took more than --cap-s seconds; where it raised (int()
refuses numbers of more than 4300 digits) the reward would have been unknown, and the table says so.

    .venv/bin/python benchmarks/bench_answer_checker.py [--cap-s 2] [--out table.md]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import re
import statistics
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from harness import ROOT, load_trainer

trainer = load_trainer()
_spec = importlib.util.spec_from_file_location("answer_checker_page",
                                               ROOT / "docs" / "minimal" / "answer_checker.py")
checker_page = importlib.util.module_from_spec(_spec)  # math_verify_hidden: the plain path
_spec.loader.exec_module(checker_page)
LENGTHS = [100, 316, 1000, 3162, 10000, 31623, 100000]
SHOWN = [100, 1000, 10000, 100000]


# --------------------------------------------------------------------------------------------------
# BASELINE: the answer checker of minimal/ngrpo_train.py before it was made linear (commit
# f23536c), where it differs from today's. Not used by the project; quadratic on the shapes below.
# --------------------------------------------------------------------------------------------------
ANSWER_PHRASE_BEFORE = re.compile(r"\banswer\s*(?:is\s*:?|:)\s*|^\s*####\s*",
                                  re.IGNORECASE | re.MULTILINE)
NUMBER_BEFORE = r"-?(?:\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|\.\d+)"
ENDS_ON_NUMBER_BEFORE = re.compile(rf"({NUMBER_BEFORE})\s*(?:\\?%)?[\s$*]*"
                                   r"(?:[.!][\s$*]*|[A-Za-z']+[\s$*]*[.!][\s$*]*)?$")
UNIT_BEFORE = re.compile(rf"({NUMBER_BEFORE})\s*(?:[A-Za-z]{{2,}}|[mgsLh])(?:\^\d)?"
                         r"(?:\s+[A-Za-z]+)?")
SINGLE_CHOICE_BEFORE = re.compile(r"\(?\s*([A-J])\s*\)?")


def final_answer_before(completion: str):
    completion = completion.replace("\u2212", "-")
    boxed = trainer.boxed_answer(completion)
    if boxed is not None:
        return boxed.strip() or None
    phrases = list(ANSWER_PHRASE_BEFORE.finditer(completion))
    if phrases:
        sentence, *later = re.split(r"\.(?:\s|$)|\n", completion[phrases[-1].end():], maxsplit=1)
        answer = re.split(r",\s+(?=[A-Za-z])", sentence)[0].strip().strip("*$ ").strip()
        return answer if answer and not re.search(r"\d", "".join(later)) else None
    ending = ENDS_ON_NUMBER_BEFORE.search(completion.strip())
    if ending:
        return ending.group(1)
    short = completion.strip().rstrip(".!").strip().strip("*$").strip()
    return short if short and len(short.split()) <= 3 else None


def normalise_answer_before(text: str) -> str:
    text = text.replace("\u2212", "-").replace("{,}", ",")
    text = re.sub(r"(?<!\\)\\(?:left|right|displaystyle|[!,;: ]|q?quad)|~|\\\$|\$", " ", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\u00b0", "", text)
    text = re.sub(r"\s*\\?%$", "", text.strip().rstrip(".").strip())
    assignment = re.fullmatch(r"[A-Za-z]\s*=\s*([^=]+)", text)
    text = assignment.group(1).strip() if assignment else text
    with_unit = UNIT_BEFORE.fullmatch(text)
    text = with_unit.group(1) if with_unit else text
    choice = SINGLE_CHOICE_BEFORE.fullmatch(text)
    return choice.group(1) if choice else " ".join(text.split())


def exact_number_before(text: str):
    text = text.replace(" ", "")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    ratio = (re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", text)
             or re.fullmatch(r"(-?)\\frac(\d)(\d)", text) or re.fullmatch(r"(-?)(\d+)/(\d+)", text))
    if ratio:
        sign, numerator, denominator = -1 if ratio.group(1) else 1, *map(int, ratio.group(2, 3))
        return sign * Fraction(numerator, denominator) if denominator else None
    return Fraction(text) if re.fullmatch(r"-?(?:\d+(?:\.\d+)?|\.\d+)", text) else None


def plain_equal_before(answer: str, reference: str) -> bool:
    answer, reference = normalise_answer_before(answer), normalise_answer_before(reference)
    numbers = exact_number_before(answer), exact_number_before(reference)
    if None not in numbers:
        return numbers[0] == numbers[1]
    parts = trainer.split_bracketed(answer), trainer.split_bracketed(reference)
    if None not in parts:
        shapes = [(opening, len(items), closing) for opening, items, closing in parts]
        if shapes[0] == shapes[1]:
            return all(plain_equal_before(a, r) for a, r in zip(parts[0][1], parts[1][1]))

    def compact(text):
        def braced(match):
            return f"\\{match[1]}{{{match[2]}}}" + (f"{{{match[3]}}}" if match[3] else "")
        return re.sub(r"\\(frac|sqrt)\s*(\w)(\w)?", braced, text).replace(" ", "")
    return compact(answer) == compact(reference)


def math_verify_equal_before(answer: str, reference: str) -> bool:
    from math_verify import parse, verify
    answer, reference = normalise_answer_before(answer), normalise_answer_before(reference)
    numbers = exact_number_before(answer), exact_number_before(reference)
    if None not in numbers:
        return numbers[0] == numbers[1]
    gold, guess = parse(f"\\boxed{{{reference}}}"), parse(f"\\boxed{{{answer}}}")
    if numbers[0] is not None and gold and getattr(gold[0], "is_rational", None) is False:
        return False
    return bool(verify(gold, guess))


def math_answer_reward_before(completion: str, answer: str, path: str) -> float:
    guess, reference = final_answer_before(completion), trainer.boxed_answer(answer) or answer
    if guess is None:
        return 0.0
    equal = math_verify_equal_before if path == "math-verify" else plain_equal_before
    return float(equal(guess, reference))


def last_tagged_answer_before(completion: str):
    tagged = re.findall(r"<answer>(.*?)</answer>", completion, re.DOTALL)
    return tagged[-1] if tagged else None
# ------------------------------------------------------------------------------ end of BASELINE


def fill(head: str, unit: str, tail: str, length: int) -> str:
    """head + unit repeated + tail, `length` characters long (at least head and tail)."""
    body = max(0, length - len(head) - len(tail))
    return head + (unit * (body // len(unit) + 1))[:body] + tail


SHAPES = {  # name: completion of about n characters
    "prose, then a long number": lambda n: fill("So the total is ", "7", "", n),
    "a run of digits, then two words": lambda n: fill("", "1", " so far", n),
    "spaces between two words": lambda n: fill("so", " ", "far", n),
    "thousands separators, then two words": lambda n: fill("1", ",234", " so far", n),
    "blank lines": lambda n: fill("a", "\n \n", "b", n),
    "\\boxed{ never closed": lambda n: fill("", "\\boxed{", "", n),
    "nested braces in a box": lambda n: "\\boxed{" + "{" * (n // 2 - 5) + "1" + "}" * (n // 2 - 4),
    "many $": lambda n: fill("", "$", "", n),
    "'The answer is' over and over": lambda n: fill("", "The answer is ", "", n),
    "a boxed number of n digits": lambda n: fill("\\boxed{", "9", "}", n),
    "percent sign after spaces": lambda n: fill("The answer is 5", " ", "x %", n),
    "degree sign after spaces": lambda n: fill("\\boxed{5^", " ", "x}", n),
    "assignment, spaces, =": lambda n: fill("\\boxed{x =", " ", "=}", n),
}


def fresh_caches(path: str) -> None:
    """Empty the checker's and math-verify's caches, and parse the reference again (untimed)."""
    trainer.math_verify_equal.cache_clear()
    if path == "math-verify":
        from math_verify import parse, parser
        parser.parse_latex_cached.cache_clear()
        parser.parse_expr_cached.cache_clear()
        parse("\\boxed{42}")


def timed(call, path: str, calls: int = 5, enough_s: float = 0.05):
    """(median CPU seconds per call, its result)."""
    times, result = [], None
    while len(times) < calls and sum(times) < enough_s:
        fresh_caches(path)
        started = time.process_time()
        result = call()
        times.append(time.process_time() - started)
    return statistics.median(times), result


def guarded(call):
    """The baseline's result, or what it raised (int()'s limit: an unknown reward in training)."""
    try:
        return call()
    except Exception as error:
        return f"raised {type(error).__name__}"


def exponent(lengths, times) -> float:
    pairs = [(n, t) for n, t in zip(lengths, times) if n >= 1000 and t > 0]
    if len(pairs) < 2:
        return float("nan")
    return float(np.polyfit(*np.log(np.array(pairs)).T, 1)[0])


def checkers(path: str) -> tuple:
    """(today's checker, the baseline) on `path`, each a function of the completion."""
    if path == "reasoning-gym":
        return trainer.last_tagged_answer, last_tagged_answer_before
    hidden = checker_page.math_verify_hidden if path == "plain" else contextlib.nullcontext

    def new(completion):
        with hidden():
            return trainer.math_answer_reward(completion, "42")
    return new, functools.partial(math_answer_reward_before, answer="42", path=path)


def measure(make, path: str, cap_s: float) -> dict:
    """Times of today's checker and of the baseline on the completions make(length)."""
    new, before = checkers(path)
    row = {"new": {}, "before": {}, "raised": [], "disagree": []}
    for length in LENGTHS:
        completion = make(length)
        row["new"][length], verdict = timed(lambda: new(completion), path)
        if row["before"] and max(row["before"].values()) > cap_s:
            continue
        row["before"][length], old = timed(lambda: guarded(lambda: before(completion)), path,
                                           calls=1)
        if isinstance(old, str) and old.startswith("raised"):
            row["raised"].append(length)
        elif old != verdict:
            row["disagree"].append(length)
    return row


def table(rows: dict) -> str:
    header = " | ".join(f"10^{round(np.log10(n))}" for n in SHOWN)
    lines = ["| completion | path | " + header + " | exponent |",
             "|---|---|" + "---|" * (len(SHOWN) + 1)]
    for (name, path), row in rows.items():
        cells = []
        for n in SHOWN:
            before = row["before"].get(n)
            old = "-" if before is None else f"{1000 * before:.3g}"
            old += " (raised)" if n in row["raised"] else ""
            cells.append(f"{1000 * row['new'][n]:.3g} / {old}")
        slopes = [exponent(list(times), list(times.values()))
                  for times in (row["new"], row["before"])]
        lines.append(f"| {name} | {path} | " + " | ".join(cells)
                     + f" | {slopes[0]:.2f} / {slopes[1]:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap-s", type=float, default=2.0,
                        help="stop the baseline after a call that took longer (seconds)")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # math-verify logs every timeout of its parser
    paths = ["plain"] + (["math-verify"] if importlib.util.find_spec("math_verify") else [])
    for path in paths:  # math-verify builds its parser's tables on first use: not timed
        for make in SHAPES.values():
            new, before = checkers(path)
            new(make(LENGTHS[0]))
            guarded(lambda: before(make(LENGTHS[0])))
    rows = {}
    for path in paths:
        for name, make in SHAPES.items():
            rows[name, path] = measure(make, path, args.cap_s)
            print(f"measured {name!r} on {path}: {rows[name, path]}", flush=True)
    rows["<answer> never closed", "reasoning-gym"] = measure(
        lambda n: fill("", "<answer>", "", n), "reasoning-gym", args.cap_s)
    text = ("CPU ms per call, today / baseline ('-': not run, the baseline took more than "
            f"{args.cap_s:g} s at a shorter length)\n\n" + table(rows))
    disagreements = [f"{name} ({path}) at {row['disagree']}" for (name, path), row in rows.items()
                     if row["disagree"]]
    text += ("\n\nVerdicts: today's equal the baseline's wherever the baseline ran and did not "
             "raise." if not disagreements else "\n\nVerdicts differ: " + "; ".join(disagreements))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
