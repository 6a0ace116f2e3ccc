"""Running a notebook headless, as the tests and ``notebooks/make_readme_figures.py`` do.

Test and build infrastructure, not teaching: a fresh ``python3`` kernel per notebook, with a kernel
manager that never sleeps through a message (``_polling_kernel_manager``), and readers of what the
notebook's cells and widgets showed. Needs the Jupyter packages, imported on first use.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from queue import Empty

from ngrpo_sim.base import checks
from ngrpo_sim.teaching.notebook import FAST_MODE_VARIABLE

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
POLL_SLICE_S = 1.0
"""Longest wait on a kernel socket before looking again (see ``_polling_kernel_manager``)."""


@functools.cache
def _polling_kernel_manager():
    """A kernel manager whose clients never sleep through a message that has arrived.

    With pyzmq's asyncio sockets (27.x here) a wait for a kernel message now and then misses the
    socket's wake-up, and the message is only noticed when the wait times out: in about one run in
    three of notebook 2 on a 2-core machine, one cell stalled for exactly nbclient's whole cell
    timeout, then went on. Waiting in slices of ``POLL_SLICE_S``, each of which begins with a fresh
    check of the socket, bounds that stall to the slice. Built on first use, so that importing this
    module needs no Jupyter packages.
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.channels import AsyncZMQSocketChannel
    from traitlets import Type

    class PollingChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                remaining = (POLL_SLICE_S if deadline is None
                             else max(0.0, deadline - time.monotonic()))
                try:
                    return await super().get_msg(timeout=min(POLL_SLICE_S, remaining))
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

    class PollingClient(AsyncKernelClient):
        shell_channel_class = Type(PollingChannel)
        iopub_channel_class = Type(PollingChannel)

    class PollingKernelManager(AsyncKernelManager):
        client_factory = Type(PollingClient)

    return PollingKernelManager


def widget_outputs(notebook) -> list[dict]:
    """What went to the notebook's Output widgets (the interactive displays), as recorded in its
    widget state."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return [output for model in state.values() if model["model_name"] == "OutputModel"
            for output in model["state"].get("outputs", [])]


def output_text(output: dict) -> str:
    """The text of a notebook output: a stream's text, an error's traceback, or a display's plain
    text."""
    if output["output_type"] == "stream":
        return output["text"]
    if output["output_type"] == "error":
        return "\n".join(output["traceback"])
    return output.get("data", {}).get("text/plain", "")


def execute_notebook(source, *, fast: bool, timeout: int = 600, extra_cells=()):
    """Run a notebook headless in a fresh ``python3`` kernel started in its folder, as Jupyter
    would, and return it with its outputs and its widgets' state.

    ``source`` is the notebook's jupytext ``.py``; ``fast`` sets ``NGRPO_FAST`` for the kernel;
    ``extra_cells`` is code run after the last cell (a reader's action, such as moving a slider).
    ``timeout`` bounds each cell. An error in a cell raises nbclient's ``CellExecutionError``. An
    error inside a widget's callback raises ``RuntimeError``: the Output widget shows such a
    traceback instead of raising it, so it is looked for.
    """
    import jupytext
    import nbclient
    import nbformat

    source = Path(source)
    if not source.is_file():
        raise ValueError(f"source={str(source)!r} is not a file; give a notebook's jupytext .py")
    timeout = checks.integer("timeout", timeout, low=1)
    notebook = jupytext.read(source)
    notebook.cells.extend(nbformat.v4.new_code_cell(code) for code in extra_cells)
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     store_widget_state=True,
                                     kernel_manager_class=_polling_kernel_manager(),
                                     resources={"metadata": {"path": str(source.parent)}})
    client.execute(env={**os.environ, FAST_MODE_VARIABLE: "1" if fast else "0"})
    errors = [output_text(output) for output in widget_outputs(notebook)
              if output["output_type"] == "error"]
    if errors:
        raise RuntimeError(f"a widget callback of {source.name} failed:\n" + "\n\n".join(errors))
    return notebook
