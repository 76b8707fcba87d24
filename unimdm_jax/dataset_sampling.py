"""Batched sampling of a dataset's crystals under their own symmetry (the library's sampling loop).

``sample_dataset`` pads every batch to one budget (one compilation), conditions on the
dataset's properties (or given values), optionally adds classifier guidance, and returns
pymatgen Structures or plain arrays. ``unimdm_jax.generation`` (the public API),
``unimdm_jax.evaluate`` (the CSP benchmark) and ``unimdm_jax.remote`` use it.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from unimdm_jax.config import property_columns
from unimdm_jax.data.batching import PaddedBatches
from unimdm_jax.guidance import oracle_guidance
from unimdm_jax.lattice import k_to_lattice_params
from unimdm_jax.objective import make_schedules, respace_schedules
from unimdm_jax.reverse_diffusion import MAX_COORDINATE_SHIFT, MAX_LATTICE_SHIFT, sample


def crystal_structures(dataset, indices, frac_coords, lattice_params, graph_offsets):
    """pymatgen Structures of the sampled crystals of one batch (host side)."""
    from pymatgen.core import Lattice, Structure  # pymatgen only here: as_arrays runs on a JAX-only machine

    structures = []
    for position, index in enumerate(indices):
        start = graph_offsets[position]
        count = int(dataset.num_atoms[index])
        a0 = dataset.atom_offsets[index]
        species = [int(z) for z in dataset.atomic_numbers[a0 : a0 + count]]
        lattice = Lattice.from_parameters(*[float(v) for v in lattice_params[position]])
        structures.append(
            Structure(lattice, species, np.asarray(frac_coords[start : start + count], np.float64))
        )
    return structures


def sample_dataset(
    model,
    params,
    config,
    dataset,
    batch_size: int = 64,
    seed: int = 0,
    guidance_scale: float = 0.0,
    step_lr: float = 1e-5,
    property_values=None,
    progress: bool = True,
    oracle_apply=None,
    oracle_params=None,
    oracle_targets=None,
    oracle_property_index: int = 0,
    classifier_scale: float = 0.0,
    classifier_sigma: float = 1.0,
    classifier_safeguards: bool = True,
    as_arrays: bool = False,
    deadline: float | None = None,
    steps: int | None = None,
):
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
    the cell volume (``guidance.oracle_guidance(keep_volume=True)``), and the lattice and
    coordinate terms are bounded per step (``reverse_diffusion.MAX_LATTICE_SHIFT``,
    ``reverse_diffusion.MAX_COORDINATE_SHIFT``); False: the unguarded form of Dhariwal & Nichol.
    """
    if oracle_apply is not None and (oracle_params is None or oracle_targets is None):
        raise ValueError("classifier guidance needs oracle_params and oracle_targets with oracle_apply")
    columns = list(property_columns(config.model, dataset.property_names))
    batches = PaddedBatches(dataset, batch_size)
    budget = batches.budget
    schedules = make_schedules(config.diffusion)
    if steps is not None and steps != config.diffusion.timesteps:
        schedules = respace_schedules(schedules, steps)
    values = (
        dataset.properties[:, columns] if property_values is None else np.asarray(property_values, np.float64)
    )
    structures, sampling_seconds = [], 0.0
    bounds = dict(
        classifier_max_lattice_shift=MAX_LATTICE_SHIFT if classifier_safeguards else np.inf,
        classifier_max_coordinate_shift=MAX_COORDINATE_SHIFT if classifier_safeguards else np.inf,
    )
    key = jax.random.PRNGKey(seed)
    for number, (indices, graphs) in enumerate(
        tqdm(batches, desc="sample", unit="batch", disable=not progress, file=sys.stderr)
    ):
        condition = np.zeros((budget.graphs, len(columns)), np.float32)
        use = np.zeros((budget.graphs, len(columns)), bool)
        condition[: len(indices)] = np.nan_to_num(values[indices])
        use[: len(indices)] = np.isfinite(values[indices])
        classifier = None
        if oracle_apply is not None:
            targets = np.full((budget.graphs,), np.nan, np.float32)
            targets[: len(indices)] = np.asarray(oracle_targets, np.float64)[indices]
            classifier = oracle_guidance(
                oracle_apply,
                oracle_params,
                targets,
                oracle_property_index,
                classifier_sigma,
                keep_volume=classifier_safeguards,
            )
        started = time.perf_counter()
        x, k = sample(
            params,
            model,
            jax.tree_util.tree_map(jnp.asarray, graphs),
            jax.random.fold_in(key, number),
            schedules,
            config.diffusion,
            jnp.asarray(condition),
            jnp.asarray(use),
            guidance_scale=guidance_scale,
            step_lr=step_lr,
            classifier=classifier,
            classifier_scale=classifier_scale,
            **bounds,
        )
        x, lattice_params = jax.device_get((x, k_to_lattice_params(k)))
        if number > 0:  # the first batch includes compilation
            sampling_seconds += time.perf_counter() - started
        offsets = np.concatenate([[0], np.cumsum(graphs.n_node)])
        if as_arrays:
            structures += [
                (np.asarray(x[offsets[i] : offsets[i] + dataset.num_atoms[index]]), lattice_params[i])
                for i, index in enumerate(indices)
            ]
        else:
            structures += crystal_structures(dataset, indices, x, lattice_params, offsets)
        if deadline is not None and time.perf_counter() > deadline:
            break
    timed = len(structures) - len(batches.indices[0])
    per_crystal = sampling_seconds / timed if timed > 0 else None  # None: only the compiling batch ran
    return structures, per_crystal
