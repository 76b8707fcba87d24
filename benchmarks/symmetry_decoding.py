"""Benchmark: seconds per crystal of the symmetry predictor, prefilling each prompt once vs. once per beam.

    python benchmarks/symmetry_decoding.py [--property formation_energy_per_atom] [--offset 8900] [--rows 16]
        [--rounds 2] [--threads 1] [--out benchmarks/results/symmetry_decoding_<property>.json]

Reads ``--rows`` MP-20 rows from ``--csv`` (default: the test split; conventional-cell counts and the row's
true property, as ``python -m llm_torch.evaluate`` does) and predicts the top 5 of each with the embedded
model and the default ranking, alternating ``Predictor.prefill_once`` False / True for ``--rounds`` rounds in
one process on the same thread(s), after one warm-up prediction. Also checks that both settings return the
same ranked hypotheses with the same log-probabilities (``same_answers``). About 2 x rounds x rows x 3.5 s
on one core of the 2-core development CPU (16 rows, 2 rounds: ~4 min).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--csv", default=str(Path(__file__).resolve().parents[2] / "shared/data/mp_20/test.csv.gz")
    )
    parser.add_argument("--property", default="formation_energy_per_atom")
    parser.add_argument("--offset", type=int, default=8900)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from llm_torch.dataset import csv_records
    from llm_torch.evaluate import record_spec
    from llm_torch.predict import Predictor, canonical_property, default_model_dir

    torch.set_num_threads(args.threads)
    property_name = canonical_property(args.property)
    records = csv_records(args.csv, args.rows, offset=args.offset)
    inputs = [
        (record_spec(r), float(r.property(property_name)))
        for r in records
        if r.property(property_name) is not None
    ]
    model_dir = default_model_dir(property_name)
    predictor = Predictor.from_dir(model_dir)
    predictor.predict(inputs[0][0], property_name, inputs[0][1])  # warm-up

    seconds: dict[str, list[float]] = {"plain": [], "prefill_once": []}
    answers: dict[str, list] = {}
    for _ in range(args.rounds):
        for once in (False, True):
            predictor.prefill_once = once
            start = time.perf_counter()
            predictions = [predictor.predict(spec, property_name, value) for spec, value in inputs]
            seconds["prefill_once" if once else "plain"].append((time.perf_counter() - start) / len(inputs))
            answers["prefill_once" if once else "plain"] = [
                [(h.space_group, h.assignment, h.logprob) for h in p.hypotheses] for p in predictions
            ]
    result = {
        "benchmark": "symmetry predictor, seconds per crystal (top 5, default ranking), "
        "plain generate vs prefill once",
        "model": str(model_dir.name),
        "data": {"csv": args.csv, "offset": args.offset, "rows": len(inputs), "property": property_name},
        "threads": args.threads,
        "seconds_per_crystal": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "mean_seconds_per_crystal": {k: round(sum(v) / len(v), 3) for k, v in seconds.items()},
        "same_answers": answers["plain"] == answers["prefill_once"],
    }
    result["time_saved"] = round(
        1 - result["mean_seconds_per_crystal"]["prefill_once"] / result["mean_seconds_per_crystal"]["plain"],
        3,
    )
    out = args.out or Path(__file__).resolve().parent / "results" / f"symmetry_decoding_{property_name}.json"
    write_result(out, result)


if __name__ == "__main__":
    main()
