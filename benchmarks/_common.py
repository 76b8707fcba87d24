"""What every benchmark records beside its numbers: the command, the machine and the data."""

from __future__ import annotations

from unimdm_jax.provenance import write_result  # noqa: F401 - the benchmarks' result writer


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
