"""Where a CSP evaluation matches and where it does not: match rate by crystal system and by cell size.

    python benchmarks/match_breakdown.py benchmarks/results/dit_csp_mp20.json \
        --csv ../shared/data/mp_20/test.csv.gz [--out FILE]

Reads an ``python -m unimdm_jax.evaluate --out`` file (its ``per_crystal`` rows) and the CSV it was
evaluated on, and groups the crystals by the crystal system of their MP-20 space group
(``spacegroup.number``) and by the number of sites in the MP-20 cell (the CIF as given). Takes
seconds (it parses the CIFs of the evaluated rows only).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from unimdm_jax.data.io import read_rows
from unimdm_jax.metrics import match_summary
from unimdm_jax.provenance import write_result
from unimdm_jax.schema.tables import crystal_system

SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
SIZE_BINS = ((1, 4), (5, 8), (9, 12), (13, 16), (17, 20))


def _size_bin(n_sites: int) -> str:
    for low, high in SIZE_BINS:
        if low <= n_sites <= high:
            return f"{low}-{high}"
    return f">{SIZE_BINS[-1][1]}"


def breakdown(per_crystal: list[dict], rows: dict) -> dict:
    """{"crystal_system": {system: summary}, "sites": {bin: summary}} of per-crystal match results."""
    groups: dict[str, dict[str, list]] = {"crystal_system": defaultdict(list), "sites": defaultdict(list)}
    for entry in per_crystal:
        row = rows[entry["material_id"]]
        groups["crystal_system"][crystal_system(int(row.spacegroup_number))].append(entry["rms"])
        groups["sites"][_size_bin(len(row.structure()))].append(entry["rms"])
    order = {
        "crystal_system": lambda key: SYSTEMS.index(key),
        "sites": lambda key: int(key.strip(">").split("-")[0]),
    }
    return {
        name: {
            key: {"n": len(members[key]), **match_summary(members[key])}
            for key in sorted(members, key=order[name])
        }
        for name, members in groups.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--csv", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        per_crystal = json.loads(args.results.read_text())["per_crystal"]
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {args.results} is not an evaluation results file with per_crystal rows ({error})")
    rows = {row.material_id: row for row in read_rows([args.csv])}
    missing = [e["material_id"] for e in per_crystal if e["material_id"] not in rows]
    if missing:
        sys.exit(f"error: {len(missing)} evaluated crystals are not in {args.csv} (first: {missing[0]})")
    result = {"results": str(args.results), "csv": str(args.csv), "n": len(per_crystal)}
    result.update(breakdown(per_crystal, rows))
    if args.out:
        write_result(args.out, result)  # with the command, machine, commit and date
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
