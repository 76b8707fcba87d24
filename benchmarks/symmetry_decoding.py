"""Benchmark: seconds per crystal of the symmetry predictor, one decoding choice against another.

    python benchmarks/symmetry_decoding.py [--compare prefill|together] [--property formation_energy_per_atom]
        [--offset 8900] [--rows 16] [--rounds 2] [--threads 1]
        [--out benchmarks/results/symmetry_decoding_<property>[_together].json]

Reads ``--rows`` MP-20 rows from ``--csv`` (default: the test split; conventional-cell counts and the row's
true property, as ``python -m llm_torch.evaluate`` does) and predicts the top 5 of each with the embedded
model and the default ranking, in one process on the same thread(s), after one warm-up prediction,
alternating the two settings for ``--rounds`` rounds:

- ``--compare prefill`` (default): ``Predictor.prefill_once`` False / True (each prompt prefilled once
  per beam, or once);
- ``--compare together``: one ``predict`` call per row / one ``predict_many`` call for all the rows (their
  candidate groups' beam searches decoded together, 32 per ``generate`` call), as a screen runs stage 1.

Also checks that both settings return the same ranked hypotheses with the same log-probabilities
(``same_answers``). About 2 x rounds x rows x 3.5 s on one core of the 2-core development CPU (16 rows,
2 rounds: ~4 min).
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
    parser.add_argument("--compare", choices=("prefill", "together"), default="prefill")
    parser.add_argument("--property", default="formation_energy_per_atom")
    parser.add_argument("--offset", type=int, default=8900)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-batch", type=int, default=32, help="--compare together: items per generate call"
    )
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

    settings = ("plain", "prefill_once") if args.compare == "prefill" else ("one_at_a_time", "together")
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    answers: dict[str, list] = {}
    for _ in range(args.rounds):
        for name in settings:
            predictor.prefill_once = name != "plain"
            start = time.perf_counter()
            if name == "together":
                predictions = predictor.predict_many(
                    [(spec, property_name, value) for spec, value in inputs], max_batch=args.max_batch
                )
            else:
                predictions = [predictor.predict(spec, property_name, value) for spec, value in inputs]
            seconds[name].append((time.perf_counter() - start) / len(inputs))
            answers[name] = [
                [(h.space_group, h.assignment, h.logprob) for h in p.hypotheses] for p in predictions
            ]
    first, second = settings
    result = {
        "benchmark": f"symmetry predictor, seconds per crystal (top 5, default ranking), {first} vs {second}",
        "model": str(model_dir.name),
        "data": {"csv": args.csv, "offset": args.offset, "rows": len(inputs), "property": property_name},
        "threads": args.threads,
        **({"max_batch": args.max_batch} if args.compare == "together" else {}),
        "seconds_per_crystal": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "mean_seconds_per_crystal": {k: round(sum(v) / len(v), 3) for k, v in seconds.items()},
        "same_answers": _same(answers[first], answers[second], 0.0 if args.compare == "prefill" else 1e-4),
    }
    result["time_saved"] = round(
        1 - result["mean_seconds_per_crystal"][second] / result["mean_seconds_per_crystal"][first], 3
    )
    suffix = "" if args.compare == "prefill" else f"_{args.compare}"
    out = (
        args.out
        or Path(__file__).resolve().parent / "results" / f"symmetry_decoding_{property_name}{suffix}.json"
    )
    write_result(out, result)


def _same(a: list, b: list, tolerance: float = 1e-4) -> bool:
    """The same hypotheses in the same order, log-probabilities equal up to ``tolerance`` (a batch of
    another shape may reduce in another order)."""
    return len(a) == len(b) and all(
        len(x) == len(y) and all(hx[:2] == hy[:2] and abs(hx[2] - hy[2]) <= tolerance for hx, hy in zip(x, y))
        for x, y in zip(a, b)
    )


if __name__ == "__main__":
    main()
