"""Benchmark: do generated structures have the requested property?

    python benchmarks/property_hit.py --subset test-1k --limit 100 [--targets own|shuffled] \
        [--property band_gap|formation_energy_per_atom] [--guidance 0 1 2] [--tolerance 0.5] \
        [--out benchmarks/results/property_hit_mp20.json]

For each of the first ``--limit`` crystals of the MP-20 test subset, the Crystal DiT samples
one structure under the crystal's true space group and Wyckoff positions with a target of
``--property`` (``own``: the crystal's own value; ``shuffled``: the value of another test
crystal, a fixed permutation, so the target is not implied by the composition), in each mode:
unconditional (null condition), conditional, classifier-free guidance at each scale w, and
conditional + classifier guidance with the oracle's gradient at each ``--oracle-guidance`` scale
(by default with the library's safeguards: the cell volume is kept and the lattice and
coordinate shifts bounded; ``--oracle-safeguards off|both`` runs the unguarded Dhariwal & Nichol
form too).
The property oracle (``unimdm_jax.oracle``, trained on the policy train split) predicts the
property of every generated structure; a hit is a physically plausible structure
(``metrics.is_plausible``: MP-20-like volume per atom, no atoms closer than 0.5 A) with
|predicted - target| <= tolerance (default 0.5 eV for the band gap, 0.1 eV/atom for the
formation energy). Reported per mode: hit rate (all targets; for the band gap also targets
>= 0.5 eV, i.e. non-metals), mean absolute deviation from the target, the plausible fraction,
and the factor over the unconditional model. The Crystal DiT defaults to the packaged model
conditioned on ``--property``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import oracle_verdicts, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", default=None, help="default: ../shared/data/mp_20/test.csv.gz")
    parser.add_argument("--subset", default="test-1k")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--targets", default="own", choices=("own", "shuffled"))
    parser.add_argument(
        "--guidance", type=float, nargs="*", default=[1.0], help="classifier-free guidance scales"
    )
    parser.add_argument(
        "--oracle-guidance",
        type=float,
        nargs="*",
        default=[],
        help="classifier-guidance scales with the oracle's gradient (conditional + guided)",
    )
    parser.add_argument("--oracle-sigma", type=float, default=None, help="default: the tolerance")
    parser.add_argument(
        "--oracle-safeguards",
        default="on",
        choices=("on", "off", "both"),
        help="oracle guidance with the library's safeguards (on, the default: volume kept, lattice "
        "and coordinate shifts bounded), without them (off: Dhariwal & Nichol as published), or both",
    )
    parser.add_argument("--property", default="band_gap", choices=("band_gap", "formation_energy_per_atom"))
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="default 0.5 eV (band gap), 0.1 eV/atom (formation energy)",
    )
    parser.add_argument("--checkpoint", default=None, help="Crystal DiT (default: the embedded one)")
    parser.add_argument("--oracle", default=None, help="property oracle (default: the embedded one)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "property_hit_mp20.json"))
    args = parser.parse_args()

    from unimdm_jax.data import io
    from unimdm_jax.evaluate import load_rows
    from unimdm_jax.generation import (
        default_dit_path,
        load_crystal_dit,
        load_oracle_or_none,
        sample_under_records,
    )

    prop = args.property
    tolerance = args.tolerance if args.tolerance is not None else {"band_gap": 0.5}.get(prop, 0.1)
    sigma = args.oracle_sigma if args.oracle_sigma is not None else tolerance

    csv = Path(args.csv) if args.csv else io.mp20_dir() / "test.csv.gz"
    dataset, _ = load_rows(csv, args.subset, args.limit)
    records = [dataset[i].to_record(source="mp_20") for i in range(len(dataset))]
    own = np.asarray([r.property(prop) for r in records], np.float64)
    targets = own if args.targets == "own" else own[np.random.default_rng(20240601).permutation(len(own))]
    dit = load_crystal_dit(args.checkpoint or default_dit_path([prop]))
    if prop not in dit.properties:
        sys.exit(f"error: the Crystal DiT {dit.name} is not conditioned on {prop}")
    oracle = load_oracle_or_none(args.oracle)
    if oracle is None:
        sys.exit("error: no property oracle (train one: configs/oracle_mp20_cpu.py)")
    column = list(oracle.property_names).index(prop)

    # the oracle on the true test structures: how well it can tell hits at all
    true_structures = [dataset[i].structure() for i in range(len(dataset))]
    oracle_on_truth = np.asarray(oracle.predict_structures(true_structures))[:, column]

    # (name, classifier-free scale w (None: unconditional), oracle scale s, safeguards)
    modes = [("unconditional", None, 0.0, True), ("conditional", 0.0, 0.0, True)]
    modes += [(f"cfg_w{w:g}", w, 0.0, True) for w in args.guidance if w > 0]
    safeguard_options = {"on": [True], "off": [False], "both": [True, False]}[args.oracle_safeguards]
    modes += [
        (f"oracle_guided_s{s:g}" + ("" if bounded else "_unbounded"), 0.0, s, bounded)
        for s in args.oracle_guidance
        if s > 0
        for bounded in safeguard_options
    ]
    true_volume = np.asarray([s.volume / len(s) for s in true_structures])
    results, timings = {}, {}
    for name, w, scale, bounded in modes:
        condition = np.full((len(records), 1), np.nan) if w is None else targets[:, None]
        guided = (
            dict(
                oracle=oracle,
                oracle_property=prop,
                oracle_targets=targets,
                oracle_scale=scale,
                oracle_sigma=sigma,
                oracle_safeguards=bounded,
            )
            if scale > 0
            else {}
        )
        started = time.perf_counter()
        samples = sample_under_records(
            dit,
            records,
            [1] * len(records),
            condition,
            seed=args.seed,
            guidance_scale=w or 0.0,
            batch_size=args.batch_size,
            **guided,
        )
        timings[name] = round(time.perf_counter() - started, 1)
        structures = [s for s, _ in samples]
        predicted, sane, plausible = oracle_verdicts(oracle, structures, column)
        error = np.abs(predicted - targets)
        hit = (np.nan_to_num(error, nan=np.inf) <= tolerance) & plausible
        gapped = targets >= 0.5 if prop == "band_gap" else np.zeros(len(targets), bool)
        results[name] = {
            "hit_rate": float(hit.mean()),
            "hit_rate_targets_ge_0.5eV": float(hit[gapped].mean()) if gapped.any() else None,
            "mean_abs_deviation": float(np.nanmean(error)),
            "mean_abs_deviation_plausible": float(np.nanmean(error[plausible])) if plausible.any() else None,
            "sane_fraction": float(sane.mean()),
            "plausible_fraction": float(plausible.mean()),
            # generated / true volume per atom (sane cells): > 1 = inflated
            "median_volume_ratio": float(
                np.median([st.volume / len(st) / v for st, v, ok in zip(structures, true_volume, sane) if ok])
            )
            if sane.any()
            else None,
            "seconds": timings[name],
        }
    base = results["unconditional"]
    for _name, r in results.items():
        r["factor_over_unconditional"] = r["hit_rate"] / base["hit_rate"] if base["hit_rate"] > 0 else None
        key = "hit_rate_targets_ge_0.5eV"
        r["factor_over_unconditional_targets_ge_0.5eV"] = r[key] / base[key] if base[key] else None
    write_result(
        Path(args.out),
        {
            "benchmark": "property_hit",
            "data": f"{csv} ({args.subset}, first {len(records)} rows), true symmetry and composition",
            "targets": args.targets,
            "n": len(records),
            "property": prop,
            "unit": "eV" if prop == "band_gap" else "eV/atom",
            "n_targets_ge_0.5eV": int((targets >= 0.5).sum()) if prop == "band_gap" else None,
            "tolerance": tolerance,
            "oracle_sigma": sigma,
            "oracle_safeguards": args.oracle_safeguards,
            "crystal_dit": dit.name,
            "oracle": args.oracle or "unimdm_jax/checkpoints/oracle_mp20_cpu (packaged)",
            "oracle_mae_on_these_true_structures": float(np.mean(np.abs(oracle_on_truth - own))),
            "oracle_hit_rate_on_true_structures": float(np.mean(np.abs(oracle_on_truth - own) <= tolerance)),
            "modes": results,
        },
    )


if __name__ == "__main__":
    main()
