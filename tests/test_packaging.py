"""The project's set-up files agree with each other."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    in_pyproject = {requirement_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        in_pyproject |= {requirement_name(r) for r in extra}
    dependencies = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    entries = re.findall(r"^\s*-\s+(\S+)", dependencies, flags=re.MULTILINE)
    in_environment = {requirement_name(e) for e in entries if not e.startswith(("-e", "pip:"))}
    in_environment -= {"python", "pip"}
    assert in_environment == in_pyproject


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
