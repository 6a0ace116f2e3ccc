"""The package's shape, read from its own imports with ``ast``: one layer per subpackage, each
importing only from the layers below it, and no import cycle between modules.

The order below is the one the subpackages' docstrings state; the root modules (the command line
and the public API in ``ngrpo_sim/__init__.py``) stand above every layer.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ngrpo_sim"
LAYERS = ("base", "methods", "analysis", "simulators", "experiments", "pages", "reports",
          "teaching", "integrations")
ROOT_LAYER = len(LAYERS)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], package: str) -> set[str]:
    """Every ngrpo_sim module the file at ``path``, of ``package``, imports, at any depth of the
    file (imports inside functions count: they are how a cycle hides; those under ``if
    TYPE_CHECKING:`` do not, as they never run)."""
    found = set()
    tree = ast.parse(path.read_text())
    # Imports under `if TYPE_CHECKING:` name a type for annotations and never run.
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
                   for inner in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # `from ngrpo_sim.x import y`: y is a module when ngrpo_sim.x.y is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "ngrpo_sim")
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths), name if path.name == "__init__.py"
                                   else name.rpartition(".")[0]) - {name}
            for name, path in paths.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else ROOT_LAYER


def test_every_subpackage_is_a_layer_and_says_what_it_may_import():
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(LAYERS)
    for name in LAYERS:
        docstring = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert docstring and "Imports " in docstring, f"ngrpo_sim/{name}/__init__.py"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{module} ({LAYERS[layer(module)]}) imports {target}"
            for module, targets in graph.items() if layer(module) < ROOT_LAYER
            for target in sorted(targets)
            if target == "ngrpo_sim" or layer(target) > layer(module)]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, cycles = {}, []

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"
    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_module_imports_from_a_layer_above_its_own():
    """Nor the public API at the root: ``from ngrpo_sim import X`` inside a layer would run the
    root's imports of every layer."""
    assert upward_imports(import_graph()) == []


def test_the_modules_import_no_cycle():
    assert import_cycles(import_graph()) == []


def test_the_checks_see_what_they_look_for(tmp_path):
    """A planted upward import, an import of the root and a cycle are each reported."""
    planted = tmp_path / "planted.py"
    planted.write_text("from typing import TYPE_CHECKING\n"
                       "from ngrpo_sim.reports.report import HEADLINE\n"
                       "if TYPE_CHECKING:\n    from ngrpo_sim.teaching import notebook\n"
                       "def later():\n    from ngrpo_sim import get_method\n")
    modules = {"ngrpo_sim.reports.report"}
    found = imported_modules(planted, modules, package="ngrpo_sim.simulators")
    assert found == {"ngrpo_sim.reports.report", "ngrpo_sim"}
    assert len(upward_imports({"ngrpo_sim.simulators.planted": found})) == 2
    assert import_cycles({"ngrpo_sim.a": {"ngrpo_sim.b"}, "ngrpo_sim.b": {"ngrpo_sim.a"}}) \
        == [["ngrpo_sim.a", "ngrpo_sim.b", "ngrpo_sim.a"]]


def test_the_public_api_is_importable_from_the_root():
    import ngrpo_sim

    for name in ngrpo_sim.__all__:
        assert getattr(ngrpo_sim, name) is not None, name
    assert ngrpo_sim.simulate.__module__ == "ngrpo_sim.simulators.training_loop"


def test_an_engine_plugin_loads_no_simulator():
    """verl and TRL import ``ngrpo_sim.integrations``; the simulators stay out of their
    processes."""
    import subprocess
    import sys

    script = ("import sys, ngrpo_sim.methods.groups; "
              "print(sorted(m for m in sys.modules if m.startswith('ngrpo_sim.')))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True).stdout
    assert "ngrpo_sim.methods.presets" in loaded
    assert not any(layer in loaded for layer in ("simulators", "experiments", "reports"))
