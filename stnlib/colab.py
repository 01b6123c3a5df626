"""The repository URL, Colab badges and the Colab install cell, all from one place.

The public URL is written once, in ``pyproject.toml`` under ``[project.urls] Repository``.
Every notebook opens with a badge and an install cell built from it. After a move, edit
pyproject.toml and run ``make sync-urls`` (``python -m stnlib.colab --write notebooks/*.ipynb``);
``tests/test_notebooks_meta.py`` fails while any notebook still uses an old URL.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def repository_url() -> str:
    """``[project.urls] Repository`` from pyproject.toml (or the installed metadata)."""
    if _PYPROJECT.is_file():
        text = _PYPROJECT.read_text(encoding="utf-8")
        match = re.search(r"^\[project\.urls\]\s*$(.*?)^\[", text + "\n[", re.M | re.S)
        if match:
            url = re.search(r'^Repository\s*=\s*"([^"]+)"', match.group(1), re.M)
            if url:
                return url.group(1).rstrip("/")
    for entry in metadata.metadata("stnlib").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip() == "Repository":
            return url.strip().rstrip("/")
    raise RuntimeError("no [project.urls] Repository in pyproject.toml or stnlib's metadata")


def _github_path(url: str) -> str:
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?", url)
    if not match:
        raise ValueError(f"Repository URL {url!r} is not https://github.com/OWNER/REPO")
    return match.group(1)


def colab_url(notebook: str, branch: str = "main") -> str:
    """The Colab link that opens ``notebooks/<notebook>`` from the repository."""
    name = Path(notebook).name
    return f"https://colab.research.google.com/github/{_github_path(repository_url())}/blob/{branch}/notebooks/{name}"


def badge_markdown(notebook: str) -> str:
    """The markdown of the first cell of every notebook: an "Open in Colab" badge."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook)})"


def install_cell_source() -> str:
    """The code of the second cell: installs stnlib on Colab, does nothing elsewhere."""
    return (
        "# On Colab, install stnlib from the course repository; elsewhere `make lab` did it.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import subprocess\n"
        "\n"
        f'    url = "git+{repository_url()}"\n'
        '    pip = [sys.executable, "-m", "pip", "install", "-q"]\n'
        '    subprocess.run([*pip, f"stnlib @ {url}"], check=True)'

    )


def sync_notebook(path: Path, write: bool) -> bool:
    """Make the badge and install cell of one notebook current. Returns whether it changed."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    if len(cells) < 2 or cells[0]["cell_type"] != "markdown" or cells[1]["cell_type"] != "code":
        raise ValueError(f"{path}: expected a markdown badge cell then a code install cell")
    wanted = [badge_markdown(path.name), install_cell_source()]
    changed = False
    for cell, text in zip(cells[:2], wanted, strict=True):
        if "".join(cell["source"]) != text:
            cell["source"] = text.splitlines(keepends=True)
            changed = True
    if changed and write:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stnlib.colab", description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--write", action="store_true", help="rewrite stale cells in place")
    args = parser.parse_args(argv)
    stale = [p for p in args.notebooks if sync_notebook(p, args.write)]
    for path in stale:
        print(f"{'updated' if args.write else 'stale'}: {path}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
