"""Two evaluations of the same crystals compared crystal by crystal (``metrics.paired_comparison``).

    python benchmarks/compare_evals.py A.json B.json

A and B are ``python -m unimdm_jax.evaluate --out`` files (their ``per_crystal`` lists); the
crystals are paired by material id, and both files must hold the same ones. Prints each rate,
the crystals matched by one model only, the exact McNemar p-value and the RMSE on the crystals
both match. Takes a second; reads no data beyond the two files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unimdm_jax.metrics import match_summary, paired_comparison


def per_crystal(path: Path) -> dict:
    try:
        rows = json.loads(path.read_text())["per_crystal"]
        return {row["material_id"]: row["rms"] for row in rows}
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit(f"error: {path} is not an evaluation results file with per_crystal rows ({error})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    a, b = per_crystal(args.a), per_crystal(args.b)
    if set(a) != set(b):
        sys.exit(f"error: the files hold different crystals ({len(set(a) ^ set(b))} not in both)")
    ids = sorted(a)
    rms_a, rms_b = [a[i] for i in ids], [b[i] for i in ids]
    result = {
        "a": {"file": str(args.a), **match_summary(rms_a)},
        "b": {"file": str(args.b), **match_summary(rms_b)},
        "paired": paired_comparison(rms_a, rms_b),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
