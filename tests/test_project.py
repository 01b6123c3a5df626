"""The course's set-up promises: two commands, conda == pip, CI runs the README's command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirement_names(requirements: list[str]) -> dict[str, str]:
    """{normalised name: full requirement} for a list of PEP 508 strings."""
    out = {}
    for req in requirements:
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0).lower().replace("_", "-")
        out[name] = req.replace(" ", "")
    return out


def _environment_pip_requirements() -> list[str]:
    """The `- pip:` entries of environment.yml (parsed by hand: no YAML dependency)."""
    lines = (REPO / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    entries = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.strip().startswith("#"):
            continue
        if len(line) - len(line.lstrip()) < indent:
            break
        entries.append(line.strip().removeprefix("- ").strip())
    return entries


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    pip = _environment_pip_requirements()
    assert "-e ." in pip, "environment.yml must install the course itself with `-e .`"
    in_conda = _requirement_names([p for p in pip if p != "-e ."])
    in_pyproject = _requirement_names(wanted)
    assert in_conda == in_pyproject, (
        "environment.yml and pyproject.toml list different packages or versions:\n"
        f"only in environment.yml: {sorted(set(in_conda.items()) - set(in_pyproject.items()))}\n"
        f"only in pyproject.toml: {sorted(set(in_pyproject.items()) - set(in_conda.items()))}"
    )


def test_environment_yml_pins_python_311():
    assert re.search(r"^\s*-\s*python=3\.11\s*$", (REPO / "environment.yml").read_text(), re.M)


def test_torch_ranges_admit_colab_and_this_machine():
    deps = _requirement_names(_pyproject()["project"]["dependencies"])
    assert not re.search(r"<|==", deps["torch"] + deps["torchvision"]), "no upper pins on torch"


def test_readme_opens_with_exactly_the_two_commands():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", readme, re.S)
    assert blocks, "README has no code block"
    commands = [line for line in blocks[0].splitlines() if line and not line.startswith("#")]
    assert commands == ["make lab", "make test"], commands


def test_ci_runs_the_readme_test_command_and_nothing_else():
    script = (REPO / ".ci" / "run").read_text()
    commands = [
        line.strip() for line in script.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert commands[-1] == "make test"
    assert not any("pytest" in c or "nbval" in c for c in commands)


def _make_dry_run(target: str) -> str:
    return subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", target], cwd=REPO, capture_output=True,
        text=True, check=True,
    ).stdout


def test_make_test_runs_lint_pytest_and_every_notebook_in_fast_mode():
    recipe = _make_dry_run("test")
    assert "ruff check" in recipe
    assert "STNLIB_FAST=1" in recipe
    assert re.search(r"pytest tests notebooks .*--nbval", recipe.replace("\\\n", " "))


def test_make_lab_installs_then_serves_the_notebooks():
    recipe = _make_dry_run("lab")
    assert "pip install" in recipe and '-e ".[notebooks,test]"' in recipe
    assert "jupyter lab notebooks/" in recipe


def test_make_notebooks_executes_the_full_lesson_with_line_progress():
    recipe = _make_dry_run("notebooks").replace("\\\n", " ")
    assert "env -u STNLIB_FAST" in recipe and "STNLIB_PROGRESS=lines" in recipe
    assert re.search(r"jupyter nbconvert --to notebook --execute\s+--inplace", recipe)
    assert "notebooks/*.ipynb" in recipe


def test_readme_layout_lists_every_module():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for module in sorted((REPO / "stnlib").glob("*.py")):
        if not module.name.startswith("_"):
            assert re.search(rf"\b{re.escape(module.name)}\b", layout), (
                f"README's layout does not list stnlib/{module.name}")


def test_data_folder_is_committed_but_mnist_is_ignored():
    ignore = (REPO / "data" / ".gitignore").read_text().split()
    assert ignore[:1] == ["*"] or "*" in ignore
    assert "!README.md" in ignore and (REPO / "data" / "README.md").is_file()
    tracked = subprocess.run(
        ["git", "ls-files", "data"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert not [t for t in tracked if "MNIST" in t], tracked


def test_cli_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "stnlib", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "bench" in out
