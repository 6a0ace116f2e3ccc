"""The teaching notebooks: each runs headless in fast mode without an error, its widgets respond to a change, its
.ipynb holds the same cells as its paired .py, and the committed .ipynb carries no outputs (notebooks/README.md).
"""

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipywidgets")

from ngrpo_sim.teaching import execute_notebook, output_text, widget_outputs  # noqa: E402

NOTEBOOK_FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(path.stem for path in NOTEBOOK_FOLDER.glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT = 180
"""Seconds one cell may take. The slowest fast-mode cell, notebook 5's training, takes about 10 s, and about 40 s
more when it first has to build the trainer's tiny model (cached in ~/.cache/ngrpo afterwards)."""

# What a reader does with a widget, and what must then appear in that widget's output: the callback ran again
# with the new value. Each probe runs in the kernel after the notebook, as a frontend's change would.
PROBES = {
    "01_advantage_landscape": ("group_size_slider.value = 5", "group of G=5 with k right"),
    "02_why_grpo_ignores_failure": ("success_slider.value = 0.5\nsample_button.click()",
                                    "prompt solved with p = 0.500"),
    "03_entropy_dynamics": ("metric_picker.value = 'share_all_wrong'", "share_all_wrong at the last step"),
    "04_clipping": ("clip_high_slider.value = 0.3", "upper bound 1.3"),
    "05_small_llm_run": ("metric_picker.value = 'clipfrac_low'", "clipfrac_low at the last step"),
    "06_token_level": ("metric_picker.value = 'truncation'", "truncation at the last step"),
}


def test_every_notebook_has_a_widget_probe():
    assert NOTEBOOKS == sorted(PROBES)


def cells(notebook) -> list[tuple]:
    return [(cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", ()))) for cell in notebook.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_and_py_hold_the_same_cells(name):
    paired = jupytext.read(NOTEBOOK_FOLDER / f"{name}.py")
    committed = nbformat.read(NOTEBOOK_FOLDER / f"{name}.ipynb", as_version=4)
    assert cells(committed) == cells(paired), f"run `jupytext --sync notebooks/{name}.py`"
    assert committed.metadata["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_tags_one_figure_for_the_readme(name):
    paired = jupytext.read(NOTEBOOK_FOLDER / f"{name}.py")
    tagged = [cell for cell in paired.cells if "readme-figure" in cell.metadata.get("tags", ())]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "notebooks/make_readme_figures.py needs one"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_ipynb_carry_no_outputs(name):
    committed = nbformat.read(NOTEBOOK_FOLDER / f"{name}.ipynb", as_version=4)
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name}.ipynb holds outputs; clear them (notebooks/README.md)")
    assert "widgets" not in committed.metadata, f"{name}.ipynb holds saved widget state; clear it"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_fast_mode_and_its_widgets_respond(name):
    probe, expected = PROBES[name]
    # Raises on an error in any cell, or in any widget callback.
    notebook = execute_notebook(NOTEBOOK_FOLDER / f"{name}.py", fast=True, timeout=CELL_TIMEOUT, extra_cells=[probe])
    assert any(expected in output_text(output) for output in widget_outputs(notebook)), (
        f"after `{probe}` no widget output contains {expected!r}")


def write_notebook(folder: Path, *cells: str) -> Path:
    source = folder / "lesson.py"
    source.write_text("".join(f"# %%\n{cell}\n\n" for cell in cells))
    return source


def test_a_failing_cell_or_widget_callback_fails_the_run(tmp_path):
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="ZeroDivisionError"):
        execute_notebook(write_notebook(tmp_path, "import os", "1 / 0"), fast=True, timeout=60)
    widget = write_notebook(tmp_path, "import ipywidgets as widgets\nfrom IPython.display import display",
                            "slider = widgets.IntSlider()\ndisplay(widgets.interactive_output("
                            "lambda value: print(1 / value), {'value': slider}))")
    with pytest.raises(RuntimeError, match="a widget callback of lesson.py failed:(.|\n)*ZeroDivisionError"):
        execute_notebook(widget, fast=True, timeout=60)
    fast = execute_notebook(write_notebook(tmp_path, "import os\nprint(os.environ['NGRPO_FAST'])"), fast=True,
                            timeout=60)
    assert fast.cells[0].outputs[0]["text"] == "1\n"
