"""The notebooks in ``notebooks/`` run top to bottom (nbclient), so they never rot.

Each notebook runs in a fresh IPython kernel started with this interpreter
(``sys.executable``, through a kernel spec written to a temporary folder: no installed
``python3`` kernel spec is needed or used, so a fresh ``pip install -e .[dev,llm]`` venv
works), with the working directory set to a temporary folder. A failing cell fails the test
with that cell's number, source and error. Committed notebooks carry no outputs.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell
KERNEL_NAME = "unimdm-test-python"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture(scope="module")
def kernel_spec_dir(tmp_path_factory) -> Path:
    """A folder holding one kernel spec that launches ipykernel with this interpreter."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} (tests)",
                "language": "python",
            }
        )
    )
    return kernels


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this one, on CPU, without the test suite's forced
    2-device host platform (conftest), so the notebooks see what a user sees."""
    env = dict(os.environ)
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return env


def failing_cell(notebook) -> str:
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                traceback = ANSI.sub("", "\n".join(output.get("traceback", [])))
                return (
                    f"cell {index} failed: {output.get('ename')}: {output.get('evalue')}\n"
                    f"--- source ---\n{cell.source}\n--- traceback ---\n{traceback[-4000:]}"
                )
    return ""


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 4, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, "no code cells"
    dirty = [
        i
        for i, c in enumerate(notebook.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, f"cells {dirty} carry outputs or execution counts: clear them before committing"


#: notebooks whose run test is a file of its own, so that ``--dist loadfile`` runs it on the
#: other worker, beside these ones (tests/test_notebook_own_data.py)
OWN_FILE = ("05_your_own_data",)
HERE = [p for p in NOTEBOOKS if p.stem not in OWN_FILE]


@pytest.mark.slow  # 30-90 s each on the 2-core CPU (sampling at T = 1000, a short training run)
@pytest.mark.parametrize("path", HERE, ids=[p.stem for p in HERE])
def test_notebook_runs(path, kernel_spec_dir, tmp_path):
    run_notebook(path, kernel_spec_dir, tmp_path)


def run_notebook(path: Path, kernel_spec_dir: Path, tmp_path: Path) -> None:
    """Execute a notebook in a fresh kernel; a failing cell fails the calling test."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    notebook = nbformat.read(path, as_version=4)
    specs = KernelSpecManager(kernel_dirs=[str(kernel_spec_dir)], ensure_native_kernel=False)
    manager = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    detail = None
    try:
        client.execute(env=kernel_env())
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
        detail = failing_cell(notebook) or ANSI.sub("", str(error))[-4000:]
    if detail is not None:  # outside the except block: the report is the cell's error alone
        pytest.fail(f"{path.name}: {detail}", pytrace=False)
