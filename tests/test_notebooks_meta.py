"""Every notebook: Colab badge + install cell from the one repository URL, committed outputs
that read well on GitHub (no errors, warnings or absolute paths), nbval checks, README row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stnlib import colab

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
ABSOLUTE_PATH = re.compile(r"(/work/|/root/|/home/\w+|/tmp/|/Users/\w+|[A-Z]:\\\\Users)")
MAX_BYTES = 2_000_000


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _outputs_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        for key, value in out.get("data", {}).items():
            if key.startswith("text/"):
                parts.append("".join(value))
    return "\n".join(parts)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


def test_notebooks_are_numbered_in_teaching_order():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name) for p in NOTEBOOKS)
    assert numbers == list(range(len(numbers))), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_and_install_cell_use_the_repository_url(path):
    cells = _load(path)["cells"]
    assert "".join(cells[0]["source"]) == colab.badge_markdown(path.name), (
        f"{path.name}: stale Colab badge; run `make sync-urls`"
    )
    assert "".join(cells[1]["source"]) == colab.install_cell_source(), (
        f"{path.name}: stale install cell; run `make sync-urls`"
    )
    assert colab.repository_url() in colab.install_cell_source()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_read_well(path):
    nb = _load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code[2:]), f"{path.name}: not fully executed"
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name} code cell {i}: error output"
            if out.get("name") == "stderr":
                assert "Warning" not in "".join(out["text"]), f"{path.name} cell {i}: warning"
        assert not ABSOLUTE_PATH.search(_outputs_text(cell)), f"{path.name} cell {i}: abs path"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"


FROZEN_BAR = re.compile(r"\d+%\|")  # tqdm's "  0%|     | 0/234" text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_frozen_progress_bars(path):
    """A saved tqdm bar reads "0%" on GitHub forever: outputs come from `make notebooks`,
    which prints one line per epoch instead (STNLIB_PROGRESS=lines)."""
    for i, cell in enumerate(c for c in _load(path)["cells"] if c["cell_type"] == "code"):
        assert not FROZEN_BAR.search(_outputs_text(cell)), (
            f"{path.name} code cell {i}: a saved progress bar; re-execute with `make notebooks`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_some_cells_are_checked_by_nbval(path):
    tags = [t for c in _load(path)["cells"] for t in c.get("metadata", {}).get("tags", [])]
    assert "nbval-check-output" in tags, f"{path.name}: no cell's output is compared by nbval"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_has_a_figure_and_an_exercise_check(path):
    cells = _load(path)["cells"]
    assert any("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))
    assert any("check_" in "".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_listed_in_readme_with_badge(path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"notebooks/{path.name}" in readme and colab.colab_url(path.name) in readme


def test_sync_rewrites_a_stale_notebook(tmp_path):
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["[old badge](x)"]},
            {"cell_type": "code", "metadata": {}, "source": ["pass"], "outputs": [],
             "execution_count": None},
        ],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }
    path = tmp_path / "09_demo.ipynb"
    path.write_text(json.dumps(nb))
    assert colab.main([str(path)]) == 1  # stale, reported
    assert colab.main([str(path), "--write"]) == 0
    assert colab.sync_notebook(path, write=False) is False
    assert "09_demo.ipynb" in "".join(_load(path)["cells"][0]["source"])
