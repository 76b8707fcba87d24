"""Benchmark: symmetry preprocessing of all of MP-20 (the three files in ../shared).

    python benchmarks/preprocess_mp20.py [--data ../shared/data/mp_20] [--workers 2]

Processes train_partial, val and test into a fresh cache directory (nothing reused), and
writes benchmarks/results/preprocess_mp20.json with wall time, crystals/s, failures (by
material id) and the machine. Target: under 15 minutes on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from unimdm_jax.data import io  # noqa: E402
from unimdm_jax.data.preprocess import preprocess_file  # noqa: E402

FILES = ("train_partial.csv.gz", "val.csv.gz", "test.csv.gz")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None, help="folder with the MP-20 CSVs")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="keep the cache here (default: a temporary folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "preprocess_mp20.json"))
    args = parser.parse_args()
    data = Path(args.data) if args.data else io.mp20_dir()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp)
        per_file, total_rows, total_ok, failures = {}, 0, 0, []
        started = time.perf_counter()
        for name in FILES:
            t0 = time.perf_counter()
            dataset, failed = preprocess_file(data / name, cache_dir=cache, workers=args.workers)
            seconds = time.perf_counter() - t0
            per_file[name] = {"crystals": len(dataset), "failed": len(failed), "seconds": round(seconds, 1)}
            total_rows += len(dataset) + len(failed)
            total_ok += len(dataset)
            failures += [{"file": name, "material_id": f.material_id, "reason": f.reason} for f in failed]
        wall = time.perf_counter() - started
    write_result(
        Path(args.out),
        {
            "benchmark": "preprocess_mp20",
            "data": str(data),
            "rows": total_rows,
            "symmetrized": total_ok,
            "failed": len(failures),
            "failures": failures,
            "per_file": per_file,
            "wall_seconds": round(wall, 1),
            "crystals_per_second": round(total_rows / wall, 1),
            "target_seconds": 900,
        },
    )


if __name__ == "__main__":
    main()
