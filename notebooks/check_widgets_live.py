"""Move one widget of each notebook the way JupyterLab does, through a real Jupyter server, and
check that it responds.

The test suite moves widgets from inside the kernel (tests/test_notebooks.py). This script goes the
whole way a reader's click goes: it starts `jupyter server`, opens a kernel over the server's
websocket, runs a notebook's code cells in fast mode, sends the `comm_msg` that the ipywidgets
frontend sends when a slider is dragged, a dropdown changed or a button clicked, and waits for the
widget's output to show the new value. It is a manual check (it needs a free port and takes about
half a minute), not part of `make test`.

    .venv/bin/python notebooks/check_widgets_live.py
"""
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import jupytext
from tornado.websocket import websocket_connect

NOTEBOOKS = Path(__file__).resolve().parent
PORT, TOKEN = 8899, "widget-check"
# notebook: (widget, the frontend's message as a Python expression evaluated in the kernel (a
# dropdown is moved by the index of an option), text that must then appear in the widget's output)
CASES = {
    "01_advantage_landscape": ("group_size_slider", "{'method': 'update', 'state': {'value': 5}}",
                               "group of G=5 with k correct"),
    "02_why_grpo_ignores_failure": ("sample_button",
                                    "{'method': 'custom', 'content': {'event': 'click'}}",
                                    "prompt solved with p ="),
    "03_entropy_dynamics": ("metric_picker", "{'method': 'update', 'state': {'index': "
                            "list(metric_picker.options).index('share_all_wrong')}}",
                            "share_all_wrong at the last step"),
    "04_clipping": ("clip_high_slider", "{'method': 'update', 'state': {'value': 0.3}}",
                    "upper bound 1.3"),
    "05_small_llm_run": ("metric_picker", "{'method': 'update', 'state': {'index': "
                         "list(metric_picker.options).index('clipfrac_low')}}",
                         "clipfrac_low at the last step"),
    "06_token_level": ("metric_picker", "{'method': 'update', 'state': {'index': "
                       "list(metric_picker.options).index('truncation')}}",
                       "truncation at the last step"),
}


def rest(method: str, path: str, body=None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}?token={TOKEN}", method=method,
                                     data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request).read() or "{}")


def kernel_message(msg_type: str, content: dict) -> str:
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "check",
              "session": "check", "version": "5.3", "date": ""}
    return json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                       "channel": "shell", "buffers": []})


async def text_message(socket) -> str:
    """The next message that is JSON text; binary frames carry an Image widget's PNG."""
    while isinstance(message := await socket.read_message(), bytes):
        pass
    return message


async def move_widget(name: str, widget: str, frontend_message: str, expected: str) -> None:
    kernel = rest("POST", "/api/kernels", {"name": "python3"})
    socket = await websocket_connect(f"ws://127.0.0.1:{PORT}/api/kernels/{kernel['id']}/channels"
                                     f"?token={TOKEN}")
    cells = [f"import os\nos.environ['NGRPO_FAST'] = '1'\nos.chdir({str(NOTEBOOKS)!r})"]
    cells += [cell.source for cell in jupytext.read(NOTEBOOKS / f"{name}.py").cells
              if cell.cell_type == "code"]
    cells.append(f"import json\nprint('WIDGET', {widget}.model_id, json.dumps({frontend_message}))")
    started = time.time()
    for source in cells:
        request = kernel_message("execute_request", {
            "code": source, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False})
        await socket.write_message(request)
        request_id = json.loads(request)["header"]["msg_id"]
        # Until the kernel is idle after this cell: every output of the cell has arrived by then
        # (its execute_reply, on another channel, can come first).
        while True:
            reply = json.loads(await text_message(socket))
            kind = reply["header"]["msg_type"]
            if kind == "error":
                raise RuntimeError(f"{name}: {reply['content']['ename']}: "
                                   f"{reply['content']['evalue']}")
            if kind == "stream" and reply["content"]["text"].startswith("WIDGET "):
                comm_id, data = reply["content"]["text"].split(" ", 2)[1:]
            if (kind == "status" and reply["content"]["execution_state"] == "idle"
                    and reply["parent_header"].get("msg_id") == request_id):
                break
    sent = time.time()
    await socket.write_message(kernel_message("comm_msg",
                                              {"comm_id": comm_id, "data": json.loads(data)}))
    while time.time() - sent < 120:  # everything that arrives now answers the message
        if expected in await asyncio.wait_for(text_message(socket), 120):
            print(f"{name}: {widget} <- {data.strip()}: its output shows {expected!r} "
                  f"{time.time() - sent:.2f} s later (the notebook ran in {sent - started:.1f} s)")
            break
    else:
        raise RuntimeError(f"{name}: no output with {expected!r} within 120 s of moving {widget}")
    socket.close()
    rest("DELETE", f"/api/kernels/{kernel['id']}")


async def main() -> None:
    for name, case in CASES.items():
        await move_widget(name, *case)


if __name__ == "__main__":
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "server", "--no-browser",
                               "--allow-root", f"--port={PORT}", f"--ServerApp.token={TOKEN}",
                               f"--ServerApp.root_dir={NOTEBOOKS}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                rest("GET", "/api/status")
                break
            except OSError:
                time.sleep(0.5)
        asyncio.run(main())
    finally:
        server.terminate()
