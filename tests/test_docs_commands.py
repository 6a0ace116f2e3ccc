"""Every command the README and the docs show runs as typed after `make test`: it names an
interpreter or entry point that exists, a script that exists, and options its parser accepts.

Commands are the lines of ```bash blocks and the inline code spans that start like a command
(`.venv/bin/...`, `make ...`, `python ...`). A bare `python` or `ngrpo-sim` is refused: a new
user's shell finds neither with this project's packages. Two kinds of command run elsewhere and
say so by their interpreter: `python3 benchmarks/gpu_check.py` (the GPU machine, which has no
.venv) and `<env>/bin/...` of an environment the same page creates (`python3 -m venv <env>`).
"""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "DEVELOPERS.md", ROOT / "notebooks" / "README.md",
                ROOT / "benchmarks" / "README.md", *(ROOT / "docs").rglob("*.md")])
COMMAND_START = re.compile(r"^(\.venv/bin/|make |python3? |ngrpo-sim |[\w.-]+/bin/)")
ELSEWHERE = {("python3", "benchmarks/gpu_check.py")}
SHELL = {"cd", "cp", "mkdir", "ls", "git", "cat"}
"""The shell's own tools, which every machine has."""


def commands(page: Path) -> list[str]:
    text = page.read_text()
    found = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                found += [part.strip() for part in line.split("&&")]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    # In prose, `ngrpo-sim report` names a command; with an option or a path it is one to type.
    found += [span for span in re.findall(r"`([^`\n]+)`", prose)
              if COMMAND_START.match(span)
              and (span.startswith(("make ", ".venv/")) or re.search(r" (--|\S*[/.])", span))]
    return found


def created_environments(page: Path) -> set[str]:
    return set(re.findall(r"python3 -m venv (\S+)", page.read_text()))


def make_targets() -> set[str]:
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M)
    return set(phony.group(1).split())


def check(command: str, page: Path) -> str | None:
    """Why ``command`` would not run as typed, or None."""
    words = shlex.split(command.replace("$OUT", "OUT").replace("...", "ELLIPSIS"))
    first, rest = words[0], words[1:]
    if first in SHELL:
        return None
    if first == "make":
        return None if rest and rest[0] in make_targets() else f"no make target {rest[:1]}"
    if first in ("python", "ngrpo-sim", "pip"):
        return f"a bare {first} is not this project's: use .venv/bin/{first}"
    if first == "python3":
        if (first, rest[0] if rest else "") in ELSEWHERE or rest[:1] == ["-m"] and \
                rest[1:2] == ["venv"]:
            return None
        return "python3 is the system's: use .venv/bin/python"
    environment, _, tool = first.rpartition("/bin/")
    if not tool:
        return f"{first} is not an interpreter or entry point of an environment"
    if environment != ".venv":
        return None if environment in created_environments(page) else \
            f"{environment} is not made on this page (python3 -m venv {environment})"
    if not (ROOT / first).exists():
        return f"{first} does not exist after make test"
    if tool == "ngrpo-sim" and "ELLIPSIS" not in rest:
        from ngrpo_sim.cli import build_parser
        try:
            build_parser().parse_args(rest)
        except SystemExit as done:  # --help exits 0 after printing
            return None if done.code == 0 else "ngrpo-sim refuses these options"
    if tool == "python" and rest and rest[0].endswith(".py"):
        defined_here = f"# {rest[0]}:" in page.read_text()  # a script the page writes out
        if not (ROOT / rest[0]).is_file() and not defined_here:
            return f"no script {rest[0]}"
        return parse_script(rest[0], rest[1:])
    return None


def parse_script(script: str, arguments: list[str]) -> str | None:
    """The trainer's and compare.py's own parsers accept the options (nothing runs)."""
    if script not in ("minimal/ngrpo_train.py", "minimal/compare.py") or "ELLIPSIS" in arguments:
        return None
    pytest.importorskip("torch")
    from test_minimal_trainer import compare, trainer

    parse = trainer.parse_config if script.endswith("ngrpo_train.py") else compare.parse_comparison
    try:
        parse(arguments)
    except SystemExit:
        return f"{script} refuses these options"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_command_shown_runs_as_typed(page, monkeypatch):
    monkeypatch.chdir(ROOT)
    problems = [f"{command!r}: {why}" for command in commands(page)
                if (why := check(command, page)) is not None]
    assert problems == []


def test_the_check_refuses_what_would_not_run(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\npython minimal/ngrpo_train.py\n.venv/bin/python no_such.py\n"
                    "make nothing\n.venv/bin/ngrpo-sim dynamics --no-such-flag\n"
                    "env2/bin/python x.py\n```\nThen `ngrpo-sim report --workers 2`, `make demo`;\n"
                    "`ngrpo-sim report` names a command.\n")
    found = commands(page)
    assert found == ["python minimal/ngrpo_train.py", ".venv/bin/python no_such.py",
                     "make nothing", ".venv/bin/ngrpo-sim dynamics --no-such-flag",
                     "env2/bin/python x.py", "ngrpo-sim report --workers 2", "make demo"]
    assert [check(command, page) is None for command in found] == [False] * 6 + [True]
