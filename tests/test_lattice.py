"""Tests for unimdm_jax.lattice against pymatgen / pyxtal / scipy (independent references)."""

import numpy as np
import pytest
import scipy.linalg
from pymatgen.core import Lattice

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax import lattice as lat  # noqa: E402

# one representative lattice (and space group) per crystal family
FAMILY_LATTICES = {
    "triclinic": (2, Lattice.from_parameters(4.1, 5.3, 6.7, 71.0, 82.0, 101.0)),
    "monoclinic": (14, Lattice.monoclinic(5.1, 6.2, 7.3, 104.5)),
    "orthorhombic": (62, Lattice.orthorhombic(3.9, 5.2, 7.7)),
    "tetragonal": (139, Lattice.tetragonal(3.6, 9.4)),
    "hexagonal": (194, Lattice.hexagonal(3.0, 5.0)),
    "trigonal-R": (166, Lattice.hexagonal(4.9, 17.1)),  # R groups in hexagonal axes
    "cubic": (225, Lattice.cubic(4.0)),
}


def _random_orthogonal(rng, reflect):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] *= -1
    return q


def _assert_params(lattice_matrix, abc, angles, atol=1e-4):
    got = Lattice(np.asarray(lattice_matrix, np.float64))
    np.testing.assert_allclose(got.abc, abc, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(got.angles, angles, atol=atol)


def test_basis_is_orthonormal_symmetric_and_matches_paper():
    b = lat.BASIS.astype(np.float64)
    np.testing.assert_allclose(np.einsum("ijk,ljk->il", b, b), np.eye(6), atol=1e-6)
    np.testing.assert_array_equal(b, np.swapaxes(b, 1, 2))
    raw = b * np.linalg.norm(b, axis=(1, 2), keepdims=True)
    # directions of the DiffCSP++ matrices B1..B6
    np.testing.assert_allclose(raw[4] / raw[4, 0, 0], np.diag([1.0, 1.0, -2.0]), atol=1e-6)
    np.testing.assert_allclose(raw[5] / raw[5, 0, 0], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(raw[0] / raw[0, 0, 1], [[0, 1, 0], [1, 0, 0], [0, 0, 0]], atol=1e-6)


@pytest.mark.filterwarnings("ignore:logm result may be inaccurate")
def test_matrix_functions_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    s = 0.3 * (a + a.T)
    np.testing.assert_allclose(lat.exp_symmetric(s), scipy.linalg.expm(s), rtol=1e-5, atol=1e-6)
    m = FAMILY_LATTICES["triclinic"][1].matrix
    ref = 0.5 * scipy.linalg.logm(m @ m.T).real
    np.testing.assert_allclose(lat.log_symmetric(m), ref, atol=2e-6)


def test_k_log_are_inverse():
    k = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(lat.log_to_k(lat.k_to_log(k)), k, atol=1e-6)


@pytest.mark.parametrize("name", list(FAMILY_LATTICES))
def test_round_trip_preserves_lengths_and_angles(name):
    _, pm = FAMILY_LATTICES[name]
    k = lat.lattice_to_k(pm.matrix)
    _assert_params(lat.k_to_lattice(k), pm.abc, pm.angles)
    params = np.asarray(lat.k_to_lattice_params(k))
    np.testing.assert_allclose(params[:3], pm.abc, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(params[3:], pm.angles, atol=1e-4)
    # same Gram matrix, and lattice -> k is idempotent through the canonical lattice
    canon = np.asarray(lat.k_to_lattice(k), np.float64)
    np.testing.assert_allclose(canon @ canon.T, pm.matrix @ pm.matrix.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lat.lattice_to_k(canon), k, atol=1e-5)


@pytest.mark.parametrize("name", list(FAMILY_LATTICES))
def test_family_lattice_satisfies_its_constraints(name):
    """Checks the bias constants (incl. hexagonal k1) against pymatgen lattices."""
    sg, pm = FAMILY_LATTICES[name]
    mask, bias = lat.family_mask_and_bias(sg)
    k = np.asarray(lat.lattice_to_k(pm.matrix))
    fixed = mask == 0
    np.testing.assert_allclose(k[fixed], bias[fixed], atol=1e-5)
    np.testing.assert_allclose(lat.project_k(k, mask, bias), k, atol=1e-5)


def test_hexagonal_bias_value():
    assert lat.HEXAGONAL_K1 == pytest.approx(-np.sqrt(2.0) * np.log(3.0) / 4.0)
    _, bias = lat.family_mask_and_bias(186)
    np.testing.assert_allclose(bias, [lat.HEXAGONAL_K1, 0, 0, 0, 0, 0], atol=1e-7)


@pytest.mark.parametrize("sg", [1, 9, 47, 123, 176, 221])
def test_projected_random_k_has_family_geometry(sg):
    family = lat.crystal_family(sg)
    mask, bias = lat.family_mask_and_bias(sg)
    k = np.random.default_rng(sg).normal(scale=0.3, size=6).astype(np.float32)
    k[5] += 1.5  # realistic volume
    kp = lat.project_k(jnp.asarray(k), mask, bias)
    pm = Lattice(np.asarray(lat.k_to_lattice(kp), np.float64))
    a, b, c = pm.abc
    al, be, ga = pm.angles
    if family != "triclinic":
        assert al == pytest.approx(90.0, abs=1e-3)
        assert ga == pytest.approx(120.0 if family == "hexagonal" else 90.0, abs=1e-3)
    if family in ("orthorhombic", "tetragonal", "hexagonal", "cubic"):
        assert be == pytest.approx(90.0, abs=1e-3)
    if family in ("tetragonal", "hexagonal", "cubic"):
        assert b == pytest.approx(a, rel=1e-5)
    if family == "cubic":
        assert c == pytest.approx(a, rel=1e-5)
    if family in ("triclinic", "monoclinic"):
        assert abs(be - 90.0) > 1e-2  # beta genuinely free
    np.testing.assert_allclose(lat.k_to_lattice_params(kp), pm.abc + pm.angles, atol=1e-3)
    np.testing.assert_allclose(lat.lattice_to_k(pm.matrix), kp, atol=1e-5)


@pytest.mark.parametrize("reflect", [False, True])
def test_k_is_o3_invariant(reflect):
    rng = np.random.default_rng(3 + reflect)
    for _, pm in FAMILY_LATTICES.values():
        r = _random_orthogonal(rng, reflect)
        np.testing.assert_allclose(lat.lattice_to_k(pm.matrix @ r.T), lat.lattice_to_k(pm.matrix), atol=1e-5)


def test_lattice_params_to_matrix_matches_pymatgen():
    params = np.array(
        [
            [4.0, 4.0, 4.0, 90.0, 90.0, 90.0],
            [3.0, 3.0, 5.0, 90.0, 90.0, 120.0],
            [5.1, 6.2, 7.3, 90.0, 104.5, 90.0],
            [4.1, 5.3, 6.7, 71.0, 82.0, 101.0],
            [7.0, 7.0, 7.0, 60.0, 60.0, 60.0],
        ]
    )
    got = np.asarray(lat.lattice_params_to_matrix(params))  # batched
    for p, m in zip(params, got):
        np.testing.assert_allclose(m, Lattice.from_parameters(*p).matrix, atol=1e-4)


def test_crystal_family_boundaries_and_tables():
    edges = {
        1: "triclinic",
        2: "triclinic",
        3: "monoclinic",
        15: "monoclinic",
        16: "orthorhombic",
        74: "orthorhombic",
        75: "tetragonal",
        142: "tetragonal",
        143: "hexagonal",
        167: "hexagonal",
        194: "hexagonal",
        195: "cubic",
        230: "cubic",
    }
    for sg, fam in edges.items():
        assert lat.crystal_family(sg) == fam
    for bad in (0, 231):
        with pytest.raises(ValueError):
            lat.crystal_family(bad)
    n_free = {"triclinic": 6, "monoclinic": 4, "orthorhombic": 3, "tetragonal": 2, "hexagonal": 2, "cubic": 1}
    masks, biases = lat.mask_bias_table()
    assert masks.shape == biases.shape == (231, 6)
    for sg in range(1, 231):
        m, b = lat.family_mask_and_bias(sg)
        assert m.dtype == np.float32 and b.dtype == np.float32
        assert m.sum() == n_free[lat.crystal_family(sg)]
        np.testing.assert_array_equal(masks[sg], m)
        np.testing.assert_array_equal(biases[sg], b)


PYXTAL_GROUPS = [1, 2, 4, 12, 15, 19, 36, 62, 71, 88, 123, 139, 146, 148, 160, 166, 186, 194, 216, 229]


def test_pyxtal_lattices_satisfy_masks():
    from pyxtal.lattice import Lattice as PyxtalLattice
    from pyxtal.symmetry import Group

    mats, masks, biases = [], [], []
    for sg in PYXTAL_GROUPS:
        ltype = Group(sg).lattice_type
        family = {"trigonal": "hexagonal", "rhombohedral": "hexagonal"}.get(ltype, ltype)
        assert lat.crystal_family(sg) == family
        mats.append(PyxtalLattice(ltype, volume=150.0, random_state=sg).matrix)
        m, b = lat.family_mask_and_bias(sg)
        masks.append(m)
        biases.append(b)
    k = np.asarray(jax.vmap(lat.lattice_to_k)(jnp.asarray(np.array(mats), jnp.float32)))
    masks, biases = np.array(masks), np.array(biases)
    np.testing.assert_allclose(k * (1 - masks), biases * (1 - masks), atol=1e-5)


def test_jit_and_vmap_match_eager():
    mats = np.stack([pm.matrix for _, pm in FAMILY_LATTICES.values()]).astype(np.float32)
    eager = np.stack([np.asarray(lat.lattice_to_k(m)) for m in mats])
    batched = jax.jit(jax.vmap(lat.lattice_to_k))(mats)
    np.testing.assert_allclose(batched, eager, atol=1e-5)
    np.testing.assert_allclose(jax.jit(lat.lattice_to_k)(mats), eager, atol=1e-5)  # broadcasting
    back = jax.jit(lat.k_to_lattice_params)(batched)
    ref = np.array([pm.abc + pm.angles for _, pm in FAMILY_LATTICES.values()])
    np.testing.assert_allclose(back, ref, atol=1e-3)
    assert batched.dtype == jnp.float32


def _fd_sum_expm(k, h=1e-6):
    """Central differences of sum(expm(sum k_i B_i)) in float64 (scipy)."""
    b = lat.BASIS.astype(np.float64)
    f = lambda kk: scipy.linalg.expm(np.einsum("i,ijk->jk", kk, b)).sum()  # noqa: E731
    return np.array([(f(k + h * e) - f(k - h * e)) / (2 * h) for e in np.eye(6)])


@pytest.mark.parametrize("which", ["random", "cubic", "hexagonal"])
def test_grad_k_to_lattice_is_finite_and_correct(which):
    k = np.random.default_rng(7).normal(scale=0.3, size=6)
    k[5] += 1.0
    if which != "random":  # degenerate spectra: eigh's own derivative would be NaN here
        sg = 225 if which == "cubic" else 191
        k = np.asarray(lat.project_k(k, *lat.family_mask_and_bias(sg)), np.float64)
    g = jax.jit(jax.grad(lambda kk: jnp.sum(lat.k_to_lattice(kk))))(jnp.asarray(k, jnp.float32))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, _fd_sum_expm(k), rtol=1e-4, atol=1e-4)


def test_grad_lattice_to_k_wrt_lattice():
    rng = np.random.default_rng(11)
    for m in (FAMILY_LATTICES["cubic"][1].matrix, FAMILY_LATTICES["triclinic"][1].matrix):
        w = rng.normal(size=6)
        b = lat.BASIS.astype(np.float64)

        def f64(mm, w=w, b=b):  # float64 numpy reference: 1/2 log(G) via eigh
            ev, u = np.linalg.eigh(mm @ mm.T)
            return np.einsum("i,ijk,jk->", w, b, 0.5 * (u * np.log(ev)) @ u.T)

        h = 1e-6
        fd = np.zeros((3, 3))
        for i in range(3):
            for j in range(3):
                e = np.zeros((3, 3))
                e[i, j] = h
                fd[i, j] = (f64(m + e) - f64(m - e)) / (2 * h)
        g = jax.grad(lambda mm, w=w: jnp.dot(lat.lattice_to_k(mm), w.astype(np.float32)))(
            jnp.asarray(m, jnp.float32)
        )
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-5)


def test_log_volume_is_the_log_of_pymatgens_cell_volume():
    rng = np.random.default_rng(5)
    for name, (_sg, reference) in FAMILY_LATTICES.items():
        k = np.asarray(lat.lattice_to_k(jnp.asarray(reference.matrix, jnp.float32)))
        np.testing.assert_allclose(
            float(lat.log_volume(k)), np.log(reference.volume), rtol=1e-5, err_msg=name
        )
    ks = rng.normal(scale=0.4, size=(16, 6)).astype(np.float32)
    volumes = [Lattice(np.asarray(m, np.float64)).volume for m in lat.k_to_lattice(jnp.asarray(ks))]
    np.testing.assert_allclose(np.asarray(lat.log_volume(ks)), np.log(volumes), rtol=1e-5, atol=1e-5)


def test_without_volume_change_moves_k_at_constant_volume():
    rng = np.random.default_rng(9)
    k = rng.normal(scale=0.3, size=(8, 6)).astype(np.float32)
    direction = rng.normal(size=(8, 6)).astype(np.float32)
    kept = np.asarray(lat.without_volume_change(direction))
    np.testing.assert_array_equal(kept[:, :5], direction[:, :5])
    # the derivative of log det exp(S(k)) along the kept direction is zero (autodiff through eigh)
    log_det = jax.vmap(lambda kk: jnp.linalg.slogdet(lat.k_to_lattice(kk))[1])
    _, along_kept = jax.jvp(log_det, (jnp.asarray(k),), (jnp.asarray(kept),))
    _, along_raw = jax.jvp(log_det, (jnp.asarray(k),), (jnp.asarray(direction),))
    np.testing.assert_allclose(np.asarray(along_kept), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(along_raw), np.sqrt(3.0) * direction[:, 5], rtol=1e-4, atol=1e-5)
    # and a finite step along it keeps pymatgen's volume
    before = [Lattice(np.asarray(m, np.float64)).volume for m in lat.k_to_lattice(jnp.asarray(k))]
    after = [Lattice(np.asarray(m, np.float64)).volume for m in lat.k_to_lattice(jnp.asarray(k + 0.5 * kept))]
    np.testing.assert_allclose(after, before, rtol=1e-5)
