"""Open the notebooks in a real JupyterLab in headless Chromium, run them at full size as a student would, and report
what the student meets: each cell's run time and the longest wait without new output, how much JupyterLab shrinks
each figure at a laptop's notebook width, widget labels cut off, errors, and messages that went to JupyterLab's log
console instead of the notebook.

A manual check (it takes minutes and needs a browser), not part of `make test`; the test suite checks headless what
can be checked without one (tests/test_notebooks.py). It needs Debian's Chromium and Playwright's Python package
(`pip install -e ".[browser]"`; Playwright drives /usr/bin/chromium, it downloads no browser of its own):

    apt-get install -y chromium
    .venv/bin/python notebooks/check_in_jupyterlab.py                    # every notebook
    .venv/bin/python notebooks/check_in_jupyterlab.py 02 03 --fast       # some notebooks, NGRPO_FAST=1

JupyterLab runs with autosave off and settings in a temporary folder, so the committed notebooks stay untouched.
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
from playwright.sync_api import sync_playwright

NOTEBOOKS = Path(__file__).resolve().parent
ROOT = NOTEBOOKS.parent
PORT, TOKEN = 8898, "lab-check"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOK_WIDTH = 1000
"""Target width of the notebook panel in CSS pixels: a laptop's browser window with JupyterLab's side bars shut."""
LONG_CELL_S = 5.0

# Runs in the page: the state of every code cell of the open notebook.
CELL_STATE = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')].map(
  cell => ({prompt: cell.querySelector('.jp-InputPrompt')?.innerText.trim() ?? '',
            output: (cell.querySelector('.jp-OutputArea')?.innerText ?? '').length + ':' +
                    (cell.querySelector('.jp-OutputArea')?.innerText ?? '').slice(-200)}))"""
# Every figure: its natural width and the width JupyterLab draws it at.
FIGURES = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea img')].map(
  (img, i) => ({natural: img.naturalWidth, shown: Math.round(img.getBoundingClientRect().width),
                cell: [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')]
                      .findIndex(c => c.contains(img))}))"""
# Widget labels and buttons whose text does not fit their box.
CUT_LABELS = """() => [...document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .widget-label, .jp-NotebookPanel:not(.lm-mod-hidden) .jupyter-button')]
  .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.trim())"""
ERRORS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')]
  .filter(e => e.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr' &&
               /Traceback|Error/.test(e.innerText)).map(e => e.innerText.slice(0, 300))"""
OUTPUT_WIDTH = """() => Math.round(document.querySelector(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output').getBoundingClientRect().width)"""
LOG_ENTRIES = """() => [...document.querySelectorAll('.jp-LogConsolePanel .jp-OutputArea-child')].map(
  e => [...e.querySelectorAll('.jp-OutputArea-output')].map(
    o => (o.getAttribute('data-mime-type') ?? '') + (o.querySelector('img') ? ' (a figure)' : '') + ' ' +
         o.innerText.slice(0, 150)).join('; '))"""


def wait_for_server() -> None:
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/status?token={TOKEN}")
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("jupyter lab did not start within 2 minutes")


def shut_down_kernels() -> None:
    """Free the memory of the notebooks already checked."""
    for kernel in json.loads(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/kernels?token={TOKEN}").read()):
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{PORT}/api/kernels/{kernel['id']}?token={TOKEN}", method="DELETE"))


def lab_settings(folder: Path) -> None:
    """Autosave off (the check must not write outputs into the committed .ipynb), every cell rendered, no pop-ups."""
    settings = {"@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
                # Render every cell, not only those in view, so that every cell and figure can be measured.
                "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
                    "fetchNews": "false", "checkForUpdates": False}}
    for name, values in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def menu(page, name: str, item: str) -> None:
    """Choose ``item`` from the menu bar's menu ``name``."""
    page.click(f'.lm-MenuBar-itemLabel:text-is("{name}")', timeout=10_000)
    page.click(f'.lm-Menu-itemLabel:text-is("{item}")', timeout=10_000)


def run_notebook(page, name: str, timeout_s: float) -> dict:
    """Open ``name``, run all its cells, and measure what a reader meets."""
    page.goto(f"http://127.0.0.1:{PORT}/lab/tree/notebooks/{name}.ipynb?token={TOKEN}&reset")
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=120_000)
    try:  # a fresh JupyterLab asks which kernel to start
        page.click(".jp-Dialog .jp-mod-accept", timeout=15_000)
    except PlaywrightTimeout:
        pass
    # Shut the file browser (a click on the open side-bar tab): the notebook gets the window's width.
    page.click(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current", timeout=10_000)
    page.wait_for_function("""() => document.querySelector(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator')?.getAttribute('data-status')
        === 'idle'""", timeout=120_000)
    menu(page, "Run", "Run All Cells")
    started = time.monotonic()
    done_at: dict[int, float] = {}
    last_change: dict[int, float] = {}
    longest_silence: dict[int, float] = {}
    previous: dict[int, str] = {}
    while time.monotonic() - started < timeout_s:
        cells = page.evaluate(CELL_STATE)
        now = time.monotonic() - started
        running = next((i for i, c in enumerate(cells) if c["prompt"] == "[*]:"), None)
        for i, cell in enumerate(cells):
            if cell["prompt"] not in ("[*]:", "[ ]:", "") and i not in done_at:
                done_at[i] = now
        if running is not None:
            if previous.get(running) != cells[running]["output"]:
                previous[running], last_change[running] = cells[running]["output"], now
            start = max([t for j, t in done_at.items() if j < running], default=0.0)
            silence = now - last_change.get(running, start)
            longest_silence[running] = max(longest_silence.get(running, 0.0), silence)
        elif len(done_at) == len(cells):
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"{name}: not finished after {timeout_s:.0f} s")
    total = time.monotonic() - started
    page.wait_for_timeout(3000)  # let the widgets' last views render
    ends = [done_at[i] for i in range(len(done_at))]
    cell_times = [end - (ends[i - 1] if i else 0.0) for i, end in enumerate(ends)]
    return {"notebook": name, "total_s": round(total, 1), "output_width": page.evaluate(OUTPUT_WIDTH),
            "long_cells": [{"cell": i, "seconds": round(t, 1), "longest_wait_without_output_s":
                            round(longest_silence.get(i, 0.0), 1)} for i, t in enumerate(cell_times)
                           if t > LONG_CELL_S],
            "figures": page.evaluate(FIGURES), "cut_labels": page.evaluate(CUT_LABELS),
            "errors": page.evaluate(ERRORS)}


# What a reader does with each notebook's widgets after running it: drag a slider across (every value on the way
# reaches the kernel unless the slider waits for the release), pick an option, click a button.
ACTIONS = {
    "01_advantage_landscape": [("drag", "G"), ("drag", "r_max")],
    "02_why_grpo_ignores_failure": [("drag", "p"), ("click", "sample a new group"), ("drag", "G")],
    "03_entropy_dynamics": [("select", "metric", "share_all_wrong"), ("select", "optimizer", "Adam"),
                            ("click", "run")],
    "04_clipping": [("drag", "ε_low"), ("drag", "ε_high")],
    "05_small_llm_run": [("select", "metric", "clipfrac_low")],
}


def act(page, action: tuple) -> None:
    """Do one reader's action and wait until the kernel is idle again."""
    kind, label, *value = action
    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    if kind == "drag":
        handle = page.locator(f'{panel} .widget-slider:has(.widget-label:text-is("{label}")) .noUi-handle').first
        handle.scroll_into_view_if_needed()
        box = handle.bounding_box()
        track = page.locator(f'{panel} .widget-slider:has(.widget-label:text-is("{label}")) .noUi-target').first
        track_box = track.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(track_box["x"] + 0.8 * track_box["width"], box["y"] + box["height"] / 2, steps=25)
        page.mouse.up()
    elif kind == "click":
        page.locator(f'{panel} button.jupyter-button:text-is("{label}")').first.click()
    elif kind == "select":
        page.locator(f'{panel} .widget-dropdown:has(label:text-is("{label}")) select').first.select_option(
            label=value[0])
    page.wait_for_timeout(1000)
    page.wait_for_function(f"""() => document.querySelector('{panel} .jp-Notebook-ExecutionIndicator')
        ?.getAttribute('data-status') === 'idle'""", timeout=600_000)


def log_console(page) -> list[str]:
    """What went to JupyterLab's log console (output of widget callbacks that no Output widget caught)."""
    menu(page, "View", "Show Log Console")
    page.wait_for_timeout(1500)
    return page.evaluate(LOG_ENTRIES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook numbers or names (default: all)")
    parser.add_argument("--fast", action="store_true", help="run with NGRPO_FAST=1")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one notebook may take")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the server on the way out
    names = sorted(path.stem for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        names = [n for n in names if any(n.startswith(wanted) for wanted in args.notebooks)]
    with tempfile.TemporaryDirectory(prefix="ngrpo_lab_check_") as scratch:
        scratch = Path(scratch)
        lab_settings(scratch / "settings")
        env = {**os.environ, "NGRPO_FAST": "1" if args.fast else "0",
               "JUPYTERLAB_SETTINGS_DIR": str(scratch / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "workspaces")}
        server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
                                   f"--port={PORT}", f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={ROOT}"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_server()
            with sync_playwright() as playwright:
                # Side bars shut, the notebook panel is the window's width less JupyterLab's two activity bars.
                browser = playwright.chromium.launch_persistent_context(
                    str(scratch / "chromium"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
                    viewport={"width": NOTEBOOK_WIDTH + 2 * 33, "height": 1000})
                page = browser.new_page()
                for name in names:
                    report = run_notebook(page, name, args.timeout)
                    for action in ACTIONS.get(name, []):
                        act(page, action)
                    report["log_console"] = log_console(page)
                    print(json.dumps(report, indent=1), flush=True)
                    shut_down_kernels()
                browser.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
