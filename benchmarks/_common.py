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


RELAX_CHUNK = 20  # structures per cached relaxation file


def _relax_chunk(job):
    """One worker's chunk, relaxed side by side: relaxed CIF, energy per atom and flags per structure."""
    cifs, fmax, steps = job
    from unimdm_jax.relax import relax

    return [
        {
            "cif": result.final.to(fmt="cif") if result.ok and result.final is not None else None,
            "energy_per_atom": result.energy_per_atom if result.ok else None,
            "ok": result.ok,
            "converged": result.converged,
            "steps": result.steps,
            "reason": result.reason,
            "seconds": result.seconds,
        }
        for result in relax(structures_from_cifs(cifs), fmax=fmax, steps=steps, batch_size=len(cifs))
    ]


def relax_cached(cifs, work: Path, tag: str, fmax: float, steps: int, processes: int) -> list[dict]:
    """Relaxation records of ``cifs`` (``_relax_chunk``'s dicts, in order), cached in ``work`` as
    ``relaxed_{tag}NNNNN.json`` chunk by chunk, so an interrupted run resumes at the next chunk."""
    import sys

    from unimdm_jax.parallel import process_pool

    cifs = list(cifs)
    chunks = [cifs[i : i + RELAX_CHUNK] for i in range(0, len(cifs), RELAX_CHUNK)]
    paths = [work / f"relaxed_{tag}{i:05d}.json" for i in range(len(chunks))]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if todo:
        with process_pool(processes) as pool:
            jobs = [(chunks[i], fmax, steps) for i in todo]
            for done, (i, records) in enumerate(zip(todo, pool.imap(_relax_chunk, jobs)), 1):
                write_cached(paths[i], records)
                print(f"relaxed chunk {done}/{len(todo)}", file=sys.stderr, flush=True)
    return [r for p in paths for r in read_cached(p)]


def relaxation_summary(records: list[dict], **extra) -> dict:
    """Counts of a relaxation stage's records, for a benchmark's result file."""
    import numpy as np

    return {
        **extra,
        "relaxed": len(records),
        "ok": int(sum(r["ok"] for r in records)),
        "converged": int(sum(bool(r["converged"]) for r in records)),
        "median_steps": float(np.median([r["steps"] for r in records])) if records else None,
        "seconds_per_structure": float(np.mean([r["seconds"] for r in records])) if records else None,
    }
