"""What every benchmark records beside its numbers: the command, the machine and the data."""

from __future__ import annotations

import json
from pathlib import Path

from unimdm_jax.provenance import write_result  # noqa: F401 - the benchmarks' result writer


def read_cached(path: Path):
    """A cached stage's JSON value, or None when the stage has not run yet."""
    return json.loads(path.read_text()) if path.exists() else None


def write_cached(path: Path, value) -> None:
    """Write a stage's JSON value in one rename, so an interrupted run never leaves half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def structures_from_cifs(cifs):
    """pymatgen Structures of CIF strings."""
    from pymatgen.core import Structure

    return [Structure.from_str(c, fmt="cif") for c in cifs]


def oracle_verdicts(oracle, structures, column: int):
    """(predicted (n,), sane (n,), plausible (n,)) for generated structures: the oracle's value of
    property ``column`` for every sane cell (NaN for the others, which it cannot featurize), and
    ``metrics.is_sane`` / ``metrics.is_plausible`` flags."""
    import numpy as np

    from unimdm_jax.metrics import is_plausible, is_sane

    sane = np.asarray([is_sane(s) for s in structures], bool)
    plausible = np.asarray([is_plausible(s) for s in structures], bool)
    predicted = np.asarray(oracle.predict_structures(structures), np.float64)[:, column]  # NaN where not sane
    return predicted, sane, plausible
