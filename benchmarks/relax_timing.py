"""Seconds per structure of the CHGNet relaxation step (unimdm_jax.relax) on this machine.

Takes the first N structures of an MP-20 split (``cif`` column), perturbs every site by
0.05 A (pymatgen ``Structure.perturb``, seeded), then times

- the batched single point (``single_point_energies``, one ``predict_graph`` call) and the
  same one structure at a time, and
- the relaxation (``relax``: FIRE, FrechetCellFilter, FixSymmetry symprec 0.1,
  fmax 0.05 eV/A, at most 300 steps) once per ``--batch-sizes`` value: how many optimisers
  run side by side, their states evaluated in one CHGNet call per step (1: one at a time),

after loading the potential (load time reported separately). Prints one JSON object.

    python benchmarks/relax_timing.py [--csv ../shared/data/mp_20/test.csv.gz] [-n 16] \
        [--batch-sizes 1 16] \
        [--out benchmarks/results/relax_timing_mp20.json]

Leakage: CHGNet's training set (MPtrj) contains these MP-20 test materials.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from unimdm_jax import relax as R

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "mp_20" / "test.csv.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=R.DEFAULT_THREADS)
    ap.add_argument("--out", default=None, help="results file (command, machine, commit added)")
    args = ap.parse_args()

    df = pd.read_csv(args.csv, nrows=args.n)
    structures = []
    for k, cif in enumerate(df["cif"]):
        s = Structure.from_str(cif, fmt="cif")
        s.perturb(0.05, min_distance=0.05, seed=args.seed + k)  # every site moves by 0.05 A
        structures.append(s)

    t = time.perf_counter()
    R.load_potential()
    load_s = time.perf_counter() - t
    R.single_point_energies(structures[:1], num_threads=args.threads)  # warm-up
    t = time.perf_counter()
    R.single_point_energies(structures, num_threads=args.threads)
    sp_s = (time.perf_counter() - t) / len(structures)
    t = time.perf_counter()
    for s in structures:
        R.single_point_energies([s], num_threads=args.threads)
    sp1_s = (time.perf_counter() - t) / len(structures)

    relaxations = {}
    for batch_size in args.batch_sizes:
        t = time.perf_counter()
        results = R.relax(structures, fmax=0.05, steps=300, num_threads=args.threads, batch_size=batch_size)
        total = time.perf_counter() - t
        steps = [r.steps for r in results if r.ok]
        relaxations[str(batch_size)] = {
            "relax_seconds_per_structure": round(total / len(structures), 3),
            # potential evaluations: the initial state plus one per optimiser step
            "relax_seconds_per_evaluation": round(total / max(sum(s + 1 for s in steps), 1), 4),
            "median_steps": float(np.median(steps)) if steps else None,
            "converged": int(sum(r.converged for r in results)),
        }
    rows = [
        {"material_id": mid, "sg_mp20": int(sg), **R.to_summary_row(r)}
        for mid, sg, r in zip(df["material_id"], df["spacegroup.number"], results)
    ]
    result = {
        "benchmark": "relax_timing",
        "csv": str(args.csv),
        "rows": f"the first {len(structures)} rows, every site perturbed by 0.05 A",
        "n": len(structures),
        "torch_threads": args.threads,
        "load_seconds": round(load_s, 2),
        "single_point_seconds_per_structure_batched": round(sp_s, 4),
        "single_point_seconds_per_structure_one_at_a_time": round(sp1_s, 4),
        "relaxation_by_batch_size": relaxations,
        "leakage": R.LEAKAGE_NOTE,
        "structures": rows,
    }
    if args.out:
        write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "structures"}, indent=1))


if __name__ == "__main__":
    main()
