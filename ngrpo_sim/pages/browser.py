"""The system's Chromium, driven headless by Playwright: for the browser tests and the README's
screenshot of the pages.

Playwright (the ``dev`` extra) is pointed at Debian's ``chromium`` (``apt-get install chromium``)
and never downloads a browser of its own. Each launch gets a fresh temporary profile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ngrpo_sim.base.files import write_atomically

BROWSER_VARIABLE = "NGRPO_CHROMIUM"
LAUNCH_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync")
"""--no-sandbox: the tests may run as root; the rest keep a headless run quiet and offline."""


def system_chromium() -> str | None:
    """``$NGRPO_CHROMIUM``, else the ``chromium`` on the PATH; None when there is neither."""
    return os.environ.get(BROWSER_VARIABLE) or shutil.which("chromium") or shutil.which(
        "chromium-browser")


@contextlib.contextmanager
def chromium():
    """A headless Playwright browser on the system's Chromium; ``ValueError`` naming the fix where
    Playwright or the browser is missing."""
    executable = system_chromium()
    if executable is None:
        raise ValueError("no chromium found: apt-get install -y chromium (as root), or set "
                         f"{BROWSER_VARIABLE} to a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ValueError("Playwright is not installed: pip install playwright (the dev extra); "
                         "it needs no browser download, it drives the system's chromium") from None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(LAUNCH_FLAGS))
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page_path, out, width: int = 1450, height: int = 1000) -> Path:
    """A PNG of the top ``height`` pixels of an HTML file, once its scripts have drawn it."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(Path(page_path).resolve().as_uri())
        page.wait_for_load_state("load")
        page.wait_for_timeout(1000)  # BokehJS draws its canvases after the load event
        return write_atomically(out, page.screenshot())
