"""Behaviour tests for ``unimdm_jax.data.batching`` (padded jraph batches, shards, iteration).

Batches are checked against the dataset's own columns (the crystals that went in), against
closed forms (complete directed graphs have n(n-1) edges; the budget ladder is the set
{2^k, 3 * 2^(k-1)}), and against jraph's padding conventions (``jraph.unpad_with_graphs``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jraph  # noqa: E402

from unimdm_jax.data.batching import (  # noqa: E402
    BatchIterator,
    Budget,
    PaddedBatches,
    budget_for,
    budget_ladder,
    count_shapes,
    graphs_from_dataset,
    largest_budget,
    sharded_batch,
)

# --------------------------------------------------------------------------------------
# helpers


def ladder_reference(value: int, minimum: int = 32) -> int:
    """Closed form: the smallest member >= max(value, minimum) of {2^k, 3 * 2^(k-1)}."""
    rungs = sorted({2**k for k in range(0, 40)} | {3 * 2 ** (k - 1) for k in range(1, 40)})
    return next(r for r in rungs if r >= max(value, minimum))


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb)
    )


def check_batch(graphs: jraph.GraphsTuple, dataset, indices, first_position: int = 0) -> None:
    """Everything a padded batch must satisfy, checked against the crystals ``indices``."""
    indices = np.asarray(indices)
    g = len(indices)
    nodes, glob = graphs.nodes, graphs.globals
    num_nodes, num_edges, num_graphs = len(nodes["mask"]), len(graphs.senders), len(graphs.n_node)
    counts = dataset.num_atoms[indices].astype(int)
    n_real, e_real = int(counts.sum()), int((counts * (counts - 1)).sum())

    # budgets
    assert num_graphs >= g + 1
    assert int(graphs.n_node.sum()) == num_nodes and int(graphs.n_edge.sum()) == num_edges
    for leaf in jax.tree_util.tree_leaves(nodes):
        assert leaf.shape[0] == num_nodes
    for leaf in jax.tree_util.tree_leaves(glob):
        assert leaf.shape[0] == num_graphs
    assert len(graphs.receivers) == num_edges
    np.testing.assert_array_equal(graphs.n_node[:g], counts)
    np.testing.assert_array_equal(graphs.n_edge[:g], counts * (counts - 1))
    assert graphs.n_node[g] >= 1  # the padding graph owns at least one node
    assert (graphs.n_node[g + 1 :] == 0).all() and (graphs.n_edge[g + 1 :] == 0).all()

    # masks count the real nodes / graphs, and padding sits at the end
    assert nodes["mask"].sum() == n_real and nodes["mask"][:n_real].all()
    assert glob["mask"].sum() == g and glob["mask"][:g].all()

    node_graph = np.repeat(np.arange(num_graphs), graphs.n_node)
    edge_graph = np.repeat(np.arange(num_graphs), graphs.n_edge)
    senders, receivers = np.asarray(graphs.senders), np.asarray(graphs.receivers)
    assert ((senders >= 0) & (senders < num_nodes)).all() and (
        (receivers >= 0) & (receivers < num_nodes)
    ).all()
    # every edge stays inside its graph (jraph's segment convention), padding ones included
    np.testing.assert_array_equal(node_graph[senders], edge_graph)
    np.testing.assert_array_equal(node_graph[receivers], edge_graph)
    assert (senders[e_real:] >= n_real).all() and (receivers[e_real:] >= n_real).all()

    # each crystal: the complete directed graph on its atoms, no self loops
    starts = np.concatenate([[0], np.cumsum(counts)])
    edge_start = np.concatenate([[0], np.cumsum(counts * (counts - 1))])
    offsets = dataset.atom_offsets
    for k, i in enumerate(indices):
        lo, hi = starts[k], starts[k + 1]
        pairs = set(
            zip(
                senders[edge_start[k] : edge_start[k + 1]].tolist(),
                receivers[edge_start[k] : edge_start[k + 1]].tolist(),
            )
        )
        expected = {(a, b) for a in range(lo, hi) for b in range(lo, hi) if a != b}
        assert pairs == expected and len(pairs) == edge_start[k + 1] - edge_start[k]
        atoms = slice(offsets[i], offsets[i + 1])
        np.testing.assert_array_equal(nodes["atomic_numbers"][lo:hi], dataset.atomic_numbers[atoms])
        np.testing.assert_array_equal(nodes["frac_coords"][lo:hi], dataset.frac_coords[atoms])
        np.testing.assert_array_equal(nodes["wyckoff_ops"][lo:hi], dataset.wyckoff_ops[atoms])
        np.testing.assert_array_equal(nodes["ops_rotation_pinv"][lo:hi], dataset.ops_rotation_pinv[atoms])
        np.testing.assert_array_equal(nodes["anchor"][lo:hi], dataset.anchor_index[atoms] + lo)
    # anchors: same graph, and an anchor anchors itself
    anchor = np.asarray(nodes["anchor"])
    np.testing.assert_array_equal(node_graph[anchor], node_graph)
    np.testing.assert_array_equal(anchor[anchor], anchor)
    # padding nodes are inert: their own anchors, identity operations, no atoms
    np.testing.assert_array_equal(anchor[n_real:], np.arange(n_real, num_nodes))
    np.testing.assert_array_equal(
        nodes["wyckoff_ops"][n_real:], np.broadcast_to(np.eye(4), (num_nodes - n_real, 4, 4))
    )
    np.testing.assert_array_equal(
        nodes["ops_rotation_pinv"][n_real:], np.broadcast_to(np.eye(3), (num_nodes - n_real, 3, 3))
    )
    assert (nodes["atomic_numbers"][n_real:] == 0).all()

    # globals
    np.testing.assert_allclose(glob["lattice_parameters"][:g], dataset.lattice_parameters[indices], rtol=1e-6)
    np.testing.assert_array_equal(glob["spacegroup"][:g], dataset.spacegroup[indices])
    assert ((glob["spacegroup"] >= 1) & (glob["spacegroup"] <= 230)).all()  # padding graphs too
    # padding lattices are valid cells (a unit cube), so lattice maths never sees zeros
    np.testing.assert_array_equal(
        glob["lattice_parameters"][g:], np.tile([1, 1, 1, 90, 90, 90], (num_graphs - g, 1))
    )
    props = dataset.properties[indices]
    np.testing.assert_array_equal(glob["property_mask"][:g], np.isfinite(props))
    np.testing.assert_allclose(glob["properties"][:g], np.where(np.isfinite(props), props, 0.0), rtol=1e-6)
    assert np.isfinite(glob["properties"]).all() and not glob["property_mask"][g:].any()
    if "position" in glob:  # index of each crystal in the global (all-shard) batch
        np.testing.assert_array_equal(glob["position"][:g], first_position + np.arange(g))
        assert len(set(glob["position"][g:].tolist()) & set(range(first_position, first_position + g))) == 0


# --------------------------------------------------------------------------------------
# budget ladder


def test_budget_ladder_closed_form():
    previous = 0
    for value in range(1, 5000):
        rung = budget_ladder(value)
        assert rung == ladder_reference(value), value
        assert rung >= value and rung >= 32 and rung >= previous
        previous = rung
    rungs = sorted({budget_ladder(v) for v in range(1, 100_000, 7)})
    assert rungs[:6] == [32, 48, 64, 96, 128, 192]
    assert all(b / a <= 1.5 for a, b in zip(rungs, rungs[1:]))
    for minimum in (2, 4, 16, 64):
        for value in range(1, 600):
            assert budget_ladder(value, minimum) == ladder_reference(value, minimum), (value, minimum)


# --------------------------------------------------------------------------------------
# one padded batch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graphs_from_dataset_random_batches(fixture_dataset, seed):
    dataset, _ = fixture_dataset
    indices = np.random.default_rng(seed).choice(len(dataset), 16, replace=False)
    graphs = graphs_from_dataset(dataset, indices)
    check_batch(graphs, dataset, indices)
    counts = dataset.num_atoms[indices].astype(int)
    assert len(graphs.n_node) == 17
    assert len(graphs.nodes["mask"]) == ladder_reference(int(counts.sum()) + 1)
    assert len(graphs.senders) == ladder_reference(int((counts * (counts - 1)).sum()))


def test_graphs_from_dataset_extremes(fixture_dataset):
    dataset, _ = fixture_dataset
    order = np.argsort(dataset.num_atoms)
    for indices in ([order[-1]], order[:5], order[-4:], [order[0]] * 3):
        check_batch(graphs_from_dataset(dataset, indices), dataset, indices)


def test_nan_properties_are_masked(fixture_dataset):
    dataset, _ = fixture_dataset
    properties = dataset.properties.copy()
    properties[1, 0] = np.nan
    properties[2, :] = np.nan
    patched = dataclasses.replace(dataset, properties=properties)
    graphs = graphs_from_dataset(patched, [0, 1, 2, 3])
    check_batch(graphs, patched, [0, 1, 2, 3])
    np.testing.assert_array_equal(graphs.globals["property_mask"][:4], [[1, 1], [0, 1], [0, 0], [1, 1]])
    assert graphs.globals["properties"][1, 0] == 0 and (graphs.globals["properties"][2] == 0).all()


def test_explicit_budget_and_overflow(fixture_dataset):
    dataset, _ = fixture_dataset
    indices = [0, 1, 2]
    counts = dataset.num_atoms[indices].astype(int)
    budget = Budget(nodes=int(counts.sum()) + 10, edges=int((counts * (counts - 1)).sum()) + 7, graphs=6)
    graphs = graphs_from_dataset(dataset, indices, budget)
    check_batch(graphs, dataset, indices)
    assert (
        len(graphs.n_node) == 6
        and len(graphs.nodes["mask"]) == budget.nodes
        and len(graphs.senders) == budget.edges
    )
    with pytest.raises(ValueError):
        graphs_from_dataset(dataset, indices, Budget(nodes=int(counts.sum()), edges=budget.edges, graphs=6))
    with pytest.raises(ValueError):
        graphs_from_dataset(dataset, indices, Budget(nodes=budget.nodes, edges=budget.edges - 8, graphs=6))
    with pytest.raises(ValueError):
        graphs_from_dataset(dataset, indices, Budget(nodes=budget.nodes, edges=budget.edges, graphs=3))


def test_jraph_padding_conventions(fixture_dataset):
    dataset, _ = fixture_dataset
    indices = [5, 17, 33, 120]
    counts = dataset.num_atoms[indices].astype(int)
    for budget in (None, Budget(int(counts.sum()) + 40, int((counts * (counts - 1)).sum()) + 50, 8)):
        graphs = graphs_from_dataset(dataset, indices, budget)
        n_pad_graphs = int(jraph.get_number_of_padding_with_graphs_graphs(graphs))
        assert n_pad_graphs == len(graphs.n_node) - len(indices)
        assert (
            int(jraph.get_number_of_padding_with_graphs_nodes(graphs))
            == len(graphs.nodes["mask"]) - counts.sum()
        )
        assert (
            int(jraph.get_number_of_padding_with_graphs_edges(graphs))
            == len(graphs.senders) - (counts * (counts - 1)).sum()
        )
        np.testing.assert_array_equal(jraph.get_node_padding_mask(graphs), graphs.nodes["mask"])
        np.testing.assert_array_equal(jraph.get_graph_padding_mask(graphs), graphs.globals["mask"])
        unpadded = jraph.unpad_with_graphs(graphs)
        np.testing.assert_array_equal(unpadded.n_node, counts)
        np.testing.assert_array_equal(unpadded.n_edge, counts * (counts - 1))
        np.testing.assert_array_equal(
            unpadded.nodes["atomic_numbers"],
            np.concatenate(
                [
                    dataset.atomic_numbers[dataset.atom_offsets[i] : dataset.atom_offsets[i + 1]]
                    for i in indices
                ]
            ),
        )


# --------------------------------------------------------------------------------------
# shards


@pytest.mark.parametrize("num_shards", [1, 2, 4])
def test_sharded_batch(fixture_dataset, num_shards):
    dataset, _ = fixture_dataset
    indices = np.random.default_rng(num_shards).choice(len(dataset), 16, replace=False)
    batch = sharded_batch(dataset, indices, num_shards)
    for leaf in jax.tree_util.tree_leaves(batch):
        assert leaf.shape[0] == num_shards
    parts = np.split(indices, num_shards)
    nodes_needed = max(int(dataset.num_atoms[p].sum()) + 1 for p in parts)
    edges_needed = max(
        int((dataset.num_atoms[p].astype(int) * (dataset.num_atoms[p] - 1)).sum()) for p in parts
    )
    assert batch.nodes["mask"].shape == (num_shards, ladder_reference(nodes_needed))
    assert batch.senders.shape == (num_shards, ladder_reference(edges_needed))
    assert batch.n_node.shape == (num_shards, 16 // num_shards + 1)
    for s, part in enumerate(parts):
        shard = jax.tree_util.tree_map(lambda x, s=s: x[s], batch)
        check_batch(shard, dataset, part, first_position=s * len(part))
    if "position" in batch.globals:  # positions number the whole batch, across shards
        real = batch.globals["position"][batch.globals["mask"]]
        assert sorted(real.tolist()) == list(range(16))


def test_sharded_batch_refuses_uneven_split(fixture_dataset):
    dataset, _ = fixture_dataset
    with pytest.raises(ValueError):
        sharded_batch(dataset, np.arange(10), 4)


def test_sharded_batch_lays_out_over_two_devices(fixture_dataset):
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs 2 (host) devices")
    dataset, _ = fixture_dataset
    batch = sharded_batch(dataset, np.arange(8), 2)
    mesh = Mesh(np.asarray(devices[:2]), ("data",))
    placed = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
    total = jax.jit(lambda g: g.n_node.sum(axis=1))(placed)
    np.testing.assert_array_equal(np.asarray(total), [batch.nodes["mask"].shape[1]] * 2)


# --------------------------------------------------------------------------------------
# the iterator


def test_iterator_order_is_the_documented_permutation(fixture_dataset):
    dataset, _ = fixture_dataset
    it = BatchIterator(dataset, batch_size=16, seed=7)
    assert it.steps_per_epoch == 200 // 16
    for epoch in (0, 1, 3):
        order = np.random.default_rng([7, epoch]).permutation(200)
        got = np.concatenate([it.indices_at(epoch * 12 + k) for k in range(12)])
        np.testing.assert_array_equal(got, order[: 12 * 16])  # the incomplete last batch is dropped
    # going back to an earlier epoch recomputes its order
    np.testing.assert_array_equal(it.indices_at(3), np.random.default_rng([7, 0]).permutation(200)[48:64])
    unshuffled = BatchIterator(dataset, batch_size=16, shuffle=False)
    np.testing.assert_array_equal(unshuffled.indices_at(13), np.arange(16, 32))


def test_each_epoch_visits_every_crystal_once(fixture_dataset):
    dataset, _ = fixture_dataset
    it = BatchIterator(dataset, batch_size=8, seed=3)  # 8 divides 200: no crystal dropped
    assert it.steps_per_epoch == 25
    seen_epochs = []
    for _epoch in range(2):
        seen = []
        for _ in range(25):
            step = it.step
            batch = next(it)
            indices = it.indices_at(step)
            check_batch(jax.tree_util.tree_map(lambda x: x[0], batch), dataset, indices)
            seen.extend(indices.tolist())
        assert sorted(seen) == list(range(200))
        seen_epochs.append(seen)
    assert seen_epochs[0] != seen_epochs[1]  # reshuffled each epoch


def test_iterator_determinism_and_resume(fixture_dataset):
    dataset, _ = fixture_dataset
    a_it = BatchIterator(dataset, 16, seed=11, num_shards=2)
    a = [next(a_it) for _ in range(20)]
    b_it = BatchIterator(dataset, 16, seed=11, num_shards=2)
    b = [next(b_it) for _ in range(20)]
    assert all(leaves_equal(x, y) for x, y in zip(a, b))
    c_it = BatchIterator(dataset, 16, seed=12, num_shards=2)
    c = [next(c_it) for _ in range(5)]
    assert not all(leaves_equal(x, y) for x, y in zip(a, c))
    for start in (5, 12, 17):  # inside epoch 0, at the epoch boundary, inside epoch 1
        resumed = BatchIterator(dataset, 16, seed=11, num_shards=2, start_step=start)
        for k in range(start, 20):
            assert leaves_equal(next(resumed), a[k]), (start, k)
        assert resumed.step == 20
    # ``sharded`` does not advance the iterator
    it = BatchIterator(dataset, 16, seed=11, num_shards=2)
    assert leaves_equal(it.sharded(4), a[4]) and it.step == 0


def test_iterator_argument_checks(fixture_dataset):
    dataset, _ = fixture_dataset
    with pytest.raises(ValueError):
        BatchIterator(dataset, batch_size=201)
    with pytest.raises(ValueError):
        BatchIterator(dataset, batch_size=10, num_shards=4)


def test_count_shapes_predicts_the_compiled_shapes(fixture_dataset):
    dataset, _ = fixture_dataset
    for seed in range(3):
        for num_shards in (1, 2):
            predicted = count_shapes(dataset, 16, 50, seed=seed, num_shards=num_shards)
            it = BatchIterator(dataset, 16, seed=seed, num_shards=num_shards)
            actual = set()
            for _ in range(50):
                batch = next(it)
                actual.add((batch.nodes["mask"].shape[1], batch.senders.shape[1]))
            assert predicted == actual
            # measured on the fixture (batch 16, 50 steps, seeds 0-4): 5-7 shapes with 1 shard,
            # 6-9 with 2 shards
            assert len(predicted) <= (10 if num_shards == 1 else 12), (seed, num_shards, predicted)


@pytest.mark.parametrize("num_shards", [1, 2])
def test_fixed_budget_gives_one_shape_that_fits_the_largest_crystals(fixture_dataset, num_shards):
    dataset, _ = fixture_dataset
    shard = 8 // num_shards
    largest = np.sort(dataset.num_atoms.astype(int))[-shard:]  # closed form: the worst shard
    expected = (ladder_reference(largest.sum() + 1), ladder_reference((largest * (largest - 1)).sum()))
    assert (largest_budget(dataset, shard).nodes, largest_budget(dataset, shard).edges) == expected
    fixed = BatchIterator(dataset, 8, seed=3, num_shards=num_shards, fixed_budget=True)
    tight = BatchIterator(dataset, 8, seed=3, num_shards=num_shards)
    shapes = set()
    for step in range(2 * fixed.steps_per_epoch):  # two epochs: every crystal, two orders
        batch = next(fixed)
        shapes.add((batch.nodes["mask"].shape, batch.senders.shape))
        indices = fixed.indices_at(step)
        assert np.array_equal(indices, tight.indices_at(step))  # same data order
        for s, part in enumerate(np.split(indices, num_shards)):
            check_batch(jax.tree_util.tree_map(lambda x, s=s: x[s], batch), dataset, part, s * len(part))
    assert shapes == {((num_shards, expected[0]), (num_shards, expected[1]))}


def test_padded_batches_cover_the_crystals_in_order_with_one_or_per_batch_budgets(fixture_dataset):
    dataset, _ = fixture_dataset
    common = PaddedBatches(dataset, 48)
    assert len(common) == -(-len(dataset) // 48)
    assert np.array_equal(np.concatenate([indices for indices, _ in common]), np.arange(len(dataset)))
    own = [budget_for([dataset.num_atoms[b].astype(np.int64)], 48) for b in common.indices]
    assert common.budget == Budget(max(b.nodes for b in own), max(b.edges for b in own), 49)
    for _indices, graphs in common:
        assert graphs.n_node.shape == (49,) and graphs.nodes["mask"].shape == (common.budget.nodes,)
    per_batch = PaddedBatches(dataset, 48, common_budget=False)
    assert per_batch.budget is None
    for (_indices, graphs), budget in zip(per_batch, own):
        assert graphs.nodes["mask"].shape == (budget.nodes,) and graphs.senders.shape == (budget.edges,)
    subset = PaddedBatches(dataset, 4, indices=np.arange(10, 20))
    assert [list(b) for b in subset.indices] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
