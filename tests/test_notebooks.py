"""The teaching notebooks: each runs headless in fast mode without an error, its widgets respond to
a change, its .ipynb holds the same cells as its paired .py, and the committed .ipynb carries no
outputs (notebooks/README.md).
"""

import base64
import html
import io
import tempfile
from pathlib import Path

import pytest
from PIL import Image

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipywidgets")

from ngrpo_sim.teaching.notebook_runner import (WIDGET_STATE, execute_notebook,  # noqa: E402
                                                output_text, widget_outputs)

NOTEBOOK_FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(path.stem for path in NOTEBOOK_FOLDER.glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT = 180
"""Seconds one cell may take. The slowest fast-mode cell, notebook 5's training, takes about 10 s,
and about 40 s more when it first has to build the trainer's tiny model (cached in ~/.cache/ngrpo
afterwards)."""
OUTPUT_WIDTH_PX = 886
"""Width of a notebook's output area in JupyterLab 4.6 with its side bars shut in a 1066-px browser
window (the notebook panel is 990 px wide), measured with notebooks/check_in_jupyterlab.py.
JupyterLab shrinks a wider figure to fit, and its text with it."""

# What a reader does with the widgets, and what must then be shown. Each probe runs in the kernel
# after the notebook, as a frontend's change would, and prints what the changed view shows (a live
# view keeps only its last state), or a check of its own.
PROBES = {
    "01_advantage_landscape": [("group_size_slider.value = 5\nprint(landscape_view.shown_text)",
                                "group of G=5 with k correct"),
                               ("method_picker.value = ()\nprint(landscape_view.shown_text)",
                                "Pick at least one method")],
    "02_why_grpo_ignores_failure": [
        ("success_slider.value = 0.5\nsample_button.click()\nprint(group_view.shown_text)",
         "prompt solved with p = 0.500"),
        # Dragging p back to where it was shows the group it showed there: the draw depends on the
        # settings.
        ("success_slider.value = 0.3\nshown = group_view.shown_text\n"
         "success_slider.value = 0.6\nsuccess_slider.value = 0.3\n"
         "print('same group for the same p:', group_view.shown_text == shown)",
         "same group for the same p: True"),
        ("success_box.value = 0.02\nprint(group_view.shown_text)",
         "prompt solved with p = 0.020")],
    "03_entropy_dynamics": [
        ("metric_picker.value = 'share_all_wrong'\nprint(metric_view.shown_text)",
         "share_all_wrong at the last step"),
        # SGD's learning rate of 32 must not stay when the optimiser becomes Adam.
        ("optimizer_picker.value = 'adam'\n"
         "print('learning rate with Adam:', learning_rate_box.value)",
         "learning rate with Adam: 0.05"),
        ("learning_rate_box.value = 32.0\nrun_button.click()\nprint(own_view.shown_text)",
         "learning rate 32 is 640 times the README's 0.05")],
    "04_clipping": [("clip_high_slider.value = 0.3\nprint(plane_view.shown_text)",
                     "upper bound 1.3")],
    "05_small_llm_run": [("metric_picker.value = 'clipfrac_low'\nprint(metric_view.shown_text)",
                          "clipfrac_low at the last step")],
    "06_token_level": [("metric_picker.value = 'truncation'\nprint(metric_view.shown_text)",
                        "truncation at the last step")],
    "07_answer_length": [
        ("run_picker.value = 'grpo, seq-mean-token-mean'\nstep_slider.value = EVERY\n"
         "print(distribution_view.shown_text)", "mean length of correct answers"),
        ("metric_picker.value = 'truncation'\nprint(metric_view.shown_text)",
         "truncation at the last step")],
}


def test_every_notebook_has_a_widget_probe():
    assert NOTEBOOKS == sorted(PROBES)


def cells(notebook) -> list[tuple]:
    return [(cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", ())))
            for cell in notebook.cells]


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
    assert len(tagged) == 1 and tagged[0].cell_type == "code", (
        "notebooks/make_readme_figures.py needs one")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_ipynb_carry_no_outputs(name):
    committed = nbformat.read(NOTEBOOK_FOLDER / f"{name}.ipynb", as_version=4)
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name}.ipynb holds outputs; clear them (notebooks/README.md)")
    assert "widgets" not in committed.metadata, f"{name}.ipynb holds saved widget state; clear it"


@pytest.fixture(scope="module", params=NOTEBOOKS)
def executed(request):
    """(name, notebook) after a fast-mode run followed by the notebook's probes; each notebook
    runs once for all the tests below. Raises on an error in any cell, or in any widget
    callback."""
    name = request.param
    probes = [code for code, _ in PROBES[name]]
    return name, execute_notebook(NOTEBOOK_FOLDER / f"{name}.py", fast=True,
                                  timeout=CELL_TIMEOUT, extra_cells=probes)


def widget_models(notebook, model_name: str) -> list[dict]:
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return [model for model in state.values() if model["model_name"] == model_name]


def all_outputs(notebook) -> list[dict]:
    """The outputs of every code cell and of every Output widget."""
    cell_outputs = [output for cell in notebook.cells if cell.cell_type == "code"
                    for output in cell.outputs]
    return cell_outputs + widget_outputs(notebook)


def shown_texts(notebook) -> list[str]:
    """Everything a reader can read: cell outputs, Output widgets, and HTML widgets (the notebooks'
    live views)."""
    texts = [output_text(output) for output in all_outputs(notebook)]
    return texts + [html.unescape(model["state"].get("value", ""))
                    for model in widget_models(notebook, "HTMLModel")]


def shown_figures(notebook) -> list[bytes]:
    """Every PNG a reader sees: in cell outputs, in Output widgets and in Image widgets."""
    figures = [base64.b64decode(output["data"]["image/png"]) for output in all_outputs(notebook)
               if "image/png" in output.get("data", {})]
    return figures + [base64.b64decode(buffer["data"])
                      for model in widget_models(notebook, "ImageModel")
                      for buffer in model.get("buffers", [])
                      if buffer["path"] == ["value"] and buffer["data"]]


def test_notebook_runs_in_fast_mode_and_its_widgets_respond(executed):
    name, notebook = executed
    probe_cells = notebook.cells[-len(PROBES[name]):]
    for (probe, expected), cell in zip(PROBES[name], probe_cells):
        printed = "".join(output_text(output) for output in cell.outputs)
        assert expected in printed, f"after `{probe}` it shows {printed!r}, not {expected!r}"


def test_figures_fit_a_laptop_notebook_without_shrinking(executed):
    name, notebook = executed
    figures = shown_figures(notebook)
    assert figures, f"{name} showed no figure"
    for figure in figures:
        width, _ = Image.open(io.BytesIO(figure)).size
        assert width <= OUTPUT_WIDTH_PX, f"{name}: a figure {width} px wide would be shrunk"


def test_widget_callbacks_draw_figures_into_widget_state(executed):
    # A figure that a callback shows through an Output widget can land in JupyterLab's log console
    # instead of the notebook (notebooks/check_in_jupyterlab.py saw it happen); a live view's Image
    # widget cannot.
    name, notebook = executed
    images = [output for output in widget_outputs(notebook)
              if "image/png" in output.get("data", {})]
    assert not images, name


def test_no_path_of_the_readers_machine_is_shown(executed):
    name, notebook = executed
    private = [str(NOTEBOOK_FOLDER.parent), str(Path.home()) + "/",
               tempfile.gettempdir() + "/"]
    for text in shown_texts(notebook):
        for path in private:
            assert path not in text, f"{name} shows {path!r}: {text[:300]!r}"


def test_button_labels_fit(executed):
    # ipywidgets gives a button a fixed width that cuts a longer label; the notebooks size their
    # buttons to their labels.
    name, notebook = executed
    state = notebook.metadata["widgets"][WIDGET_STATE]["state"]
    layouts = {f"IPY_MODEL_{model_id}": model["state"] for model_id, model in state.items()
               if model["model_name"] == "LayoutModel"}
    for button in widget_models(notebook, "ButtonModel"):
        width = layouts[button["state"]["layout"]].get("width")
        assert width == "auto", (name, button["state"]["description"])


def test_the_training_cell_shows_the_trainers_progress(executed):
    name, notebook = executed
    if name != "05_small_llm_run":
        pytest.skip("only notebook 5 trains a model")
    training = next(cell for cell in notebook.cells if "teaching.run_trainer(" in cell.source)
    printed = "".join(output.get("text", "") for output in training.outputs
                      if output["output_type"] == "stream")
    # The trainer's own tqdm bars and final lines, passed on while it ran, not one line and then
    # silence.
    for expected in ("ngrpo seed 1:", "grpo seed 1:", "8/8 [", "held-out pass@1"):
        assert expected in printed, f"{expected!r} missing from the training cell's output"


def write_notebook(folder: Path, *cells: str) -> Path:
    source = folder / "lesson.py"
    source.write_text("".join(f"# %%\n{cell}\n\n" for cell in cells))
    return source


def test_a_failing_cell_or_widget_callback_fails_the_run(tmp_path):
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="ZeroDivisionError"):
        execute_notebook(write_notebook(tmp_path, "import os", "1 / 0"), fast=True, timeout=60)
    widget = write_notebook(tmp_path,
                            "import ipywidgets as widgets\nfrom IPython.display import display",
                            "slider = widgets.IntSlider()\ndisplay(widgets.interactive_output("
                            "lambda value: print(1 / value), {'value': slider}))")
    with pytest.raises(RuntimeError,
                       match="a widget callback of lesson.py failed:(.|\n)*ZeroDivisionError"):
        execute_notebook(widget, fast=True, timeout=60)
    fast = execute_notebook(write_notebook(tmp_path, "import os\nprint(os.environ['NGRPO_FAST'])"),
                            fast=True, timeout=60)
    assert fast.cells[0].outputs[0]["text"] == "1\n"
