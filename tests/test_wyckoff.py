"""Behaviour tests for ``unimdm_jax.wyckoff`` (pure-JAX Wyckoff projections).

Inputs are real batches (the 200-crystal fixture through ``graphs_from_dataset``). The
expectations are closed forms computed here with numpy in float64 (orthogonal projectors
from ``numpy.linalg.pinv``, ``x_i = R_i x_a + t_i``), pyxtal's general-position operations
and spglib (via pymatgen) on structures built from the returned coordinates.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax import wyckoff  # noqa: E402
from unimdm_jax.data.batching import graphs_from_dataset  # noqa: E402
from unimdm_jax.data.symmetry import space_group  # noqa: E402


def periodic_distance(a, b) -> np.ndarray:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d -= np.round(d)
    return np.abs(d).max(axis=-1)


class Batch:
    """Node arrays of one padded batch as jnp arrays, plus float64 numpy copies."""

    def __init__(self, dataset, indices):
        graphs = graphs_from_dataset(dataset, indices)
        nodes = graphs.nodes
        self.indices = np.asarray(indices)
        self.graphs = graphs
        self.ops = jnp.asarray(nodes["wyckoff_ops"])
        self.pinv = jnp.asarray(nodes["ops_rotation_pinv"])
        self.anchor = jnp.asarray(nodes["anchor"])
        self.x = jnp.asarray(nodes["frac_coords"])
        self.mask = np.asarray(nodes["mask"])
        self.n = len(self.mask)
        self.ops64 = np.asarray(nodes["wyckoff_ops"], np.float64)
        self.anchor_np = np.asarray(nodes["anchor"])
        self.is_anchor = self.anchor_np == np.arange(self.n)
        self.R = self.ops64[:, :3, :3]
        # orthogonal projector onto each atom's OWN column space (its anchor's rows matter)
        self.P = self.R @ np.linalg.pinv(self.R)
        self.starts = np.concatenate([[0], np.cumsum(graphs.n_node)])

    def consistent_field(self, rng) -> np.ndarray:
        """d_i = R_i delta_a with delta_a a random vector in the anchor's column space."""
        delta = np.einsum("nij,nj->ni", self.P, rng.normal(size=(self.n, 3)))
        return np.einsum("nij,nj->ni", self.R, delta[self.anchor_np])

    def oblique_anchor(self) -> np.ndarray:
        """Atoms whose anchor's rotation part is not a symmetric matrix, e.g. (x,x,z), (x,2x,0)."""
        symmetric = np.abs(self.R - np.swapaxes(self.R, 1, 2)).max(axis=(1, 2)) < 1e-6
        return ~symmetric[self.anchor_np]


@pytest.fixture(scope="module")
def batch(fixture_dataset) -> Batch:
    dataset, _ = fixture_dataset
    return Batch(dataset, np.arange(len(dataset)))


@pytest.fixture(scope="module")
def dataset(fixture_dataset):
    return fixture_dataset[0]


def structure_of(batch: Batch, dataset, k: int, coords) -> Structure:
    sl = slice(batch.starts[k], batch.starts[k + 1])
    return Structure(
        Lattice.from_parameters(*dataset.lattice_parameters[batch.indices[k]]),
        batch.graphs.nodes["atomic_numbers"][sl].tolist(),
        np.asarray(coords)[sl],
    )


def assert_on_wyckoff_manifolds(batch: Batch, coords, tol=1e-5) -> None:
    """x_i = W_i [x_a; 1] for every atom and W_a [x_a; 1] = x_a for every anchor."""
    x = np.asarray(coords, np.float64)
    homogeneous = np.concatenate([x, np.ones((batch.n, 1))], axis=1)
    images = np.einsum("nij,nj->ni", batch.ops64, homogeneous[batch.anchor_np])[:, :3]
    assert periodic_distance(images, x).max() < tol
    own = np.einsum("nij,nj->ni", batch.ops64, homogeneous)[:, :3]
    assert periodic_distance(own[batch.is_anchor], x[batch.is_anchor]).max() < tol


def assert_orbits_closed(batch: Batch, dataset, coords, tol=1e-4) -> None:
    """Each orbit is mapped onto itself by every operation of its space group (pyxtal)."""
    x = np.asarray(coords, np.float64)
    for k, i in enumerate(batch.indices):
        group = space_group(int(dataset.spacegroup[i]))
        general = np.stack(
            [np.asarray(op.affine_matrix, np.float64) for op in group.Wyckoff_positions[0].ops]
        )
        lo, hi = batch.starts[k], batch.starts[k + 1]
        for a in np.nonzero(batch.is_anchor[lo:hi])[0] + lo:
            orbit = x[batch.anchor_np == a]
            images = (general @ np.append(x[a], 1.0))[:, :3]
            dist = periodic_distance(images[:, None, :], orbit[None, :, :]).min(axis=1)
            assert dist.max() < tol, (dataset.material_id[i], a)


# --------------------------------------------------------------------------------------
# apply_ops


def test_apply_ops_reproduces_the_dataset_coordinates(batch):
    x = np.asarray(wyckoff.apply_ops(batch.ops, batch.anchor, batch.x))
    assert ((x >= 0) & (x < 1)).all()
    assert periodic_distance(x, np.asarray(batch.x))[batch.mask].max() < 1e-5
    assert_on_wyckoff_manifolds(batch, batch.x)


def test_apply_ops_is_the_affine_map(batch):
    rng = np.random.default_rng(0)
    u = rng.uniform(-2, 2, size=(batch.n, 3))
    expected = (np.einsum("nij,nj->ni", batch.R, u[batch.anchor_np]) + batch.ops64[:, :3, 3]) % 1.0
    got = np.asarray(wyckoff.apply_ops(batch.ops, batch.anchor, jnp.asarray(u, jnp.float32)))
    assert periodic_distance(got, expected).max() < 1e-5


# --------------------------------------------------------------------------------------
# noise


def test_wyckoff_noise_closed_form(batch):
    rng = np.random.default_rng(1)
    eps = rng.normal(size=(batch.n, 3))
    atom_noise, anchor_noise = map(
        np.asarray, wyckoff.wyckoff_noise(jnp.asarray(eps, jnp.float32), batch.ops, batch.anchor)
    )
    # anchor noise: orthogonal projection of eps onto the column space of R_a
    expected_anchor = np.einsum("nij,nj->ni", batch.P, eps)
    np.testing.assert_allclose(anchor_noise, expected_anchor, atol=1e-5)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", batch.P, anchor_noise), anchor_noise, atol=1e-5)
    # pushed to atoms with R_i
    np.testing.assert_allclose(
        atom_noise, np.einsum("nij,nj->ni", batch.R, anchor_noise[batch.anchor_np]), atol=1e-5
    )


def test_noise_is_zero_on_fixed_directions(batch, dataset):
    rng = np.random.default_rng(2)
    atom_noise, _ = wyckoff.wyckoff_noise(
        jnp.asarray(rng.normal(size=(batch.n, 3)), jnp.float32), batch.ops, batch.anchor
    )
    atom_noise = np.asarray(atom_noise)
    rank = np.linalg.matrix_rank(batch.R[batch.anchor_np])
    # fully fixed positions (e.g. Na 4a in Fm-3m) never move
    assert (rank == 0).sum() > 100
    assert np.abs(atom_noise[rank == 0]).max() == 0.0
    # (0, 0, z) positions move along z only
    zonly = np.all(np.abs(batch.R[batch.anchor_np] - np.diag([0.0, 0.0, 1.0])) < 1e-6, axis=(1, 2))
    assert zonly.sum() > 50
    assert np.abs(atom_noise[zonly & batch.is_anchor][:, :2]).max() == 0.0
    assert np.abs(atom_noise[zonly & batch.is_anchor][:, 2]).min() > 0.0
    # a named textbook case from the fixture: every Fm-3m crystal with only 4a/4b/8c sites is rigid
    for k, i in enumerate(batch.indices):
        crystal = dataset[int(i)]
        if crystal.spacegroup_number == 225 and {s.letter for s in crystal.sites} <= {"a", "b", "c"}:
            assert np.abs(atom_noise[batch.starts[k] : batch.starts[k + 1]]).max() == 0.0, crystal.material_id


@pytest.mark.parametrize("scale", [0.01, 0.3, 2.0])
def test_perturbed_coordinates_keep_the_wyckoff_relations(batch, scale):
    rng = np.random.default_rng(3)
    atom_noise, _ = wyckoff.wyckoff_noise(
        jnp.asarray(rng.normal(size=(batch.n, 3)), jnp.float32), batch.ops, batch.anchor
    )
    perturbed = jnp.mod(batch.x + scale * atom_noise, 1.0)
    assert_on_wyckoff_manifolds(batch, perturbed, tol=2e-5)
    again = np.asarray(wyckoff.apply_ops(batch.ops, batch.anchor, perturbed))
    assert periodic_distance(again, np.asarray(perturbed)).max() < 2e-5


def test_perturbed_structures_keep_their_space_group(batch, dataset):
    """spglib on the perturbed cells: the group is kept (not lowered) for every crystal."""
    rng = np.random.default_rng(4)
    atom_noise, _ = wyckoff.wyckoff_noise(
        jnp.asarray(rng.normal(size=(batch.n, 3)), jnp.float32), batch.ops, batch.anchor
    )
    perturbed = np.asarray(jnp.mod(batch.x + 0.02 * atom_noise, 1.0))
    for k in range(0, len(batch.indices), 4):
        structure = structure_of(batch, dataset, k, perturbed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            number = SpacegroupAnalyzer(structure, symprec=1e-3).get_space_group_number()
        assert number == dataset.spacegroup[batch.indices[k]], dataset.material_id[batch.indices[k]]


def test_anchor_noise_has_unit_variance_per_free_direction(batch):
    """E |P eps|^2 = rank(P) for standard normal eps (vmapped over 2,000 draws)."""
    eps = jax.random.normal(jax.random.PRNGKey(0), (2000, batch.n, 3))
    noise = jax.vmap(lambda e: wyckoff.wyckoff_noise(e, batch.ops, batch.anchor)[1])(eps)
    mean_square = np.asarray(jnp.mean(jnp.sum(noise**2, axis=-1), axis=0))
    rank = np.linalg.matrix_rank(batch.R)
    real_anchors = batch.is_anchor & batch.mask
    # std of the mean of a chi^2_k / 2000 is sqrt(2k / 2000) <= 0.055; 5 sigma
    assert np.abs(mean_square[real_anchors] - rank[real_anchors]).max() < 0.3


# --------------------------------------------------------------------------------------
# symmetrize / pull_back


def _symmetrize(batch, v):
    return np.asarray(
        wyckoff.symmetrize(batch.ops, batch.pinv, batch.anchor, jnp.asarray(v, jnp.float32)), np.float64
    )


def test_symmetrize_output_is_wyckoff_consistent_and_linear(batch):
    rng = np.random.default_rng(5)
    v, w = rng.normal(size=(2, batch.n, 3))
    out = _symmetrize(batch, v)
    # out_i = R_i out_a, and out_a lies in the anchor's column space
    np.testing.assert_allclose(out, np.einsum("nij,nj->ni", batch.R, out[batch.anchor_np]), atol=1e-5)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", batch.P, out), out, atol=1e-5)
    # linear
    np.testing.assert_allclose(
        _symmetrize(batch, 2.0 * v - 3.0 * w), 2.0 * out - 3.0 * _symmetrize(batch, w), atol=1e-4
    )
    # rigid sites get nothing
    rank = np.linalg.matrix_rank(batch.R[batch.anchor_np])
    assert np.abs(out[rank == 0]).max() == 0.0


def test_symmetrize_keeps_consistent_fields_on_axis_aligned_positions(batch):
    """Where R_a is a symmetric projector ((0,0,z), (x,y,0), (x,y,z), fixed points) a
    consistent field is a fixed point, and symmetrize is idempotent."""
    rng = np.random.default_rng(6)
    field = batch.consistent_field(rng)
    keep = ~batch.oblique_anchor()
    assert keep.sum() > 0.9 * batch.n
    np.testing.assert_allclose(_symmetrize(batch, field)[keep], field[keep], atol=1e-5)
    once = _symmetrize(batch, rng.normal(size=(batch.n, 3)))
    np.testing.assert_allclose(_symmetrize(batch, once)[keep], once[keep], atol=1e-5)


def test_symmetrize_is_a_projection_on_every_position(batch):
    rng = np.random.default_rng(7)
    assert batch.oblique_anchor().sum() > 0  # the fixture has (x,x,z), (x,-x,z), (x,2x,0) ... sites
    field = batch.consistent_field(rng)
    np.testing.assert_allclose(_symmetrize(batch, field), field, atol=1e-5)
    once = _symmetrize(batch, rng.normal(size=(batch.n, 3)))
    np.testing.assert_allclose(_symmetrize(batch, once), once, atol=1e-5)


def test_pull_back_recovers_free_parameters(batch):
    """For d_i = R_i u (u a parameter vector in the row space of R_a) the pull back is u at
    anchors and zero on every other row."""
    rng = np.random.default_rng(8)
    row_projector = np.linalg.pinv(batch.R) @ batch.R  # onto the row space of R
    u = np.einsum("nij,nj->ni", row_projector, rng.normal(size=(batch.n, 3)))
    field = np.einsum("nij,nj->ni", batch.R, u[batch.anchor_np])
    pulled = np.asarray(wyckoff.pull_back(batch.pinv, batch.anchor, jnp.asarray(field, jnp.float32), batch.n))
    np.testing.assert_allclose(pulled[batch.is_anchor], u[batch.is_anchor], atol=1e-4)
    assert np.abs(pulled[~batch.is_anchor]).max() == 0.0


def test_push_forward_is_the_linear_part(batch):
    rng = np.random.default_rng(9)
    d = rng.normal(size=(batch.n, 3))
    got = np.asarray(wyckoff.push_forward(batch.ops, batch.anchor, jnp.asarray(d, jnp.float32)))
    np.testing.assert_allclose(got, np.einsum("nij,nj->ni", batch.R, d[batch.anchor_np]), atol=1e-5)


# --------------------------------------------------------------------------------------
# the prior


def test_random_anchor_coords_lie_on_the_wyckoff_manifolds(batch, dataset):
    x = wyckoff.random_anchor_coords(jax.random.PRNGKey(0), batch.ops, batch.anchor)
    x = np.asarray(x)
    assert x.shape == (batch.n, 3) and ((x >= 0) & (x < 1)).all()
    assert_on_wyckoff_manifolds(batch, x)
    assert_orbits_closed(batch, dataset, x)
    # fixed positions stay put, free ones move
    rank = np.linalg.matrix_rank(batch.R[batch.anchor_np])
    real = batch.mask
    assert periodic_distance(x, np.asarray(batch.x))[real & (rank == 0)].max() < 1e-5
    assert np.median(periodic_distance(x, np.asarray(batch.x))[real & (rank == 3)]) > 0.05


def test_random_structures_have_the_space_group(batch, dataset):
    """spglib finds exactly the crystal's group for random prior samples (measured: 200 / 200)."""
    x = np.asarray(wyckoff.random_anchor_coords(jax.random.PRNGKey(1), batch.ops, batch.anchor))
    wrong = []
    for k in range(0, len(batch.indices), 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            number = SpacegroupAnalyzer(
                structure_of(batch, dataset, k, x), symprec=1e-3
            ).get_space_group_number()
        if number != dataset.spacegroup[batch.indices[k]]:
            wrong.append(str(dataset.material_id[batch.indices[k]]))
    assert len(wrong) <= 2, wrong  # random draws may collide atoms or hit a supergroup by chance


def test_random_anchor_coords_are_uniform_on_free_directions(batch):
    keys = jax.random.split(jax.random.PRNGKey(2), 500)
    samples = np.asarray(jax.vmap(lambda k: wyckoff.random_anchor_coords(k, batch.ops, batch.anchor))(keys))
    general = batch.is_anchor & batch.mask & (np.linalg.matrix_rank(batch.R) == 3)
    values = samples[:, general, :].ravel()
    assert abs(values.mean() - 0.5) < 0.01 and abs(values.var() - 1 / 12) < 0.005


# --------------------------------------------------------------------------------------
# transformations


def test_jit_matches_eager_and_gradients_are_finite(batch):
    rng = np.random.default_rng(10)
    v = jnp.asarray(rng.normal(size=(batch.n, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(batch.n, 3)), jnp.float32)
    eager = wyckoff.symmetrize(batch.ops, batch.pinv, batch.anchor, v)
    jitted = jax.jit(wyckoff.symmetrize)(batch.ops, batch.pinv, batch.anchor, v)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)
    noise_eager = wyckoff.wyckoff_noise(v, batch.ops, batch.anchor)
    noise_jit = jax.jit(wyckoff.wyckoff_noise)(v, batch.ops, batch.anchor)
    for a, b in zip(noise_eager, noise_jit):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    x_eager = wyckoff.random_anchor_coords(jax.random.PRNGKey(3), batch.ops, batch.anchor)
    x_jit = jax.jit(wyckoff.random_anchor_coords)(jax.random.PRNGKey(3), batch.ops, batch.anchor)
    assert periodic_distance(np.asarray(x_eager), np.asarray(x_jit)).max() < 1e-5

    def inner(v):
        return jnp.sum(wyckoff.symmetrize(batch.ops, batch.pinv, batch.anchor, v) * w)

    grad = jax.jit(jax.grad(inner))(v)
    assert bool(jnp.isfinite(grad).all())
    # symmetrize is linear, so <S v, w> = <v, S^T w> = <v, grad>
    np.testing.assert_allclose(float(inner(v)), float(jnp.sum(v * grad)), rtol=1e-4, atol=1e-3)

    # a gradient through the noise and the coordinates, too
    def loss(e):
        atom, _ = wyckoff.wyckoff_noise(e, batch.ops, batch.anchor)
        return jnp.sum(jnp.sin(2 * jnp.pi * (batch.x + 0.1 * atom)))

    assert bool(jnp.isfinite(jax.grad(loss)(v)).all())
