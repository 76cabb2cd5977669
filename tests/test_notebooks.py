"""Every notebook in notebooks/ runs top to bottom, offline, in the project's own Python.

The kernel is this interpreter's ipykernel (a kernelspec written into the test's temporary
folder), so a user's or the system's `python3` kernel can never stand in for the venv. The
notebook starts in an empty temporary folder, with the IPython and Jupyter folders there too and
Hugging Face set offline: nothing is read from or written to the home folder or the network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbclient  # the dev extra: pip install -c constraints.txt -e ".[dev]"
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120
"""Seconds one cell may take (the slowest, indexing, takes about 15 s on 2 shared cores)."""
KERNEL = "mmsearch-venv"


def test_notebooks_are_found() -> None:
    """An empty glob would make the parametrised test below pass by running nothing."""
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "queries.ipynb"}


def _kernel_manager(tmp: Path) -> AsyncKernelManager:
    """A kernel manager that can only start this interpreter's ipykernel."""
    spec_dir = tmp / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mmsearch (project venv)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name, value in {
        "IPYTHONDIR": tmp_path / "ipython",
        "JUPYTER_RUNTIME_DIR": tmp_path / "runtime",
        "JUPYTER_DATA_DIR": tmp_path / "jupyter",
        "MPLCONFIGDIR": tmp_path / "mpl",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(name, str(value))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT_S,
        startup_timeout=60,
        allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed\n{exc}", pytrace=False)
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error outputs {errors}"
