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

from unimdm_jax.parallel import process_pool


def crystal_structures(dataset, indices, frac_coords, lattice_params, graph_offsets):
    """pymatgen Structures of the sampled crystals of one batch (host side)."""
    from pymatgen.core import Lattice, Structure

    structures = []
    for position, index in enumerate(indices):
        start = graph_offsets[position]
        count = int(dataset.num_atoms[index])
        a0 = dataset.atom_offsets[index]
        species = [int(z) for z in dataset.atomic_numbers[a0 : a0 + count]]
        lattice = Lattice.from_parameters(*[float(v) for v in lattice_params[position]])
        structures.append(Structure(lattice, species, np.asarray(frac_coords[start : start + count], np.float64)))
    return structures


def sample_dataset(model, params, config, dataset, batch_size: int = 64, seed: int = 0, guidance_scale: float = 0.0,
                   step_lr: float = 1e-5, property_values=None, progress: bool = True, oracle_apply=None,
                   oracle_params=None, oracle_targets=None, oracle_property_index: int = 0,
                   classifier_scale: float = 0.0, classifier_sigma: float = 1.0,
                   classifier_safeguards: bool = True, as_arrays: bool = False, deadline: float | None = None,
                   steps: int | None = None):
    """Sample one structure for every crystal of ``dataset`` under its own symmetry.

    ``as_arrays``: return ``(frac_coords (n_atoms, 3), lattice_parameters (6,))`` per crystal
    instead of pymatgen Structures (no pymatgen needed: a machine with only JAX).
    ``steps``: sample in that many steps instead of the trained T (``objective.respace_schedules``).
    ``deadline`` (a ``time.perf_counter()`` value): stop after the batch that passes it; the
    crystals sampled so far, in order, are returned (fewer than ``len(dataset)``).

    All batches are padded to one budget, so the sampler compiles once. ``property_values``
    (G, P) overrides the dataset's properties as the condition (NaN = unconditional).
    Returns (structures, seconds per crystal over the batches after the first, which
    includes compilation; None when there is only one batch).

    Classifier guidance (off unless ``oracle_apply`` is given): ``oracle_apply(params, graphs,
    frac_coords, k) -> (G, P')`` and ``oracle_params`` are a property oracle, ``oracle_targets``
    (len(dataset),) the wanted value of its column ``oracle_property_index`` per crystal (NaN:
    unguided), ``classifier_scale`` the guidance weight and ``classifier_sigma`` the width of
    the Gaussian likelihood. ``classifier_safeguards`` (default): the lattice term keeps
    the cell volume (``gradients.oracle_guidance(keep_volume=True)``), and the lattice and
    coordinate terms are bounded per step (``sampler.MAX_LATTICE_SHIFT``,
    ``sampler.MAX_COORDINATE_SHIFT``); False: the unguarded form of Dhariwal & Nichol.
    """
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from unimdm_jax.data.batching import Budget, budget_for, graphs_from_dataset
    from unimdm_jax.gradients import oracle_guidance
    from unimdm_jax.lattice import k_to_lattice_params
    from unimdm_jax.objective import make_schedules, respace_schedules
    from unimdm_jax.sampler import MAX_COORDINATE_SHIFT, MAX_LATTICE_SHIFT, sample
    from unimdm_jax.train import property_columns

    if oracle_apply is not None and (oracle_params is None or oracle_targets is None):
        raise ValueError("classifier guidance needs oracle_params and oracle_targets with oracle_apply")
    columns = list(property_columns(config.model, dataset.property_names))
    batches = [np.arange(i, min(i + batch_size, len(dataset))) for i in range(0, len(dataset), batch_size)]
    budgets = [budget_for([dataset.num_atoms[b].astype(np.int64)], batch_size) for b in batches]
    budget = Budget(max(b.nodes for b in budgets), max(b.edges for b in budgets), batch_size + 1)
    schedules = make_schedules(config.diffusion)
    if steps is not None and steps != config.diffusion.timesteps:
        schedules = respace_schedules(schedules, steps)
    values = dataset.properties[:, columns] if property_values is None else np.asarray(property_values, np.float64)
    structures, sampling_seconds = [], 0.0
    bounds = dict(classifier_max_lattice_shift=MAX_LATTICE_SHIFT if classifier_safeguards else np.inf,
                  classifier_max_coordinate_shift=MAX_COORDINATE_SHIFT if classifier_safeguards else np.inf)
    key = jax.random.PRNGKey(seed)
    for number, indices in enumerate(tqdm(batches, desc="sample", unit="batch", disable=not progress, file=sys.stderr)):
        graphs = graphs_from_dataset(dataset, indices, budget)
        condition = np.zeros((budget.graphs, len(columns)), np.float32)
        use = np.zeros((budget.graphs, len(columns)), bool)
        condition[: len(indices)] = np.nan_to_num(values[indices])
        use[: len(indices)] = np.isfinite(values[indices])
        classifier = None
        if oracle_apply is not None:
            targets = np.full((budget.graphs,), np.nan, np.float32)
            targets[: len(indices)] = np.asarray(oracle_targets, np.float64)[indices]
            classifier = oracle_guidance(oracle_apply, oracle_params, targets, oracle_property_index, classifier_sigma,
                                         keep_volume=classifier_safeguards)
        started = time.perf_counter()
        x, k = sample(params, model, jax.tree_util.tree_map(jnp.asarray, graphs), jax.random.fold_in(key, number),
                      schedules, config.diffusion, jnp.asarray(condition), jnp.asarray(use),
                      guidance_scale=guidance_scale, step_lr=step_lr, classifier=classifier,
                      classifier_scale=classifier_scale, **bounds)
        x, lattice_params = jax.device_get((x, k_to_lattice_params(k)))
        if number > 0:  # the first batch includes compilation
            sampling_seconds += time.perf_counter() - started
        offsets = np.concatenate([[0], np.cumsum(graphs.n_node)])
        if as_arrays:
            structures += [(np.asarray(x[offsets[i]: offsets[i] + dataset.num_atoms[index]]), lattice_params[i])
                           for i, index in enumerate(indices)]
        else:
            structures += crystal_structures(dataset, indices, x, lattice_params, offsets)
        if deadline is not None and time.perf_counter() > deadline:
            break
    timed = len(structures) - len(batches[0])
    per_crystal = sampling_seconds / timed if timed > 0 else None  # None: only the compiling batch ran
    return structures, per_crystal


def _match_pair(pair):
    from unimdm_jax.data.io import structure_from_cif
    from unimdm_jax.metrics import match_rms

    cif, generated = pair
    return match_rms(structure_from_cif(cif), generated)


def match_all(reference_cifs, structures, processes: int | None = None, progress: bool = True):
    from tqdm.auto import tqdm

    pairs = list(zip(reference_cifs, structures))
    with process_pool(processes) as pool:
        return list(tqdm(pool.imap(_match_pair, pairs, chunksize=8), total=len(pairs), desc="match",
                         disable=not progress, file=sys.stderr))


def select_rows(dataset, subset: str, limit: int | None):
    from unimdm_jax.data.io import test_subset_indices

    rows = np.asarray([int(s.rsplit(":", 1)[1]) for s in dataset.source])
    keep = np.arange(len(dataset))
    if subset in ("test-1k", "test_1k"):
        keep = np.nonzero(np.isin(rows, test_subset_indices()))[0]
    elif subset != "all":
        raise ValueError(f"unknown subset {subset!r}: expected all or test-1k")
    if limit is not None:
        keep = keep[:limit]
    return dataset.select(keep)


def save_result(path, result: dict) -> None:
    """Write a benchmark result with the command, machine, git commit and date beside it
    (``benchmarks/_common.py``; plain JSON when installed without the benchmarks folder)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from _common import write_result
    except ImportError:
        Path(path).write_text(json.dumps(result, indent=2))
    else:
        write_result(Path(path), result)


def load_rows(csv, subset: str = "all", limit: int | None = None, workers: int | None = None):
    """(symmetrized dataset, failures) of the rows of ``csv`` that ``subset``/``limit`` pick.

    Uses the preprocessing cache when it holds the whole file; otherwise symmetrizes only
    the rows needed (a test-1k run need not preprocess all 9,046 test rows)."""
    from unimdm_jax.data.io import read_rows, test_subset_indices
    from unimdm_jax.data.preprocess import DEFAULT_SYMPREC, cache_key, default_cache_dir, preprocess_file, symmetrize_rows

    csv = Path(csv)
    if (default_cache_dir() / f"{csv.name}.{cache_key(csv, DEFAULT_SYMPREC)}.npz").exists():
        dataset, failures = preprocess_file(csv)
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
    parser.add_argument("--csv", required=True, help="CDVAE-format CSV (e.g. ../shared/data/mp_20/test.csv.gz)")
    parser.add_argument("--subset", default="all", help="all or test-1k")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale w")
    parser.add_argument("--step-lr", type=float, default=1e-5, help="Langevin corrector step size")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: the trained T; fewer re-space the schedules)")
    parser.add_argument("--processes", type=int, default=None, help="matching processes")
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument("--cif-dir", default=None, help="also write the generated CIFs here")
    args = parser.parse_args(argv)

    from unimdm_jax.checkpoint import CheckpointError, load_model
    from unimdm_jax.data.io import DatasetError, read_rows

    try:
        model, params, config, card = load_model(args.checkpoint)
        dataset, failures = load_rows(args.csv, args.subset, args.limit)
    except (CheckpointError, DatasetError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = {r.source: r.cif for r in read_rows([args.csv])}
    started = time.perf_counter()
    structures, seconds_per_crystal = sample_dataset(model, params, config, dataset, args.batch_size, args.seed,
                                                     args.guidance, args.step_lr, steps=args.steps)
    sample_wall = time.perf_counter() - started
    rms = match_all([rows[s] for s in dataset.source], structures, args.processes)
    matched = [r for r in rms if r is not None]
    n_total = len(dataset) + (len(failures) if args.subset == "all" and args.limit is None else 0)
    result = {
        "benchmark": "csp_true_symmetry",
        "match_rate": len(matched) / max(1, n_total),
        "rmse": float(np.mean(matched)) if matched else None,
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
        "sampling": {"timesteps": config.diffusion.timesteps, "steps": args.steps or config.diffusion.timesteps,
                     "batch_size": args.batch_size,
                     "seconds_per_crystal": seconds_per_crystal, "wall_seconds_including_compile": sample_wall},
    }
    if args.cif_dir:
        out = Path(args.cif_dir)
        out.mkdir(parents=True, exist_ok=True)
        for structure, material_id in zip(structures, dataset.material_id):
            structure.to(filename=str(out / f"{material_id}.cif"))
    if args.out:
        save_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("match_rate", "rmse", "n", "subset")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
