"""Structure-matching metrics of the CSP benchmark (DiffCSP, DiffCSP++, Uni-MDM).

Match rate and RMSE use pymatgen's StructureMatcher with stol=0.5, angle_tol=10, ltol=0.3;
the RMSE is StructureMatcher's RMS displacement, which it normalises by (V/N)^(1/3), averaged
over matched pairs.

One deviation, documented here because it changes outcomes: both structures are first
reduced with ``get_primitive_structure(tolerance=0.01)``. StructureMatcher's own primitive
reduction uses a 0.25 A tolerance, which can collapse a conventional cell into a *smaller*
pseudo-primitive cell than the true one (seen on mp-1112542, Cs2Tl2I6 in Fm-3m, whose
reconstructed conventional cell otherwise fails to match its own source). The tight
reduction removes that artefact and changes nothing for structures that already match.
"""

from __future__ import annotations

import warnings

import numpy as np

PRIMITIVE_TOLERANCE = 0.01


def structure_matcher():
    # pymatgen.analysis on use: data.symmetry imports this module on the JAX-only machine's path
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)


def _primitive(structure):
    try:
        return structure.get_primitive_structure(tolerance=PRIMITIVE_TOLERANCE)
    except Exception:  # noqa: BLE001 - degenerate generated cells
        return structure


def is_sane(structure, min_volume_per_atom: float = 0.1, max_length: float = 1000.0) -> bool:
    """Finite lattice of non-degenerate volume: spglib (inside StructureMatcher) can crash
    the process on NaN or collapsed cells, which an untrained or diverged model produces."""

    lattice = structure.lattice
    parameters = np.asarray(lattice.parameters, dtype=float)
    return bool(
        np.all(np.isfinite(parameters))
        and np.all(np.isfinite(structure.frac_coords))
        and max(parameters[:3]) < max_length
        and lattice.volume / max(len(structure), 1) > min_volume_per_atom
    )


# Volume per atom of the MP-20 training split (policy split, 28,218 crystals): 5.77..128.9 A^3.
PLAUSIBLE_VOLUME_PER_ATOM = (2.9, 190.0)  # half the smallest .. 1.5 x the largest
MIN_INTERATOMIC_DISTANCE = 0.5  # Angstrom: CDVAE's structural validity criterion


def min_interatomic_distance(structure) -> float:
    """The smallest distance between two different sites (periodic images included); inf for one site."""

    if len(structure) < 2:
        return float("inf")
    distances = structure.distance_matrix
    return float(np.min(distances[~np.eye(len(structure), dtype=bool)]))


def is_plausible(structure) -> bool:
    """A physically plausible cell: :func:`is_sane`, volume per atom within
    ``PLAUSIBLE_VOLUME_PER_ATOM`` and no two atoms closer than 0.5 A (periodic images
    included). Guided sampling can drift to inflated or collapsed cells that a property
    model still scores; those must not count as hits."""
    if not is_sane(structure):
        return False
    lo, hi = PLAUSIBLE_VOLUME_PER_ATOM
    if not lo <= structure.lattice.volume / len(structure) <= hi:
        return False
    return (
        min_interatomic_distance(structure) >= MIN_INTERATOMIC_DISTANCE
        and min(structure.lattice.abc) >= MIN_INTERATOMIC_DISTANCE
    )  # an atom and its own image


def match_summary(rms, n: int | None = None) -> dict:
    """Match rate and RMSE of per-crystal results (None = not matched), with one standard error each.

    ``n``: the denominator when it counts crystals without a result (symmetry failures);
    default ``len(rms)``. Rate SE: binomial sqrt(p(1-p)/n); RMSE SE: the matched RMS values' sample
    standard deviation over sqrt(matched).
    """
    n = len(rms) if n is None else n
    matched = np.asarray([r for r in rms if r is not None], np.float64)
    rate = len(matched) / max(n, 1)
    return {
        "match_rate": rate,
        "match_rate_se": float(np.sqrt(rate * (1 - rate) / max(n, 1))),
        "rmse": float(matched.mean()) if len(matched) else None,
        "rmse_se": float(matched.std(ddof=1) / np.sqrt(len(matched))) if len(matched) > 1 else None,
    }


def paired_comparison(rms_a, rms_b) -> dict:
    """Two models' per-crystal results on the same crystals (None = not matched), compared pair by pair.

    Two models scored on the same few hundred crystals differ by less than one standard error of
    either rate; what the pairing sees is the discordant crystals, matched by one model only.
    Under "no difference" each is equally likely to fall either way, so the two-sided exact
    McNemar test is a binomial test of ``only_a`` in ``only_a + only_b`` trials at 1/2. The RMSE
    comparison is restricted to the crystals both match, where it is not confounded by which
    crystals each one matched.
    """
    from math import comb

    if len(rms_a) != len(rms_b):
        raise ValueError(f"paired comparison needs the same crystals: {len(rms_a)} vs {len(rms_b)} results")
    a = np.asarray([r is not None for r in rms_a])
    b = np.asarray([r is not None for r in rms_b])
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    trials, low = only_a + only_b, min(only_a, only_b)
    p_value = min(1.0, 2 * sum(comb(trials, k) for k in range(low + 1)) / 2**trials) if trials else 1.0
    both = a & b
    return {
        "n": len(rms_a),
        "only_a": only_a,
        "only_b": only_b,
        "both": int(np.sum(both)),
        "neither": int(np.sum(~a & ~b)),
        "mcnemar_exact_p": float(p_value),
        "rmse_both_a": float(np.mean([r for r, m in zip(rms_a, both) if m])) if both.any() else None,
        "rmse_both_b": float(np.mean([r for r, m in zip(rms_b, both) if m])) if both.any() else None,
    }


def match_rms(reference, candidate, matcher=None) -> float | None:
    """Normalised RMS displacement if ``candidate`` matches ``reference``, else None."""
    if not is_sane(candidate):
        return None
    matcher = matcher or structure_matcher()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = matcher.get_rms_dist(_primitive(reference), _primitive(candidate))
        except Exception:  # noqa: BLE001 - pymatgen raises on degenerate lattices
            return None
    return None if result is None else float(result[0])
