"""Benchmark: screening many targets, one call per row against one batched screen.

    python benchmarks/screening_throughput.py --rows 8 -n 4 --top-k 1 \
        --out benchmarks/results/screening_throughput_mp20.json

Targets: the first ``--rows`` rows of MP-20's test-1k subset (their reduced formula and true band
gap), so every row is a real composition. Five ways to run the same requests with the embedded
models (symmetry predictor, Crystal DiT at its trained T, oracle):

- ``one_process_per_row``: ``python -m unimdm_jax.sample --formula F --band-gap V`` once per row, as
  a shell loop would (each call loads the models and compiles the sampler);
- ``one_call_per_row``: ``unimdm_jax.generate`` once per row in one Python process (models loaded once,
  the sampler compiled per batch shape, each row's structures sampled alone);
- ``screen``: ``python -m unimdm_jax.sample --targets`` (``unimdm_jax.screening``): models loaded once,
  the structures of all rows sampled together in full batches;
- ``ray_1_worker`` / ``ray_2_workers``: the same command with ``--ray local --ray-workers K`` (a Ray
  instance started on this machine, the rows in K groups, one actor per group loading the models
  once); on one 2-core machine this measures Ray's overhead, not a cluster's scaling.

Reported per way: wall seconds (process start-up included for the command lines), rows and
structures per second. One JAX job at a time: the machine is given to each way in turn.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import write_result  # noqa: E402


def target_rows(csv_path: str, count: int) -> list[dict]:
    from unimdm_jax.data.io import read_rows, structure_from_cif, test_subset_indices

    rows = read_rows([csv_path])
    chosen = [rows[i] for i in test_subset_indices(len(rows))[:count]]
    return [
        {
            "id": row.material_id,
            "formula": structure_from_cif(row.cif).composition.reduced_formula,
            "band_gap": round(float(row.properties["band_gap"]), 3),
        }
        for row in chosen
    ]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", default=str(REPO.parent / "shared/data/mp_20/test.csv.gz"))
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("-n", type=int, default=4, help="structures per row")
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="ways to run (default: all five)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    rows = target_rows(args.csv, args.rows)
    work = Path(tempfile.mkdtemp(prefix="screening_"))
    targets = work / "targets.csv"
    with open(targets, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "formula", "band_gap"])
        writer.writeheader()
        writer.writerows(rows)
    common = ["-n", str(args.n), "--top-k", str(args.top_k), "--quiet"]
    ways = args.only or [
        "one_process_per_row",
        "one_call_per_row",
        "screen",
        "ray_1_worker",
        "ray_2_workers",
    ]
    seconds: dict[str, float] = {}
    for way in ways:
        if way == "one_process_per_row":
            seconds[way] = sum(
                timed(
                    [sys.executable, "-m", "unimdm_jax.sample", "--formula", r["formula"]]
                    + ["--band-gap", str(r["band_gap"]), "--out", str(work / way / r["id"]), *common]
                )
                for r in rows
            )
        elif way == "one_call_per_row":
            script = (
                "import csv, sys, unimdm_jax\n"
                f"for r in csv.DictReader(open({str(targets)!r})):\n"
                f"    unimdm_jax.generate(r['formula'], band_gap=float(r['band_gap']), n={args.n}, "
                f"top_k={args.top_k}, progress=False).write({str(work / way)!r} + '/' + r['id'])\n"
            )
            seconds[way] = timed([sys.executable, "-c", script])
        elif way in ("ray_1_worker", "ray_2_workers"):
            workers = 1 if way == "ray_1_worker" else 2
            seconds[way] = timed(
                [
                    sys.executable,
                    "-m",
                    "unimdm_jax.sample",
                    "--targets",
                    str(targets),
                    "--out",
                    str(work / way),
                ]
                + ["--rows-per-batch", str(-(-args.rows // workers)), "--ray", "local"]
                + ["--ray-workers", str(workers), *common]
            )
        elif way == "screen":
            seconds[way] = timed(
                [sys.executable, "-m", "unimdm_jax.sample", "--targets", str(targets)]
                + ["--out", str(work / way), "--rows-per-batch", str(args.rows), *common]
            )
        else:
            parser.error(f"unknown way {way!r}")
        print(f"{way}: {seconds[way]:.1f} s", file=sys.stderr)

    structures = args.rows * args.n
    result = {
        "benchmark": "screening_throughput",
        "rows": args.rows,
        "structures_per_row": args.n,
        "top_k": args.top_k,
        "targets": rows,
        "ways": {
            way: {
                "wall_seconds": round(s, 1),
                "rows_per_second": round(args.rows / s, 4),
                "structures_per_second": round(structures / s, 4),
            }
            for way, s in seconds.items()
        },
    }
    if args.out:
        write_result(args.out, result)
    for way, numbers in result["ways"].items():
        rate = numbers["structures_per_second"]
        print(f"{way:>20}: {numbers['wall_seconds']:7.1f} s  {rate:.3f} structures/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
