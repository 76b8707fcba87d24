"""The property oracle: does a generated structure have the requested property?

    python -m unimdm_jax.oracle evaluate [--checkpoint DIR] --split test [--limit N]
        [--batch-size 64] [--out benchmarks/results/oracle_mp20.json]

reports the MAE per property and how often the oracle orders two polymorphs of one formula
as the data do (``polymorph_ordering``).

In Python::

    oracle = load_oracle()                       # the packaged checkpoint
    oracle.property_names                        # ("band_gap", "formation_energy_per_atom")
    oracle.predict_structures(structures)        # (n, P) numpy, eV and eV/atom
    jax.grad(lambda x, k: oracle.apply(oracle.params, graphs, x, k)[:, 0].sum(), (0, 1))

``apply(params, graphs, frac_coords, k)`` is the network itself (``PropertyOracle`` in
``unimdm_jax.model.property_net``), a pure function of the fractional coordinates and the
O(3)-invariant lattice k-vector (``unimdm_jax.lattice``), for classifier guidance during sampling.

The oracle was trained on conventional standard cells (the preprocessing's symmetrized
cells). Its features are fractional (not Cartesian distances), so the same crystal given as
a primitive cell or a supercell is a different input; ``predict_structures`` therefore
converts each structure to its conventional standard cell first (``standardize=True``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from tqdm.auto import tqdm

from unimdm_jax.checkpoint import PACKAGED, CheckpointError, load_model
from unimdm_jax.config import property_columns
from unimdm_jax.data import preprocess
from unimdm_jax.data.batching import PaddedBatches, graphs_from_dataset
from unimdm_jax.data.io import DatasetError
from unimdm_jax.data.preprocess import PROPERTY_NAMES, CrystalDataset
from unimdm_jax.errors import one_line
from unimdm_jax.metrics import is_sane
from unimdm_jax.model import PropertyOracle
from unimdm_jax.objective import clean_k
from unimdm_jax.provenance import write_result
from unimdm_jax.schema import KNOWN_PROPERTY_UNITS

DEFAULT_CHECKPOINT = PACKAGED / "oracle_mp20_cpu"
STANDARDIZE_SYMPREC = 0.01  # the preprocessing's first tolerance (data.symmetry.DEFAULT_SYMPREC)


def conventional_standard(structure, symprec: float = STANDARDIZE_SYMPREC):
    """The conventional standard cell of a structure (the setting the oracle was trained on);
    the structure itself where spglib fails (e.g. overlapping atoms)."""

    try:
        return SpacegroupAnalyzer(structure, symprec=symprec).get_conventional_standard_structure()
    except Exception:  # noqa: BLE001 - spglib raises various errors on bad input
        return structure


def dataset_from_structures(structures):
    """A ``CrystalDataset`` of pymatgen Structures as they are (no symmetrization): space
    group 1, identity Wyckoff operations, every atom its own anchor, unknown properties.
    ``batching.graphs_from_dataset`` turns it into the padded batches the models read."""

    atomic_numbers, frac_coords, num_atoms = [], [], []
    for index, structure in enumerate(structures):
        if not structure.is_ordered:
            raise ValueError(
                f"structure {index} is disordered (partial occupancies); "
                "the oracle needs one element per site"
            )
        atomic_numbers.append(np.asarray([site.specie.Z for site in structure], np.int32))
        frac_coords.append(np.mod(np.asarray(structure.frac_coords, np.float64), 1.0))
        num_atoms.append(len(structure))
    num_atoms = np.asarray(num_atoms, np.int32)
    total = int(num_atoms.sum())
    within_crystal = (
        np.concatenate([np.arange(n) for n in num_atoms]).astype(np.int32) if total else np.zeros(0, np.int32)
    )
    count = len(num_atoms)
    return CrystalDataset(
        material_id=np.asarray([str(i) for i in range(count)], dtype=str),
        source=np.asarray([f"structures:{i}" for i in range(count)], dtype=str),
        spacegroup=np.ones(count, np.int32),
        lattice_parameters=np.asarray([s.lattice.parameters for s in structures], np.float64).reshape(-1, 6),
        num_atoms=num_atoms,
        symprec=np.full(count, np.nan),
        property_names=PROPERTY_NAMES,
        properties=np.full((count, len(PROPERTY_NAMES)), np.nan),
        sites_json=np.asarray(["[]"] * count, dtype=str),
        atomic_numbers=np.concatenate(atomic_numbers) if count else np.zeros(0, np.int32),
        frac_coords=(np.concatenate(frac_coords) if count else np.zeros((0, 3))).astype(np.float32),
        wyckoff_ops=np.broadcast_to(np.eye(4, dtype=np.float32), (total, 4, 4)).copy(),
        anchor_index=within_crystal,
        ops_rotation_pinv=np.broadcast_to(np.eye(3, dtype=np.float32), (total, 3, 3)).copy(),
        site_index=within_crystal,
    )


def graphs_from_structures(structures, budget=None):
    """One padded jraph batch (numpy, host side) of pymatgen Structures, in the format of
    ``unimdm_jax.data.batching.graphs_from_dataset``."""

    return graphs_from_dataset(dataset_from_structures(structures), np.arange(len(structures)), budget)


@functools.lru_cache(maxsize=8)
def _jitted_predictor(model_config):
    """jit(params, graphs -> predictions), shared by all oracles with this (frozen, hashable)
    model config, so loading the same model twice does not compile twice."""

    model = PropertyOracle(model_config)
    return jax.jit(
        lambda params, graphs: model.apply(params, graphs, graphs.nodes["frac_coords"], clean_k(graphs))
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Oracle:
    """A loaded property oracle: the module, its parameters, its config and model card."""

    model: Any  # PropertyOracle
    params: Any
    config: Any  # config.TrainConfig with task "property"
    card: dict

    @property
    def property_names(self) -> tuple[str, ...]:
        return tuple(self.config.model.properties)

    def apply(self, params, graphs, frac_coords, k):
        """(G, P) predictions in physical units; pure in (params, frac_coords, k)."""
        return self.model.apply(params, graphs, frac_coords, k)

    @property
    def _predict_graphs(self):
        return _jitted_predictor(self.model.config)

    def predict_dataset(self, dataset, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(dataset), P) predictions for the crystals of a ``CrystalDataset``. Every batch
        has batch_size + 1 graphs and node/edge budgets from the batching ladder, so jit
        compiles one program per rung that occurs (a handful), not one per batch."""

        predictions = np.zeros((len(dataset), len(self.property_names)), np.float32)
        batches = PaddedBatches(dataset, batch_size, common_budget=False)
        for indices, graphs in tqdm(
            batches, desc="oracle", unit="batch", disable=not progress, file=sys.stderr
        ):
            values = self._predict_graphs(self.params, jax.tree_util.tree_map(jnp.asarray, graphs))
            predictions[indices] = np.asarray(values)[: len(indices)]
        return predictions

    def predict_structures(self, structures, batch_size: int = 64, standardize: bool = True) -> np.ndarray:
        """(n, P) predictions (columns: ``property_names``) for pymatgen Structures; NaN rows
        for cells that are not ``metrics.is_sane`` (non-finite or collapsed: a diverged
        sampler's output, which the oracle cannot featurize and spglib can crash the process on)."""

        structures = list(structures)
        predictions = np.full((len(structures), len(self.property_names)), np.nan, np.float32)
        sane = [i for i, s in enumerate(structures) if is_sane(s)]
        if sane:
            chosen = [structures[i] for i in sane]
            if standardize:
                chosen = [conventional_standard(s) for s in chosen]
            predictions[sane] = self.predict_dataset(dataset_from_structures(chosen), batch_size)
        return predictions


def load_oracle(path: Path | str | None = None) -> Oracle:
    """The oracle of an exported folder or a training work dir (default: the packaged
    checkpoint). Raises ``CheckpointError`` when it is missing, corrupt or not an oracle."""

    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    model, params, config, card = load_model(path)
    if config.task != "property":
        raise CheckpointError(f"{path} is a {config.task!r} checkpoint, not a property oracle")
    return Oracle(model, params, config, card)


def mean_absolute_errors(predictions, targets, names) -> dict:
    """MAE, RMSE and count per property over the rows whose target is known."""
    result = {}
    for column, name in enumerate(names):
        known = np.isfinite(targets[:, column])
        error = predictions[known, column] - targets[known, column]
        result[name] = {
            "mae": float(np.mean(np.abs(error))) if known.any() else None,
            "rmse": float(np.sqrt(np.mean(error**2))) if known.any() else None,
            "n": int(known.sum()),
        }
    return result


#: Smallest difference of a property between two polymorphs for their pair to count in
#: :func:`polymorph_ordering`: the polymorph-steering benchmark's 1 eV for the band gap; MP-20 keeps
#: only crystals within 0.08 eV/atom of the hull, so its polymorphs differ by less than that in
#: formation energy.
POLYMORPH_MIN_DIFFERENCE = {"band_gap": 1.0, "formation_energy_per_atom": 0.02}


def reduced_formula_keys(atomic_numbers, num_atoms) -> list[tuple]:
    """One hashable key per crystal: its sorted (Z, count / gcd) pairs, so that two cells of
    the same reduced formula (polymorphs, or one cell and its supercell) share a key."""
    offsets = np.concatenate([[0], np.cumsum(num_atoms)]).astype(np.int64)
    keys = []
    for start, stop in zip(offsets[:-1], offsets[1:]):
        elements, counts = np.unique(np.asarray(atomic_numbers[start:stop]), return_counts=True)
        divisor = np.gcd.reduce(counts) if len(counts) else 1
        keys.append(tuple((int(z), int(c // divisor)) for z, c in zip(elements, counts)))
    return keys


def polymorph_ordering(predictions, targets, keys, min_difference: float) -> dict:
    """Does the oracle order polymorphs as the data do? Over every pair of crystals with the
    same reduced formula whose targets differ by more than ``min_difference``: the fraction
    whose predicted difference has the target difference's sign (0.5 = chance). This is what
    property-aware selection among polymorphs needs, which a small MAE does not guarantee."""
    predictions, targets = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        if np.isfinite(targets[i]) and np.isfinite(predictions[i]):
            groups.setdefault(key, []).append(i)
    right = pairs = 0
    formulas = 0
    for members in groups.values():
        index = np.asarray(members)
        target_difference = targets[index][:, None] - targets[index][None, :]
        predicted_difference = predictions[index][:, None] - predictions[index][None, :]
        counted = target_difference > min_difference  # each unordered pair once
        pairs += int(counted.sum())
        right += int((predicted_difference[counted] > 0).sum())
        formulas += int(counted.any())
    return {
        "ordering_accuracy": right / pairs if pairs else None,
        "pairs": pairs,
        "formulas": formulas,
        "min_difference": min_difference,
    }


def evaluate(oracle: Oracle, dataset, batch_size: int = 64, progress: bool = True) -> dict:
    """Errors of the oracle on a preprocessed split, and of the constant predictor that
    always answers the training-split mean (stored in the config) for scale."""

    columns = list(property_columns(oracle.config.model, dataset.property_names))
    targets = dataset.properties[:, columns]
    started = time.perf_counter()
    predictions = oracle.predict_dataset(dataset, batch_size, progress)
    seconds = time.perf_counter() - started
    constant = np.broadcast_to(np.asarray(oracle.config.model.target_mean, np.float64), targets.shape)
    keys = reduced_formula_keys(dataset.atomic_numbers, dataset.num_atoms)
    ordering = {
        name: polymorph_ordering(
            predictions[:, column], targets[:, column], keys, POLYMORPH_MIN_DIFFERENCE.get(name, 0.0)
        )
        for column, name in enumerate(oracle.property_names)
    }
    return {
        "metrics": mean_absolute_errors(predictions, targets, oracle.property_names),
        "polymorph_ordering": ordering,
        "training_mean_baseline": mean_absolute_errors(constant, targets, oracle.property_names),
        "wall_seconds_including_compile": round(seconds, 2),
    }


SPLITS = ("train", "holdout", "test", "test-1k")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unimdm_jax.oracle", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="MAE per property on an MP-20 policy split")
    ev.add_argument(
        "--checkpoint",
        default=None,
        help=f"exported folder or training work dir (default: {DEFAULT_CHECKPOINT})",
    )
    ev.add_argument("--split", required=True, help=", ".join(SPLITS))
    ev.add_argument("--limit", type=int, default=None, help="only the first N crystals of the split")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--data-root", default=None, help="default: unimdm_jax.data.io.default_data_root()")
    ev.add_argument("--out", default=None, help="JSON results file (with command, machine, commit, date)")
    ev.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.split not in SPLITS:
        print(f"error: unknown split {args.split!r}: expected one of {', '.join(SPLITS)}", file=sys.stderr)
        return 1
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return 1
    try:
        oracle = load_oracle(args.checkpoint)
        dataset, failures = preprocess.load_policy_split(
            args.split, args.data_root, progress=not args.no_progress
        )
    except (CheckpointError, DatasetError, ValueError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    if args.limit is not None:
        dataset = dataset.select(np.arange(min(args.limit, len(dataset))))
    result = {
        "benchmark": "property_oracle",
        "split": args.split,
        "limit": args.limit,
        "n": len(dataset),
        "n_symmetry_failures_excluded": len(failures) if args.limit is None else None,
        "checkpoint": args.checkpoint or "unimdm_jax/checkpoints/oracle_mp20_cpu (packaged)",
        "units": dict(KNOWN_PROPERTY_UNITS),
        **evaluate(oracle, dataset, args.batch_size, progress=not args.no_progress),
        "model": dataclasses.asdict(oracle.config.model),
        "training": oracle.card.get("training"),
    }
    if args.out:
        write_result(args.out, result)
    print(
        json.dumps(
            {
                "split": args.split,
                "n": len(dataset),
                "mae": {name: m["mae"] for name, m in result["metrics"].items()},
                "polymorph_ordering": {
                    name: m["ordering_accuracy"] for name, m in result["polymorph_ordering"].items()
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
