"""notebooks/05_your_own_data.ipynb runs top to bottom (as tests/test_notebooks.py runs the others):
a file of its own, so that ``pytest -n 2 --dist loadfile`` runs it on the other worker beside them."""

from __future__ import annotations

import pytest
from test_notebooks import NOTEBOOKS, OWN_FILE, kernel_spec_dir, run_notebook  # noqa: F401 - a fixture


@pytest.mark.slow  # ~190 s on the 2-core CPU: two short trainings, two generations
@pytest.mark.parametrize("stem", OWN_FILE)
def test_notebook_runs(stem, kernel_spec_dir, tmp_path):  # noqa: F811 - the imported fixture
    (path,) = [p for p in NOTEBOOKS if p.stem == stem]
    run_notebook(path, kernel_spec_dir, tmp_path)
