"""The trainer's answer checker against the verdicts of a careful human grader
(tests/data/answer_checker_corpus.jsonl): neither path, math-verify or the plain one, may mark a
wrong answer right, and docs/minimal/answer_checker.md states their agreement as it is."""

import ast
import contextlib
import importlib.util
import inspect
import random
import re
import sys
import textwrap
from collections import Counter
from re import _compiler as regex_compiler  # the standard library's own parser, read below
from re import _constants as regex_codes
from re import _parser as regex_parser

import pytest
from test_minimal_trainer import ROOT, trainer

_spec = importlib.util.spec_from_file_location("answer_checker_page",
                                               ROOT / "docs" / "minimal" / "answer_checker.py")
checker_page = importlib.util.module_from_spec(_spec)
sys.modules["answer_checker_page"] = checker_page
_spec.loader.exec_module(checker_page)

sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark imports its harness
_spec = importlib.util.spec_from_file_location("bench_answer_checker",
                                               ROOT / "benchmarks" / "bench_answer_checker.py")
baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(baseline)
sys.path.remove(str(ROOT / "benchmarks"))

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


# --------------------------------------------------------------------------------------------------
# Time linear in the completion's length. The regexes are checked by reading them (a timed test
# would measure the machine's load): no match attempt may backtrack into a repeat, and the attempts
# of a search may not read the same stretch twice. The checker before it was made linear
# (benchmarks/bench_answer_checker.py keeps it as its baseline) is the oracle on short texts.
# --------------------------------------------------------------------------------------------------
PROBES = [chr(code) for code in range(32, 127)] + list("\t\n\r\x0b\x0c\u00a0\u2028\u0663\u00e9")
REPEATS = {regex_codes.MAX_REPEAT, regex_codes.MIN_REPEAT, regex_codes.POSSESSIVE_REPEAT}
ONE_CHARACTER = {regex_codes.LITERAL, regex_codes.NOT_LITERAL, regex_codes.IN, regex_codes.ANY}
SEARCHING = {"search": 2, "findall": 2, "finditer": 2, "split": 3, "sub": 4, "subn": 4}
ANCHORED = {"match": 2, "fullmatch": 2}


def inner_sequences(item) -> list:
    op, value = item
    if op in REPEATS:
        return [value[2]]
    if op is regex_codes.SUBPATTERN:
        return [value[3]]
    if op is regex_codes.ATOMIC_GROUP:
        return [value]
    if op is regex_codes.BRANCH:
        return value[1]
    if op in (regex_codes.ASSERT, regex_codes.ASSERT_NOT):
        return [value[1]]
    return []


def unbounded(item) -> bool:
    """Whether the element is or holds a repeat without an upper bound (*, +, {n,})."""
    op, value = item
    return (op in REPEATS and value[1] == regex_parser.MAXREPEAT) or any(
        unbounded(inner) for sequence in inner_sequences(item) for inner in sequence)


def consumable(item, state) -> frozenset:
    """The probe characters that the element can consume (lookarounds consume none)."""
    op, value = item
    if op in ONE_CHARACTER:
        single = regex_compiler.compile(regex_parser.SubPattern(state, [item]), state.flags)
        return frozenset(character for character in PROBES if single.fullmatch(character))
    if op in (regex_codes.ASSERT, regex_codes.ASSERT_NOT):
        return frozenset()
    return frozenset().union(*(consumable(inner, state) for sequence in inner_sequences(item)
                               for inner in sequence))


def superlinear_parts(pattern: str, flags: int, searching: bool) -> list:
    """Why `pattern` may take more than linear time in its text; [] when it cannot.

    One attempt: an unbounded repeat that is not possessive may be backtracked into, and gives its
    characters back one at a time to whatever follows; that costs more than linear time only when
    something unbounded follows it or lies inside it, so that is what is refused. A search (search,
    findall, finditer, sub, split) starts an attempt at every position: an unbounded repeat that
    something follows must exclude the characters of an element that every match has before it
    (the newline before ^ in MULTILINE mode), so that the stretch one attempt reads in it holds no
    start of another attempt. A search anchored at the start of the text is one attempt."""
    parsed = regex_parser.parse(pattern, flags)
    state, parts = parsed.state, []

    def walk(sequence, required, unbounded_after, nothing_after, searching):
        required = list(required)
        for index, item in enumerate(sequence):
            op, value = item
            rest = sequence[index + 1:]
            later = unbounded_after or any(unbounded(following) for following in rest)
            last = nothing_after and not rest
            if op in REPEATS and value[1] == regex_parser.MAXREPEAT:
                nested = any(unbounded(inner) for inner in value[2])
                if op is not regex_codes.POSSESSIVE_REPEAT and (later or nested):
                    parts.append(f"backtracking into {item}")
                characters = consumable(item, state)
                if searching and not last and all(characters & before for before in required):
                    parts.append(f"attempts re-reading {item}")
            if op is regex_codes.AT and value in (regex_codes.AT_BEGINNING,
                                                  regex_codes.AT_BEGINNING_STRING):
                if value is regex_codes.AT_BEGINNING and state.flags & re.MULTILINE:
                    required.append(frozenset("\n"))
                else:
                    searching = False
            repeated = op in REPEATS and value[1] == regex_parser.MAXREPEAT
            for inner in inner_sequences(item):
                walk(inner, required, later or repeated, last and not repeated, searching)
            if op in ONE_CHARACTER:
                required.append(consumable(item, state))

    walk(parsed.data, [], False, True, searching)
    return parts


def checker_regexes() -> list:
    """(pattern, flags, searching, where) of every regex call in the answer checker and the rewards
    of the built-in tasks: re.<function>(pattern, ...) and <compiled pattern>.<function>(...)."""
    namespace, found = vars(trainer), []
    for name in ("boxed_answer", "final_answer", "closing_number", "normalise_answer",
                 "exact_number", "bracket_depth", "split_bracketed", "plain_equal",
                 "math_verify_equal", "math_answer_reward", "addition_task",
                 "last_tagged_answer", "reasoning_gym_task"):
        tree = ast.parse(textwrap.dedent(inspect.getsource(namespace[name])))
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr in SEARCHING | ANCHORED):
                continue
            owner, function = call.func.value, call.func.attr
            searching = function in SEARCHING
            if isinstance(owner, ast.Name) and owner.id == "re":
                pattern = eval(compile(ast.Expression(call.args[0]), name, "eval"), namespace)
                position = (SEARCHING | ANCHORED)[function]
                flags = [eval(compile(ast.Expression(keyword.value), name, "eval"), namespace)
                         for keyword in call.keywords if keyword.arg == "flags"]
                flags += [eval(compile(ast.Expression(argument), name, "eval"), namespace)
                          for argument in call.args[position:position + 1]]
                found.append((pattern, flags[0] if flags else 0, searching, name))
            elif isinstance(owner, ast.Name) and isinstance(namespace.get(owner.id), re.Pattern):
                compiled = namespace[owner.id]
                found.append((compiled.pattern, compiled.flags, searching, f"{name}: {owner.id}"))
    return found


def test_the_analysis_finds_the_regexes_that_made_the_checker_quadratic():
    """The regexes of the checker before it was made linear that took quadratic time, and forms
    that do not, so that the analysis below is known to tell them apart. Possessive quantifiers
    alone do not make a search linear: its attempts must not read the same stretch."""
    ending_before = baseline.ENDS_ON_NUMBER_BEFORE.pattern
    slow = [(ending_before, 0, True, "backtracking"),  # a run of digits, then a word
            (ending_before.replace("+", "++").replace("*", "*+"), 0, True, "attempts"),
            (r"^\s*+####", re.MULTILINE, True, "attempts"),  # blank lines
            (r"\s*+\\?%$", 0, True, "attempts"),  # spaces inside the answer
            (r"\^\s*\{?\s*\\circ\s*\}?", 0, True, "backtracking"),  # ^ and spaces
            (r"[A-Za-z]\s*=\s*([^=]+)", 0, False, "backtracking"),  # x = and spaces before =
            (r"<answer>(.*?)</answer>", re.DOTALL, True, "attempts"),  # <answer> never closed
            (r"(?:\d+,?)+x", 0, False, "backtracking")]  # nested repeats
    linear = [(r",\s++(?=[A-Za-z])", 0, True), (r"(\(|\[)(.*)(\)|\])", 0, False),
              (r"-?\d++", 0, True), (r"\\text\s*+\{([^{}]*+)\}", 0, True),
              (r"^[^\S\n]*+####\s*+", re.MULTILINE, True), (r"\A\s*+x", 0, True),
              (r"^\s*+x", 0, True)]
    for pattern, flags, searching, kind in slow:
        parts = superlinear_parts(pattern, flags, searching)
        assert any(part.startswith(kind) for part in parts), (pattern, parts)
    for pattern, flags, searching in linear:
        assert superlinear_parts(pattern, flags, searching) == [], pattern


def test_no_regex_of_the_checker_takes_more_than_linear_time():
    regexes = checker_regexes()
    compiled = {where.split(": ")[1] for *_, where in regexes if ": " in where}
    assert {"BOX_OPENING", "ANSWER_PHRASE", "AFTER_CLOSING_NUMBER", "DIGITS", "UNIT",
            "SINGLE_CHOICE"} <= compiled
    assert len(regexes) >= 20
    slow = {(pattern, where): superlinear_parts(pattern, flags, searching)
            for pattern, flags, searching, where in regexes}
    assert {key: parts for key, parts in slow.items() if parts} == {}


def random_texts(seed: int, count: int, tokens: list) -> list:
    rng = random.Random(seed)
    return ["".join(rng.choice(tokens) for _ in range(rng.randint(0, 10))) for _ in range(count)]


TOKENS = ["1", "23", "456", "7,890", "0.5", ",", ".", "-", "/", " ", "  ", "\n", "%", "\\%", "$",
          "*", "!", "cm", "x", "'", "The answer is ", "answer: ", "####", "\\boxed{", "}", "{",
          "\\frac", "^\\circ", "^ {\\circ}", "x =", "=", "(B)", "\u2212", "\\text{", "\u0663",
          "\u00a0", "\t"]


def test_the_final_answer_and_its_normal_form_are_the_baselines_on_short_texts():
    texts = random_texts(0, 4000, TOKENS)
    closing = [(trainer.closing_number(text.strip()),
                (match := baseline.ENDS_ON_NUMBER_BEFORE.search(text.strip())) and match.group(1))
               for text in texts]
    assert sum(before is not None for _, before in closing) >= 500  # the rule is exercised
    assert [new for new, _ in closing] == [before for _, before in closing]
    assert ([trainer.final_answer(text) for text in texts]
            == [baseline.final_answer_before(text) for text in texts])
    assert ([trainer.normalise_answer(text) for text in texts]
            == [baseline.normalise_answer_before(text) for text in texts])
    with checker_page.math_verify_hidden():
        for reference in ("42", "5", "0.5", "B"):
            assert ([trainer.math_answer_reward(text, reference) for text in texts]
                    == [baseline.math_answer_reward_before(text, reference, "plain")
                        for text in texts])


def test_the_last_tagged_answer_is_the_last_that_findall_pairs():
    texts = random_texts(1, 4000, ["<answer>", "</answer>", "a", " ", "\n", "<", ">"])
    assert sum("</answer>" in text for text in texts) >= 1000
    assert ([trainer.last_tagged_answer(text) for text in texts]
            == [baseline.last_tagged_answer_before(text) for text in texts])


@pytest.mark.parametrize("path", PATHS)
def test_a_number_of_thousands_of_digits_is_a_wrong_answer_not_an_unknown_reward(path):
    """int() refuses more than 4300 digits (ValueError: an unknown reward, before)."""
    if path == "math-verify":
        pytest.importorskip("math_verify", reason="math-verify is not installed")
    digits = "9" * 5000
    hidden = checker_page.math_verify_hidden() if path == "plain" else contextlib.nullcontext()
    with hidden:
        for completion in (rf"\boxed{{{digits}}}", f"The answer is {digits}.", digits,
                           f"So it is {digits} cm.", "0" * 5000 + "42", f"{digits}/{digits}"):
            assert trainer.math_answer_reward(completion, "42") == 0.0, completion[:20]
            assert trainer.math_answer_reward(completion, "1") == 0.0, completion[:20]
        assert trainer.math_answer_reward(rf"\boxed{{{digits}}}", digits) == 1.0  # its very text


LENGTH = 200_000  # the checker before took hours on the first shapes below at this length


@pytest.mark.parametrize("path", PATHS)
def test_degenerate_completions_of_200k_characters_are_judged(path):
    if path == "math-verify":
        pytest.importorskip("math_verify", reason="math-verify is not installed")
    fill = baseline.fill
    wrong = [make(LENGTH) for make in baseline.SHAPES.values()]
    right = [fill("So the total is ", "7", "", LENGTH) + ". The answer is 42.",
             fill("", "1", " so far", LENGTH) + r". \boxed{42}",
             fill("a", "\n \n", "", LENGTH) + "#### 42",
             fill("so", " ", "far", LENGTH) + " 42",
             fill("", "$", "", LENGTH) + " so the answer is 42.",
             "\\boxed{" * (LENGTH // 7) + "42" + "}" * (LENGTH // 7)]
    hidden = checker_page.math_verify_hidden() if path == "plain" else contextlib.nullcontext()
    with hidden:
        assert [trainer.math_answer_reward(text, "42") for text in wrong] == [0.0] * len(wrong)
        assert [trainer.math_answer_reward(text, "42") for text in right] == [1.0] * len(right)


def test_math_verify_parses_only_short_and_shallow_answers(monkeypatch):
    """Its parser takes seconds on long or deeply nested input; those go to the plain checker."""
    math_verify = pytest.importorskip("math_verify", reason="math-verify is not installed")
    parsed, real = [], math_verify.parse
    monkeypatch.setattr(math_verify, "parse", lambda text: parsed.append(text) or real(text))
    limit, deepest = trainer.LONGEST_PARSED_ANSWER, trainer.DEEPEST_PARSED_ANSWER
    cases = [("x+" * (limit // 2 - 1) + "x", True), ("x+" * (limit // 2) + "x", False),
             ("(" * deepest + "x" + ")" * deepest, True),
             ("(" * (deepest + 1) + "x" + ")" * (deepest + 1), False),
             ("\\sqrt{" * (deepest + 1) + "2" + "}" * (deepest + 1), False)]
    for answer, handed in cases:
        trainer.math_verify_equal.cache_clear()
        parsed.clear()
        trainer.math_verify_equal(answer, "x")
        assert any(answer in text for text in parsed) == handed, answer[:20]
    trainer.math_verify_equal.cache_clear()
    long_sum = "x+" * limit + "x"
    assert trainer.math_verify_equal(long_sum, long_sum)  # the plain checker: the same text
    assert not trainer.math_verify_equal(long_sum, "x")
