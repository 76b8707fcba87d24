"""Which half of a sample misses: the lattice or the coordinates (swap test, holdout).

    python benchmarks/lattice_or_coords.py --checkpoint unimdm_jax/checkpoints/dit_mp20_cpu \
        --max-space-group 15 -n 100 --steps 250 \
        --out benchmarks/results/lattice_or_coords/<name>.json

The Crystal DiT samples one structure per crystal (the first ``-n`` holdout crystals, val rows 1-1,000,
whose space group number is at most ``--max-space-group``: 15 keeps the triclinic and monoclinic ones),
and three structures are matched to the true one (StructureMatcher stol=0.5, angle_tol=10, ltol=0.3):

- ``sample``: the sample itself (the usual CSP score);
- ``true_lattice_sampled_coords``: the sample's fractional coordinates in the true conventional lattice;
- ``sampled_lattice_true_coords``: the true fractional coordinates in the sampled lattice.

Both swaps keep the sample's own setting of the Wyckoff positions (the record's), which the true
conventional cell shares, so a swap that matches means the other half was right. A swap can also fail
when the model chose an equivalent but different cell of the same lattice (monoclinic and triclinic
cells have several), so the swap rates are lower bounds on how often each half is right. About 4
minutes for 100 crystals at T=250 on the 2-core CPU alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from unimdm_jax.data import io
from unimdm_jax.provenance import write_result

KINDS = ("sample", "true_lattice_sampled_coords", "sampled_lattice_true_coords")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="unimdm_jax/checkpoints/dit_mp20_cpu")
    parser.add_argument("--csv", default=None, help="default: ../shared/data/mp_20/val.csv.gz (holdout rows)")
    parser.add_argument("--max-space-group", type=int, default=15)
    parser.add_argument("-n", type=int, default=100, help="crystals (the first that pass the filter)")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--step-lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import warnings

    from pymatgen.core import Lattice, Structure

    from unimdm_jax.checkpoint import load_model
    from unimdm_jax.dataset_sampling import sample_dataset
    from unimdm_jax.evaluate import load_rows
    from unimdm_jax.lattice import crystal_family
    from unimdm_jax.metrics import match_rms, match_summary

    csv = Path(args.csv) if args.csv else io.mp20_dir() / "val.csv.gz"
    holdout, _ = load_rows(csv, "all", io.HOLDOUT_SIZE)
    keep = np.nonzero(holdout.spacegroup <= args.max_space_group)[0][: args.n]
    dataset = holdout.select(keep)
    model, params, config, _ = load_model(args.checkpoint)
    samples, _ = sample_dataset(
        model, params, config, dataset, 100, args.seed, step_lr=args.step_lr, steps=args.steps, progress=False
    )
    cifs = {r.source: r.cif for r in io.read_rows([csv], limit=io.HOLDOUT_SIZE)}

    per_crystal = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (source, sample) in enumerate(zip(dataset.source, samples)):
            crystal = dataset[i]
            true = Structure.from_str(cifs[source], fmt="cif")
            conventional = Structure(
                Lattice.from_parameters(*crystal.lattice_parameters),
                list(crystal.atomic_numbers),
                crystal.frac_coords,
            )
            swap_lattice = Structure(conventional.lattice, sample.species, sample.frac_coords)
            swap_coords = Structure(sample.lattice, conventional.species, conventional.frac_coords)
            per_crystal.append(
                {
                    "material_id": crystal.material_id,
                    "space_group": crystal.spacegroup_number,
                    "family": crystal_family(crystal.spacegroup_number),
                    **{
                        kind: match_rms(true, s)
                        for kind, s in zip(KINDS, (sample, swap_lattice, swap_coords))
                    },
                }
            )
    groups = {"all": per_crystal}
    for row in per_crystal:
        groups.setdefault(row["family"], []).append(row)
    summary = {
        name: {
            "n": len(rows),
            **{kind: match_summary([r[kind] for r in rows])["match_rate"] for kind in KINDS},
        }
        for name, rows in groups.items()
    }
    result = {
        "benchmark": "lattice_or_coords",
        "checkpoint": args.checkpoint,
        "data": f"{csv} rows 1-{io.HOLDOUT_SIZE} (holdout): the first {len(keep)} of space group "
        f"<= {args.max_space_group}",
        "sampling": {"steps": args.steps, "step_lr": args.step_lr, "seed": args.seed},
        "match_rate": summary,
        "per_crystal": per_crystal,
    }
    if args.out:
        write_result(args.out, result)
    for family, row in summary.items():
        print(family, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
