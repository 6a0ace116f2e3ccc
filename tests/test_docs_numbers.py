"""No result in the README or a findings page is typed by hand: every measured number there is
one that a committed output of the project's own scripts holds, at the precision the page shows.

The outputs: `docs/report/` (what `make demo` writes: `report.md` and the landscape's CSV files,
copied by `docs/report/README.md`'s command), `docs/minimal/comparison.md` (`minimal/compare.py`),
`docs/release/*.md` and `*.json` (the scripts beside them), `docs/gpu_check/**/*.json` (the GPU
check) and `docs/lengths/` (the long-answer study). A value with its interval, "a ± b", must
appear as such a pair; any other number with two or more decimals must appear as a value. Numbers
that are settings rather than results (clip bounds, versions, an arXiv identifier) are named in
``SETTINGS`` or stand after a word of ``NOT_RESULTS``.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *(ROOT / "docs" / name for name in (
    "landscape.md", "claims.md", "tokens.md", "rivals.md", "lengths.md"))]
SOURCES = ["docs/report/**/*.md", "docs/report/**/*.csv", "docs/minimal/comparison.md",
           "docs/release/*.md", "docs/release/*.json", "docs/gpu_check/**/*.json",
           "docs/lengths/**/*.md", "docs/lengths/**/*.json"]
NUMBER = r"[+\-−]?\d+\.\d+"
PAIR = re.compile(rf"({NUMBER}) ± ({NUMBER})")
SETTINGS = {"0.16", "0.24", "0.28", "0.2", "0.05", "0.01", "0.99", "0.5", "0.1", "0.4", "0.6",
            "0.95", "0.001", "0.02", "1.0", "1.5", "2.0", "3.0", "0.25"}
NOT_RESULTS = re.compile(r"(arXiv|PyTorch|torch|TRL|verl|Python|transformers|accelerate|lr|"
                         r"rate|CUDA|version|v)\s*[≥=]?\s*$", re.I)


def value(text: str) -> float:
    return float(text.replace("−", "-"))


def decimals(text: str) -> int:
    return len(text.split(".")[1])


def source_numbers() -> tuple[list[float], list[tuple[float, float]]]:
    values, pairs = [], []
    for pattern in SOURCES:
        for path in ROOT.glob(pattern):
            text = path.read_text()
            if path.suffix == ".json":
                def walk(node):
                    if isinstance(node, dict):
                        for item in node.values():
                            walk(item)
                    elif isinstance(node, list):
                        for item in node:
                            walk(item)
                    elif isinstance(node, (int, float)) and not isinstance(node, bool):
                        values.append(float(node))
                walk(json.loads(text))
                # mean and half-width stored side by side, as the scripts write them
                pairs += [(value(a), value(b)) for a, b in re.findall(
                    r'"mean": (-?[\d.e+-]+), "half_width": (-?[\d.e+-]+)', text)]
            else:
                values += [value(number) for number in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?",
                                                                  text)]
                pairs += [(value(a), value(b)) for a, b in PAIR.findall(text)]
    return values, pairs


def matches(shown: str, candidates) -> bool:
    target, places = value(shown), decimals(shown)
    return any(round(candidate, places) == round(target, places) or
               round(abs(candidate), places) == round(abs(target), places)
               and shown.startswith(("−", "-")) == (candidate < 0) for candidate in candidates)


def prose(page: Path) -> str:
    """The page without code blocks, inline code and link targets (paths, not results)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


@pytest.fixture(scope="module")
def sources():
    return source_numbers()


@pytest.mark.parametrize("page", [page for page in PAGES if page.exists()],
                         ids=lambda page: str(page.relative_to(ROOT)))
def test_every_number_shown_comes_from_a_committed_output(page, sources):
    values, pairs = sources
    text = prose(page)
    missing = []
    for match in PAIR.finditer(text):
        mean, half = match.groups()
        if not any(matches(mean, [a]) and matches(half, [b]) for a, b in pairs):
            missing.append(match.group(0))
    for match in re.finditer(rf"(?<![\w.]){NUMBER}(?![\w.])", PAIR.sub(" ", text)):
        shown = match.group(0)
        before = text[max(0, match.start() - 20):match.start()]
        if decimals(shown) < 2 or shown.lstrip("+-−") in SETTINGS or NOT_RESULTS.search(before):
            continue
        if not matches(shown, values):
            missing.append(shown)
    assert missing == []


def test_the_check_finds_a_number_typed_by_hand(tmp_path, sources):
    page = tmp_path / "page.md"
    page.write_text("NGRPO − GRPO: −0.059 ± 0.008 nats; c = 2.08; typed: 0.1234 and 1.5 ± 0.7.\n")
    values, pairs = sources
    text = prose(page)
    found = [m.group(0) for m in PAIR.finditer(text)
             if not any(matches(m.group(1), [a]) and matches(m.group(2), [b]) for a, b in pairs)]
    assert found == ["1.5 ± 0.7"]
    assert matches("2.08", values) and not matches("0.1234", values)
