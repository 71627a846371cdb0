"""The notebooks run top to bottom on the shipped samples, and are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
# Not part of the repository: hidden directories (.venv, .git, .ipynb_checkpoints), and the
# git-ignored outputs of the README's commands.
IGNORED_DIRS = {"work", "runs", "build", "__pycache__"}


def repository_notebooks() -> list[Path]:
    """Every notebook in the repository, wherever it lives."""
    found = []
    for directory, subdirectories, files in os.walk(REPO):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d not in IGNORED_DIRS]
        found += [Path(directory) / name for name in files if name.endswith(".ipynb")]
    return sorted(found)


ALL_NOTEBOOKS = repository_notebooks()


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOKS_DIR}"


@pytest.mark.integration  # a Jupyter kernel per notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    """Executes in a fresh ``python3`` kernel with cwd ``notebooks/``; any error fails.

    jupyter_client starts the kernelspec's ``python`` as the interpreter running pytest, so
    the kernel is the project's venv when pytest runs from it."""
    if "MPLBACKEND" not in os.environ:
        monkeypatch.setenv("MPLBACKEND", "Agg")  # no display; figures are drawn, not shown
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' tempfile.mkdtemp() outputs
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}
    )
    client.execute()  # raises CellExecutionError naming the cell and the traceback


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: str(p.relative_to(REPO)))
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    with_outputs = [
        index for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not with_outputs, f"{path.name}: cells {with_outputs} have outputs or execution counts; clear them"
