"""Open the notebooks in a real JupyterLab in headless Chromium, run them at full size as a student
would, and report what the student meets: each cell's run time and its longest wait without new
output, how much JupyterLab shrinks each figure at a laptop's notebook width, widget labels cut off,
errors, and what went to JupyterLab's log console instead of the notebook.

A manual check (it takes minutes), not part of `make test`; the test suite checks headless what
can be checked without a browser (tests/test_notebooks.py). It drives the system's Chromium through
Playwright as the browser tests do (``ngrpo_sim.pages.browser``; `make test` installs both):

    .venv/bin/python notebooks/check_in_jupyterlab.py                 # every notebook
    .venv/bin/python notebooks/check_in_jupyterlab.py 02 03 --fast    # some, with NGRPO_FAST=1

JupyterLab runs with autosave off and its settings in a temporary folder, so the committed
notebooks stay as they are. Prints one JSON object per notebook.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from ngrpo_sim.pages.browser import chromium

NOTEBOOKS = Path(__file__).resolve().parent
ROOT = NOTEBOOKS.parent
PORT, TOKEN = 8898, "lab-check"
NOTEBOOK_WIDTH = 1000
"""Width of the notebook panel in CSS pixels: a laptop's browser window with JupyterLab's side bars
shut (the window is this plus the two activity bars)."""
LONG_CELL_S = 5.0
"""A cell that runs longer than this is reported with its longest wait without new output."""
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"

# Scripts run in the page. The state of every code cell: its prompt ("[*]:" while it runs) and the
# end of its output, which changes whenever the cell shows progress.
CELL_STATE = f"""() => [...document.querySelectorAll('{PANEL} .jp-CodeCell')].map(cell => {{
  const text = cell.querySelector('.jp-OutputArea')?.innerText ?? '';
  return {{prompt: cell.querySelector('.jp-InputPrompt')?.innerText.trim() ?? '',
           output: text.length + ':' + text.slice(-200)}};
}})"""
# Every figure (inline or in an Image widget): its natural width and the width it is drawn at.
FIGURES = f"""() => [...document.querySelectorAll('{PANEL} .jp-OutputArea img')].map(img => ({{
  natural: img.naturalWidth, shown: Math.round(img.getBoundingClientRect().width),
  cell: [...document.querySelectorAll('{PANEL} .jp-CodeCell')]
        .findIndex(cell => cell.contains(img))}}))"""
CUT_LABELS = f"""() => [...document.querySelectorAll(
  '{PANEL} .widget-label, {PANEL} .jupyter-button')]
  .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.trim())"""
ERRORS = f"""() => [...document.querySelectorAll('{PANEL} .jp-OutputArea-output')]
  .filter(e => e.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr'
               && /Traceback|Error/.test(e.innerText)).map(e => e.innerText.slice(0, 300))"""
OUTPUT_WIDTH = f"""() => Math.round(document.querySelector('{PANEL} .jp-OutputArea-output')
  .getBoundingClientRect().width)"""
LOG_ENTRIES = """() => [...document.querySelectorAll('.jp-LogConsolePanel .jp-OutputArea-child')]
  .map(e => [...e.querySelectorAll('.jp-OutputArea-output')].map(
    o => (o.getAttribute('data-mime-type') ?? '') + (o.querySelector('img') ? ' (a figure)' : '')
         + ' ' + o.innerText.slice(0, 150)).join('; '))"""
IDLE = f"""() => document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator')
  ?.getAttribute('data-status') === 'idle'"""

# What a reader does with each notebook's widgets after running it: drag a slider most of the way
# across, type into a box, pick an option, click a button.
ACTIONS = {
    "01_advantage_landscape": [("drag", "G"), ("drag", "r_max")],
    "02_why_grpo_ignores_failure": [("drag", "p"), ("type", "p =", "0.02"),
                                    ("click", "sample a new group"), ("drag", "G")],
    "03_entropy_dynamics": [("select", "metric", "share_all_wrong"),
                            ("select", "optimizer", "Adam"), ("click", "run")],
    "04_clipping": [("drag", "ε_low"), ("drag", "ε_high")],
    "05_small_llm_run": [("select", "metric", "clipfrac_low")],
}


def api(path: str, method: str = "GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}?token={TOKEN}", method=method)
    return urllib.request.urlopen(request).read()


def wait_for_server() -> None:
    for _ in range(240):
        try:
            api("/api/status")
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("jupyter lab did not start within 2 minutes")


def shut_down_kernels() -> None:
    """Free the memory of the notebooks already checked."""
    for kernel in json.loads(api("/api/kernels")):
        api(f"/api/kernels/{kernel['id']}", method="DELETE")


def lab_settings(folder: Path) -> None:
    """Autosave off (the check must not write outputs into the committed .ipynb), every cell
    rendered (JupyterLab otherwise renders only the cells in view), no pop-ups."""
    settings = {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                        "checkForUpdates": False},
    }
    for name, values in settings.items():
        path = folder / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def menu(page, name: str, item: str) -> None:
    """Choose ``item`` from the menu bar's menu ``name``."""
    page.click(f'.lm-MenuBar-itemLabel:text-is("{name}")', timeout=10_000)
    page.click(f'.lm-Menu-itemLabel:text-is("{item}")', timeout=10_000)


def open_notebook(page, name: str) -> None:
    page.goto(f"http://127.0.0.1:{PORT}/lab/tree/notebooks/{name}.ipynb?token={TOKEN}&reset")
    page.wait_for_selector(f"{PANEL} .jp-CodeCell", timeout=120_000)
    try:  # a fresh JupyterLab asks which kernel to start
        page.click(".jp-Dialog .jp-mod-accept", timeout=15_000)
    except PlaywrightTimeout:
        pass
    # Shut the file browser (a click on the open side-bar tab): the notebook gets the window.
    page.click(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current", timeout=10_000)
    page.wait_for_function(IDLE, timeout=120_000)


def run_all(page, name: str, timeout_s: float) -> dict:
    """Run every cell as "Run All Cells" does; time each cell and its longest wait without new
    output (a progress bar's update counts as output)."""
    menu(page, "Run", "Run All Cells")
    started = time.monotonic()
    done_at: dict[int, float] = {}
    last_change: dict[int, float] = {}
    longest_wait: dict[int, float] = {}
    previous: dict[int, str] = {}
    while time.monotonic() - started < timeout_s:
        cells = page.evaluate(CELL_STATE)
        now = time.monotonic() - started
        for index, cell in enumerate(cells):
            if cell["prompt"] not in ("[*]:", "[ ]:", "") and index not in done_at:
                done_at[index] = now
        running = next((i for i, cell in enumerate(cells) if cell["prompt"] == "[*]:"), None)
        if running is None and done_at and (len(done_at) == len(cells) or page.evaluate(IDLE)):
            break  # every cell ran, or an error stopped "Run All Cells"
        if running is not None:
            if previous.get(running) != cells[running]["output"]:
                previous[running], last_change[running] = cells[running]["output"], now
            began = max([t for index, t in done_at.items() if index < running], default=0.0)
            wait = now - last_change.get(running, began)
            longest_wait[running] = max(longest_wait.get(running, 0.0), wait)
        time.sleep(0.5)
    else:
        raise RuntimeError(f"{name}: not finished after {timeout_s:.0f} s")
    ends = [done_at[index] for index in sorted(done_at)]
    seconds = [end - (ends[index - 1] if index else 0.0) for index, end in enumerate(ends)]
    return {"total_s": round(ends[-1], 1),
            "long_cells": [{"cell": index, "seconds": round(time_s, 1),
                            "longest_wait_without_output_s": round(longest_wait.get(index, 0.0), 1)}
                           for index, time_s in enumerate(seconds) if time_s > LONG_CELL_S]}


def act(page, action: tuple) -> None:
    """Do one reader's action and wait until the kernel is idle again."""
    kind, label, *value = action
    if kind == "drag":
        slider = f'{PANEL} .widget-slider:has(.widget-label:text-is("{label}"))'
        handle = page.locator(f"{slider} .noUi-handle").first
        handle.scroll_into_view_if_needed()
        box = handle.bounding_box()
        track = page.locator(f"{slider} .noUi-target").first.bounding_box()
        middle = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] / 2, middle)
        page.mouse.down()
        page.mouse.move(track["x"] + 0.8 * track["width"], middle, steps=25)
        page.mouse.up()
    elif kind == "type":
        field = f'{PANEL} .widget-text:has(.widget-label:text-is("{label}")) input'
        page.locator(field).first.fill(value[0])
        page.locator(field).first.press("Enter")
    elif kind == "click":
        page.locator(f'{PANEL} button.jupyter-button:text-is("{label}")').first.click()
    elif kind == "select":
        page.locator(f'{PANEL} .widget-dropdown:has(label:text-is("{label}")) select').first \
            .select_option(label=value[0])
    page.wait_for_timeout(1000)
    page.wait_for_function(IDLE, timeout=600_000)


def log_console(page) -> list[str]:
    """What went to JupyterLab's log console: output of widget callbacks that reached no view."""
    menu(page, "View", "Show Log Console")
    page.wait_for_timeout(1500)
    return page.evaluate(LOG_ENTRIES)


def check(page, name: str, timeout_s: float) -> dict:
    print(f"{name}: opening, running all cells", file=sys.stderr, flush=True)
    open_notebook(page, name)
    report = {"notebook": name, **run_all(page, name, timeout_s)}
    page.wait_for_timeout(3000)  # the widgets' first views
    for action in ACTIONS.get(name, []):
        print(f"{name}: {' '.join(action)}", file=sys.stderr, flush=True)
        act(page, action)
    figures = page.evaluate(FIGURES)
    return report | {"output_width": page.evaluate(OUTPUT_WIDTH),
                     "widest_figure": max((figure["natural"] for figure in figures), default=0),
                     "shrunk_figures": [figure for figure in figures
                                        if figure["shown"] < figure["natural"]],
                     "cut_labels": page.evaluate(CUT_LABELS), "errors": page.evaluate(ERRORS),
                     "log_console": log_console(page)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook numbers or names (default: all)")
    parser.add_argument("--fast", action="store_true", help="run with NGRPO_FAST=1")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one notebook may take to run")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the server on the way out
    names = sorted(path.stem for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        names = [name for name in names if any(name.startswith(want) for want in args.notebooks)]
    with tempfile.TemporaryDirectory(prefix="ngrpo_lab_check_") as scratch:
        scratch = Path(scratch)
        lab_settings(scratch / "settings")
        # The kernels import this checkout's ngrpo_sim, whatever the environment has installed.
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, "NGRPO_FAST": "1" if args.fast else "0",
               "JUPYTERLAB_SETTINGS_DIR": str(scratch / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "workspaces")}
        server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser",
                                   "--allow-root", f"--port={PORT}", f"--ServerApp.token={TOKEN}",
                                   f"--ServerApp.root_dir={ROOT}"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_server()
            with chromium() as browser:
                page = browser.new_page(viewport={"width": NOTEBOOK_WIDTH + 2 * 33, "height": 1000})
                for name in names:
                    print(json.dumps(check(page, name, args.timeout), indent=1), flush=True)
                    shut_down_kernels()
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
