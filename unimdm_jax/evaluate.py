"""Crystal structure prediction benchmark (the paper's table): true space group and Wyckoff
positions, true property as the condition; match rate and RMSE against the source structure.

    python -m unimdm_jax.evaluate --checkpoint DIR --csv FILE [--limit N] [--subset test-1k]
        [--batch-size 64] [--guidance 0] [--out benchmarks/results/dit_csp_mp20.json]

``test-1k`` is the fixed 1,000-row subset of the MP-20 test split defined by
``unimdm_jax.data.io.test_subset_indices`` (rows ``sorted(default_rng(20240601).choice(9046,
1000, replace=False))``), for CPU-sized runs; the full 9,046 rows when a GPU is available.
Matching (StructureMatcher stol=0.5, angle_tol=10, ltol=0.3; see ``unimdm_jax.metrics``)
runs in parallel processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unimdm_jax.checkpoint import CheckpointError, load_model
from unimdm_jax.data.io import DatasetError, read_rows, structure_from_cif, test_subset_indices
from unimdm_jax.data.preprocess import (
    DEFAULT_SYMPREC,
    cache_key,
    default_cache_dir,
    preprocess_file,
    symmetrize_rows,
)
from unimdm_jax.dataset_sampling import sample_dataset
from unimdm_jax.metrics import match_rms, match_summary
from unimdm_jax.parallel import process_pool
from unimdm_jax.provenance import write_result


def _match_pair(pair):
    cif, generated = pair
    return match_rms(structure_from_cif(cif), generated)


def match_all(reference_cifs, structures, processes: int | None = None, progress: bool = True):
    pairs = list(zip(reference_cifs, structures))
    with process_pool(processes) as pool:
        return list(
            tqdm(
                pool.imap(_match_pair, pairs, chunksize=8),
                total=len(pairs),
                desc="match",
                disable=not progress,
                file=sys.stderr,
            )
        )


def select_rows(dataset, subset: str, limit: int | None):
    rows = np.asarray([int(s.rsplit(":", 1)[1]) for s in dataset.source])
    keep = np.arange(len(dataset))
    if subset in ("test-1k", "test_1k"):
        keep = np.nonzero(np.isin(rows, test_subset_indices()))[0]
    elif subset != "all":
        raise ValueError(f"unknown subset {subset!r}: expected all or test-1k")
    if limit is not None:
        keep = keep[:limit]
    return dataset.select(keep)


def load_rows(csv, subset: str = "all", limit: int | None = None, workers: int | None = None):
    """(symmetrized dataset, failures) of the rows of ``csv`` that ``subset``/``limit`` pick.

    Uses the preprocessing cache when it holds the whole file; otherwise symmetrizes only
    the rows needed (a test-1k run need not preprocess all 9,046 test rows). A run that needs
    the whole file symmetrizes it through the cache, so the next run finds it there."""
    csv = Path(csv)
    cached = (default_cache_dir() / f"{csv.name}.{cache_key(csv, DEFAULT_SYMPREC)}.npz").exists()
    if cached or (subset == "all" and limit is None):
        dataset, failures = preprocess_file(csv, workers=workers)
        return select_rows(dataset, subset, limit), failures
    if subset not in ("all", "test-1k", "test_1k"):
        raise ValueError(f"unknown subset {subset!r}: expected all or test-1k")
    rows = read_rows([csv])
    if subset != "all":
        wanted = set(test_subset_indices().tolist())
        rows = [r for r in rows if int(r.source.rsplit(":", 1)[1]) in wanted]
    rows = rows[:limit] if limit is not None else rows
    return symmetrize_rows(rows, workers)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unimdm_jax.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="exported checkpoint folder or training work dir")
    parser.add_argument(
        "--csv", required=True, help="CDVAE-format CSV (e.g. ../shared/data/mp_20/test.csv.gz)"
    )
    parser.add_argument("--subset", default="all", help="all or test-1k")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale w")
    parser.add_argument("--step-lr", type=float, default=1e-5, help="Langevin corrector step size")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampling steps (default: the trained T; fewer re-space the schedules)",
    )
    parser.add_argument("--processes", type=int, default=None, help="matching processes")
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument("--cif-dir", default=None, help="also write the generated CIFs here")
    args = parser.parse_args(argv)

    try:
        model, params, config, card = load_model(args.checkpoint)
        dataset, failures = load_rows(args.csv, args.subset, args.limit)
    except (CheckpointError, DatasetError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = {r.source: r.cif for r in read_rows([args.csv])}
    started = time.perf_counter()
    structures, seconds_per_crystal = sample_dataset(
        model,
        params,
        config,
        dataset,
        args.batch_size,
        args.seed,
        args.guidance,
        args.step_lr,
        steps=args.steps,
    )
    sample_wall = time.perf_counter() - started
    rms = match_all([rows[s] for s in dataset.source], structures, args.processes)
    n_total = len(dataset) + (len(failures) if args.subset == "all" and args.limit is None else 0)
    result = {
        "benchmark": "csp_true_symmetry",
        **match_summary(rms, n_total),
        "n": n_total,
        "n_symmetry_failures": n_total - len(dataset),
        "subset": args.subset,
        "limit": args.limit,
        "csv": str(args.csv),
        "checkpoint": str(args.checkpoint),
        "config": {"model": config.model.__dict__, "diffusion": config.diffusion.__dict__},
        "training": card.get("training"),
        "guidance_scale": args.guidance,
        "step_lr": args.step_lr,
        "sampling": {
            "timesteps": config.diffusion.timesteps,
            "steps": args.steps or config.diffusion.timesteps,
            "batch_size": args.batch_size,
            "seconds_per_crystal": seconds_per_crystal,
            "wall_seconds_including_compile": sample_wall,
        },
        # one entry per sampled crystal, in row order: RMS displacement, or None when not matched
        "per_crystal": [{"material_id": str(m), "rms": r} for m, r in zip(dataset.material_id, rms)],
    }
    if args.cif_dir:
        out = Path(args.cif_dir)
        out.mkdir(parents=True, exist_ok=True)
        for structure, material_id in zip(structures, dataset.material_id):
            structure.to(filename=str(out / f"{material_id}.cif"))
    if args.out:
        write_result(args.out, result)
    print(
        json.dumps({k: result[k] for k in ("match_rate", "match_rate_se", "rmse", "rmse_se", "n", "subset")})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
