"""Batching crystals into padded ``jraph.GraphsTuple``s for jit.

Every crystal is a fully connected graph (all ordered pairs of distinct atoms of its
conventional cell). A batch of ``batch_size`` crystals is padded with one extra padding
graph to node and edge budgets drawn from a fixed ladder (32, 48, 64, 96, 128, ...: each
rung at most 1.5x the previous), so ``jit`` compiles one program per (node rung, edge rung)
pair that actually occurs. With MP-20 conventional cells and batch 64 that is a handful of
shapes per run (``count_shapes`` measures it; the test suite checks the bound).

For data parallelism a batch is split into ``num_shards`` equal sub-batches padded to
*common* budgets and stacked on a leading axis, so one array of shape
``(num_shards, ...)`` can be laid out over the devices of a mesh.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import jax
import jraph
import numpy as np

from unimdm_jax.data.preprocess import CrystalDataset

PADDING_POSITION = 2**30  # position of padding graphs (masked; any fixed value works)


def budget_ladder(value: int, minimum: int = 32) -> int:
    """Smallest rung >= value of the ladder {2^k, 3 * 2^(k-1)} starting at ``minimum`` (>= 2)."""
    if minimum < 2:
        raise ValueError(f"the ladder needs a minimum of at least 2, got {minimum}")
    rung = minimum
    while rung < value:
        rung = rung * 3 // 2 if (rung & (rung - 1)) == 0 else rung * 4 // 3
    return rung


@functools.lru_cache(maxsize=512)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Senders and receivers of the complete directed graph on n nodes, without self-loops."""
    senders, receivers = np.nonzero(~np.eye(n, dtype=bool))
    return senders.astype(np.int32), receivers.astype(np.int32)


def num_edges(num_atoms: np.ndarray) -> np.ndarray:
    return num_atoms * (num_atoms - 1)


@dataclasses.dataclass(frozen=True)
class Budget:
    nodes: int
    edges: int
    graphs: int  # real graphs + 1 padding graph


def budget_for(num_atoms_per_shard: list[np.ndarray], batch_size: int) -> Budget:
    nodes = max(int(n.sum()) for n in num_atoms_per_shard) + 1  # +1: the padding graph's node
    edges = max(int(num_edges(n).sum()) for n in num_atoms_per_shard)
    return Budget(budget_ladder(nodes), budget_ladder(max(edges, 1)), batch_size + 1)


def graphs_from_dataset(
    dataset: CrystalDataset, indices, budget: Budget | None = None, first_position: int = 0
) -> jraph.GraphsTuple:
    """One padded GraphsTuple holding the crystals ``indices`` (numpy arrays, host side).

    nodes:   atomic_numbers, frac_coords, wyckoff_ops, ops_rotation_pinv,
             anchor (index of the anchor atom in this batch), mask
    globals: lattice_parameters, spacegroup, properties (NaN -> 0), property_mask, mask,
             position (index of the crystal in the global batch, from ``first_position``;
             per-crystal random keys derive from it)
    The last graph (and every graph past the real ones) is padding.
    """

    indices = np.asarray(indices, dtype=np.int64)
    counts = dataset.num_atoms[indices].astype(np.int64)
    if budget is None:
        budget = budget_for([counts], len(indices))
    if len(indices) + 1 > budget.graphs:
        raise ValueError(f"{len(indices)} crystals do not fit a budget of {budget.graphs - 1} graphs")
    offsets = dataset.atom_offsets
    atoms = (
        np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices])
        if len(indices)
        else np.zeros(0, int)
    )
    n_real, e_real = int(counts.sum()), int(num_edges(counts).sum())
    if n_real + 1 > budget.nodes or e_real > budget.edges:
        raise ValueError(f"batch of {n_real} atoms / {e_real} edges exceeds budget {budget}")

    def pad(array, size, fill=0):
        out = np.full((size, *array.shape[1:]), fill, dtype=array.dtype)
        out[: len(array)] = array
        return out

    node_offsets = np.concatenate([[0], np.cumsum(counts)])
    anchor = dataset.anchor_index[atoms] + np.repeat(node_offsets[:-1], counts)
    senders, receivers = [], []
    for start, n in zip(node_offsets[:-1], counts):
        s, r = _pairs(int(n))
        senders.append(s + start)
        receivers.append(r + start)
    pad_node = n_real  # padding edges connect the padding graph's first node to itself
    senders = pad(np.concatenate(senders) if senders else np.zeros(0, np.int32), budget.edges, pad_node)
    receivers = pad(np.concatenate(receivers) if receivers else np.zeros(0, np.int32), budget.edges, pad_node)

    n_node = np.zeros(budget.graphs, np.int32)
    n_node[: len(indices)] = counts
    n_node[len(indices)] = budget.nodes - n_real
    n_edge = np.zeros(budget.graphs, np.int32)
    n_edge[: len(indices)] = num_edges(counts)
    n_edge[len(indices)] = budget.edges - e_real

    identity_op = np.eye(4, dtype=np.float32)
    nodes = {
        "atomic_numbers": pad(dataset.atomic_numbers[atoms].astype(np.int32), budget.nodes),
        "frac_coords": pad(dataset.frac_coords[atoms].astype(np.float32), budget.nodes),
        "wyckoff_ops": pad(dataset.wyckoff_ops[atoms], budget.nodes),
        "ops_rotation_pinv": pad(dataset.ops_rotation_pinv[atoms], budget.nodes),
        "anchor": pad(anchor.astype(np.int32), budget.nodes, pad_node),
        "mask": pad(np.ones(n_real, bool), budget.nodes, False),
    }
    nodes["wyckoff_ops"][n_real:] = identity_op  # padding atoms are their own anchors
    nodes["ops_rotation_pinv"][n_real:] = identity_op[:3, :3]
    nodes["anchor"][n_real:] = np.arange(n_real, budget.nodes)

    properties = dataset.properties[indices].astype(np.float32)
    property_mask = np.isfinite(properties)
    globals_ = {
        "lattice_parameters": pad(dataset.lattice_parameters[indices].astype(np.float32), budget.graphs),
        "spacegroup": pad(dataset.spacegroup[indices].astype(np.int32), budget.graphs, 1),
        "properties": pad(np.where(property_mask, properties, 0.0), budget.graphs),
        "property_mask": pad(property_mask, budget.graphs, False),
        "mask": pad(np.ones(len(indices), bool), budget.graphs, False),
        "position": pad(
            np.arange(first_position, first_position + len(indices), dtype=np.int32),
            budget.graphs,
            PADDING_POSITION,
        ),
    }
    globals_["lattice_parameters"][len(indices) :] = (1.0, 1.0, 1.0, 90.0, 90.0, 90.0)
    return jraph.GraphsTuple(
        nodes=nodes,
        edges=None,
        senders=senders,
        receivers=receivers,
        n_node=n_node,
        n_edge=n_edge,
        globals=globals_,
    )


class PaddedBatches:
    """The crystals ``indices`` of a dataset (default: all) in consecutive batches of
    ``batch_size`` (the last may be shorter), for inference: iterating yields
    ``(indices, graphs)`` with host-side graphs of ``batch_size + 1`` graphs.

    ``common_budget=True``: every batch has the node/edge budget of the largest one
    (``self.budget``), so jit compiles once; False: each batch its own rung of the ladder
    (``self.budget`` is None), a compilation per rung that occurs but less padding."""

    def __init__(self, dataset: CrystalDataset, batch_size: int, indices=None, common_budget: bool = True):
        indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        self.dataset = dataset
        self.batch_size = batch_size
        self.indices = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        self._counts = [dataset.num_atoms[b].astype(np.int64) for b in self.indices]
        self.budget = budget_for(self._counts, batch_size) if common_budget and self.indices else None

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[np.ndarray, jraph.GraphsTuple]]:
        for batch, counts in zip(self.indices, self._counts):
            yield (
                batch,
                graphs_from_dataset(
                    self.dataset, batch, self.budget or budget_for([counts], self.batch_size)
                ),
            )


def stack_graphs(graphs: list[jraph.GraphsTuple]) -> jraph.GraphsTuple:
    """Stack equally padded graphs on a new leading (shard) axis."""

    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *graphs)


def largest_budget(dataset: CrystalDataset, shard_size: int) -> Budget:
    """The budget of the largest shard of ``shard_size`` crystals ``dataset`` can form (its
    ``shard_size`` largest crystals): every batch fits it, so a run compiles one shape."""
    largest = np.sort(dataset.num_atoms.astype(np.int64))[-shard_size:]
    return budget_for([largest], shard_size)


def sharded_batch(
    dataset: CrystalDataset, indices, num_shards: int = 1, budget: Budget | None = None
) -> jraph.GraphsTuple:
    """Split ``indices`` into ``num_shards`` equal parts padded to common budgets (the smallest
    rungs that fit, or ``budget``), stacked."""
    indices = np.asarray(indices)
    if len(indices) % num_shards:
        raise ValueError(f"batch of {len(indices)} does not split into {num_shards} shards")
    parts = np.split(indices, num_shards)
    if budget is None:
        budget = budget_for([dataset.num_atoms[p].astype(np.int64) for p in parts], len(parts[0]))
    return stack_graphs([graphs_from_dataset(dataset, p, budget, i * len(p)) for i, p in enumerate(parts)])


class BatchIterator:
    """Seeded, shuffling iterator of sharded batches that can resume at any step.

    Epoch ``e`` visits the crystals in the order ``default_rng([seed, e]).permutation(G)``
    and drops the incomplete last batch; step ``s`` is batch ``s % steps_per_epoch`` of
    epoch ``s // steps_per_epoch``. The order therefore depends only on (seed, step), and
    restarting from a checkpoint at step ``s`` reproduces the same data order.

    ``fixed_budget``: pad every batch to ``largest_budget`` (one compiled shape; more padding
    per step). Worth it where compiling dominates: short runs, tiny models, tests.
    """

    def __init__(
        self,
        dataset: CrystalDataset,
        batch_size: int,
        seed: int = 0,
        start_step: int = 0,
        num_shards: int = 1,
        shuffle: bool = True,
        fixed_budget: bool = False,
    ):
        if batch_size > len(dataset):
            raise ValueError(f"batch size {batch_size} exceeds the dataset size {len(dataset)}")
        if batch_size % num_shards:
            raise ValueError(f"batch size {batch_size} is not divisible by {num_shards} shards")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_shards, self.shuffle, self.step = num_shards, shuffle, start_step
        self.steps_per_epoch = len(dataset) // batch_size
        self._epoch, self._order = None, None
        self.budget = largest_budget(dataset, batch_size // num_shards) if fixed_budget else None

    def indices_at(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            n = len(self.dataset)
            self._order = (
                np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            )
            self._epoch = epoch
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]

    def __iter__(self) -> Iterator[jraph.GraphsTuple]:
        return self

    def sharded(self, step: int) -> jraph.GraphsTuple:
        """The batch of ``step`` (does not advance the iterator)."""
        return sharded_batch(self.dataset, self.indices_at(step), self.num_shards, self.budget)

    def __next__(self) -> jraph.GraphsTuple:
        batch = self.sharded(self.step)
        self.step += 1
        return batch


def count_shapes(
    dataset: CrystalDataset, batch_size: int, steps: int, seed: int = 0, num_shards: int = 1
) -> set:
    """The distinct padded (nodes, edges) budgets over ``steps`` batches (what jit compiles)."""
    iterator = BatchIterator(dataset, batch_size, seed, num_shards=num_shards)
    shapes = set()
    for step in range(steps):
        parts = np.split(iterator.indices_at(step), num_shards)
        budget = budget_for([dataset.num_atoms[p].astype(np.int64) for p in parts], len(parts[0]))
        shapes.add((budget.nodes, budget.edges))
    return shapes
