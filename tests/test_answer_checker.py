"""The trainer's answer checker against the verdicts of a careful human grader
(tests/data/answer_checker_corpus.jsonl): neither path, math-verify or the plain one, may mark a
wrong answer right, and docs/minimal/answer_checker.md states their agreement as it is."""

import contextlib
import importlib.util
import sys
from collections import Counter

import pytest

from test_minimal_trainer import ROOT, trainer

_spec = importlib.util.spec_from_file_location("answer_checker_page",
                                               ROOT / "docs" / "minimal" / "answer_checker.py")
checker_page = importlib.util.module_from_spec(_spec)
sys.modules["answer_checker_page"] = checker_page
_spec.loader.exec_module(checker_page)

CORPUS = checker_page.read_corpus()
PATHS = ["math-verify", "plain"]


def test_the_corpus_is_large_and_covers_every_form_with_both_verdicts():
    assert len(CORPUS) >= 200 and len({item["id"] for item in CORPUS}) == len(CORPUS)
    by_form = Counter((item["form"], item["right"]) for item in CORPUS)
    for form in ("boxed", "chatty boxed", "several boxes", "nested braces", "truncated", "unboxed",
                 "equivalent forms", "expressions"):
        assert by_form[(form, False)] >= 5, form
        assert by_form[(form, True)] >= 5 or form == "truncated", form  # a cut-off box is no answer


@pytest.mark.parametrize("path", PATHS)
def test_no_wrong_answer_is_marked_right(path):
    if path == "math-verify":
        pytest.importorskip("math_verify", reason="math-verify is not installed")
    verdicts = checker_page.judge(CORPUS, path)
    false_positives = [item["id"] for item, verdict in zip(CORPUS, verdicts)
                       if verdict and not item["right"]]
    assert false_positives == []
    agreeing = sum(verdict == item["right"] for item, verdict in zip(CORPUS, verdicts))
    assert agreeing >= 0.9 * len(CORPUS)


def test_the_documented_agreement_is_the_measured_one():
    pytest.importorskip("math_verify", reason="the page reports both paths")
    verdicts = {path: checker_page.judge(CORPUS, path) for path in PATHS}
    assert checker_page.PAGE.read_text() == checker_page.page(CORPUS, verdicts)


RULES = [  # (completion, reference, right?): the rules the issue names, one pair each
    (r"\boxed{\frac{1}{\sqrt{2}}}", "2", False),  # a deep box is judged whole, not by a digit in it
    (r"\boxed{\boxed{\boxed{3}}}", "3", True),
    (r"\boxed{3} wait, no: \boxed{4}", "4", True),
    (r"\boxed{3} wait, no: \boxed{4}", "3", False),
    (r"\boxed{5} so far; in total \boxed{1", "5", False),  # the last box was cut off: no answer
    (r"\boxed{\dfrac{3}{4}}", "0.75", True),
    (r"\boxed{4.50}", "4.5", True),
    (r"\boxed{1,234}", "1234", True),
    (r"\boxed{(1,234)}", "1234", False),
    ("\\boxed{\u22123}", "-3", True),
    (r"\boxed{50}", "50%", True),
    (r"\boxed{0.5}", r"50\%", False),
    (r"\boxed{5 \text{ cm}}", "5", True),
    (r"\boxed{(B)}", "B", True),
    ("The answer is 12. Check: 12 + 3 = 15.", "15", False),
    ("I don't know.", "4", False),
]


@pytest.mark.parametrize("path", PATHS)
def test_the_rules_the_issue_names(path):
    if path == "math-verify":
        pytest.importorskip("math_verify", reason="math-verify is not installed")
    hidden = checker_page.math_verify_hidden() if path == "plain" else contextlib.nullcontext()
    with hidden:
        for completion, reference, right in RULES:
            verdict = trainer.math_answer_reward(completion, reference)
            assert verdict == float(right), (completion, reference)
