"""Every link of the README and the docs to a file of the project reaches it, and every anchor a
heading of that file (GitHub's rule for a heading's anchor: lower case, punctuation dropped,
spaces as hyphens)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# docs/report/report.md is the report exactly as `make demo` writes it: its links lead to the
# figures beside it in runs/report, which are not committed.
PAGES = [ROOT / "README.md", *sorted(set((ROOT / "docs").rglob("*.md"))
                                     - {ROOT / "docs" / "report" / "report.md"}),
         *sorted((ROOT / "benchmarks").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_anchor_rule_by_hand():
    assert anchor(" What the clip does to entropy") == "what-the-clip-does-to-entropy"
    assert anchor(" NGRPO against GRPO, DAPO and PSR-NSR") == "ngrpo-against-grpo-dapo-and-psr-nsr"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_to_a_file_of_the_project_reaches_it(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto: (outside the project)
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no heading #{fragment})")
    assert not broken, broken
