"""`make lab` serves notebooks/: start JupyterLab as it does, fetch /lab and the notebook list."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None,
                    reason="jupyterlab is not installed (pip install -e '.[notebooks]')")
def test_jupyter_lab_serves_the_notebooks(tmp_path):
    port = _free_port()
    jupyter = str(Path(sys.executable).parent / "jupyter")
    server = subprocess.Popen(
        [jupyter, "lab", "notebooks/", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.open_browser=False",
         "--allow-root"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5) as r:
                    assert r.status == 200 and b"JupyterLab" in r.read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=5) as r:
            listed = {item["name"] for item in json.load(r)["content"]}
        on_disk = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
        assert on_disk <= listed
    finally:
        server.terminate()
        server.wait(timeout=30)
