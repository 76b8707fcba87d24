"""Behaviour tests for ``unimdm_jax.data.symmetry`` (symmetry extraction, Wyckoff arrays).

Every expectation comes from an independent source: textbook Wyckoff assignments, spglib
(through pymatgen's SpacegroupAnalyzer) run on the input or on the returned cell, pyxtal's
general-position operations, pymatgen's StructureMatcher, and linear-algebra identities.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from pymatgen.core import Composition, Element, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from unimdm_jax import schema
from unimdm_jax.data.io import read_rows, structure_from_cif
from unimdm_jax.data.symmetry import (
    SymmetrizedCrystal,
    SymmetryError,
    WyckoffSite,
    build_crystal,
    extract_symmetry,
    orbit_arrays,
    space_group,
)
from unimdm_jax.metrics import match_rms
from unimdm_jax.parallel import process_pool

# --------------------------------------------------------------------------------------
# helpers


def periodic_distance(a, b) -> np.ndarray:
    """Largest per-axis distance between fractional coordinates, modulo lattice translations."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d -= np.round(d)
    return np.abs(d).max(axis=-1)


def same_point_set(a, b, tol=1e-4) -> bool:
    """Whether two sets of fractional coordinates coincide modulo 1 (each point matched)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) != len(b):
        return False
    dist = periodic_distance(a[:, None, :], b[None, :, :])
    return bool((dist.min(axis=1) < tol).all() and (dist.min(axis=0) < tol).all())


def unique_points(points, tol=1e-4) -> np.ndarray:
    kept: list[np.ndarray] = []
    for p in np.asarray(points, np.float64) % 1.0:
        if not kept or periodic_distance(np.asarray(kept), p).min() > tol:
            kept.append(p)
    return np.asarray(kept)


def spglib_dataset(structure: Structure, symprec: float = 1e-3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_dataset()


def spglib_number(structure: Structure, symprec: float) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number()


def labels_by_element(crystal: SymmetrizedCrystal) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for site in crystal.sites:
        out.setdefault(site.element, []).append(site.label)
    return {k: sorted(v) for k, v in out.items()}


def assert_consistent_arrays(crystal: SymmetrizedCrystal) -> None:
    """Per-atom arrays against their defining relations (closed forms, no code output reused)."""
    n = crystal.num_atoms
    mid = crystal.material_id
    for name, shape in [
        ("atomic_numbers", (n,)),
        ("frac_coords", (n, 3)),
        ("wyckoff_ops", (n, 4, 4)),
        ("anchor_index", (n,)),
        ("ops_rotation_pinv", (n, 3, 3)),
        ("site_index", (n,)),
    ]:
        assert getattr(crystal, name).shape == shape, (mid, name)
    assert n == sum(s.multiplicity for s in crystal.sites), mid
    x = crystal.frac_coords.astype(np.float64)
    assert (x >= 0).all() and (x < 1).all(), mid
    ops = crystal.wyckoff_ops.astype(np.float64)
    np.testing.assert_array_equal(ops[:, 3, :], np.tile([0.0, 0.0, 0.0, 1.0], (n, 1)))

    # orbit bookkeeping: contiguous orbits, anchor first, multiplicities, elements
    site_index = crystal.site_index
    np.testing.assert_array_equal(
        site_index, np.repeat(np.arange(len(crystal.sites)), [s.multiplicity for s in crystal.sites])
    )
    first = np.concatenate([[0], np.cumsum([s.multiplicity for s in crystal.sites])[:-1]])
    np.testing.assert_array_equal(crystal.anchor_index, first[site_index])
    for k, site in enumerate(crystal.sites):
        assert (crystal.atomic_numbers[site_index == k] == Element(site.element).Z).all(), mid
        # the anchor sits at the site's representative
        assert periodic_distance(x[first[k]], site.representative) < 1e-5, (mid, site)
        # number of free parameters == rank of the anchor's rotation part
        assert len(site.free_parameters) == np.linalg.matrix_rank(ops[first[k], :3, :3]), (mid, site)

    # x_i = W_i [x_anchor; 1] (mod 1)
    anchors = x[crystal.anchor_index]
    images = np.einsum("nij,nj->ni", ops, np.concatenate([anchors, np.ones((n, 1))], axis=1))[:, :3]
    assert periodic_distance(images, x).max() < 1e-5, mid

    # the anchor's own operation fixes the anchor (W_a is idempotent on its position)
    own = ops[crystal.anchor_index == np.arange(n)]
    own_images = np.einsum(
        "nij,nj->ni",
        own,
        np.concatenate([x[crystal.anchor_index == np.arange(n)], np.ones((len(own), 1))], axis=1),
    )
    assert periodic_distance(own_images[:, :3], x[crystal.anchor_index == np.arange(n)]).max() < 1e-5, mid

    # ops_rotation_pinv is the Moore-Penrose pseudo-inverse (the four Penrose identities)
    a = ops[:, :3, :3]
    p = crystal.ops_rotation_pinv.astype(np.float64)
    tol = 1e-5
    np.testing.assert_allclose(a @ p @ a, a, atol=tol)
    np.testing.assert_allclose(p @ a @ p, p, atol=tol)
    np.testing.assert_allclose(np.swapaxes(a @ p, 1, 2), a @ p, atol=tol)
    np.testing.assert_allclose(np.swapaxes(p @ a, 1, 2), p @ a, atol=tol)

    # no two atoms of the cell coincide
    if n > 1:
        cart = crystal.structure().distance_matrix
        assert cart[~np.eye(n, dtype=bool)].min() > 0.1, mid


def assert_orbits_match_spglib(crystal: SymmetrizedCrystal) -> None:
    """spglib, run on the returned cell, finds the same group and the same orbits."""
    structure = crystal.structure()
    data = spglib_dataset(structure, 1e-3)
    assert data.number == crystal.spacegroup_number, crystal.material_id
    equivalent = np.asarray(data.equivalent_atoms)
    same_spglib = equivalent[:, None] == equivalent[None, :]
    same_ours = crystal.site_index[:, None] == crystal.site_index[None, :]
    np.testing.assert_array_equal(same_spglib, same_ours, err_msg=crystal.material_id)
    # the orbit of each anchor under spglib's operations (with centrings) is the site's atoms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sym_ops = SpacegroupAnalyzer(structure, symprec=1e-3).get_symmetry_operations(cartesian=False)
    affine = np.stack([op.affine_matrix for op in sym_ops])
    x = crystal.frac_coords.astype(np.float64)
    for k, site in enumerate(crystal.sites):
        anchor = np.append(x[crystal.anchor_index[crystal.site_index == k][0]], 1.0)
        orbit = unique_points((affine @ anchor)[:, :3])
        assert len(orbit) == site.multiplicity, (crystal.material_id, site)
        assert same_point_set(orbit, x[crystal.site_index == k]), (crystal.material_id, site)


# --------------------------------------------------------------------------------------
# textbook crystals


def _sg(symbol, lattice, species, coords) -> Structure:
    return Structure.from_spacegroup(symbol, lattice, species, coords)


# name: (conventional structure, space group, lattice parameters of the conventional cell,
#        admissible Wyckoff assignments (element -> sorted labels), alternatives related by
#        an origin shift of the Euclidean normalizer are all listed)
TEXTBOOK = {
    "NaCl": (
        lambda: _sg("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        225,
        (5.64, 5.64, 5.64, 90, 90, 90),
        [{"Na": ["4a"], "Cl": ["4b"]}, {"Na": ["4b"], "Cl": ["4a"]}],
    ),
    "Si": (
        lambda: _sg("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]),  # pymatgen: origin choice 1
        227,
        (5.431, 5.431, 5.431, 90, 90, 90),
        [{"Si": ["8a"]}, {"Si": ["8b"]}],
    ),
    "ZnO": (
        lambda: _sg(
            "P6_3mc", Lattice.hexagonal(3.25, 5.207), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]
        ),
        186,
        (3.25, 3.25, 5.207, 90, 90, 120),
        [{"Zn": ["2b"], "O": ["2b"]}],
    ),
    "TiO2": (
        lambda: _sg(
            "P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.3049, 0.3049, 0]]
        ),
        136,
        (4.594, 4.594, 2.959, 90, 90, 90),
        [{"Ti": ["2a"], "O": ["4f"]}, {"Ti": ["2b"], "O": ["4g"]}],
    ),
    "CsCl": (
        lambda: _sg("Pm-3m", Lattice.cubic(4.123), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        221,
        (4.123, 4.123, 4.123, 90, 90, 90),
        [{"Cs": ["1a"], "Cl": ["1b"]}, {"Cs": ["1b"], "Cl": ["1a"]}],
    ),
    "SrTiO3": (
        lambda: _sg(
            "Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]
        ),
        221,
        (3.905, 3.905, 3.905, 90, 90, 90),
        [{"Sr": ["1a"], "Ti": ["1b"], "O": ["3c"]}, {"Sr": ["1b"], "Ti": ["1a"], "O": ["3d"]}],
    ),
    "CaF2": (
        lambda: _sg("Fm-3m", Lattice.cubic(5.463), ["Ca", "F"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
        225,
        (5.463, 5.463, 5.463, 90, 90, 90),
        [{"Ca": ["4a"], "F": ["8c"]}, {"Ca": ["4b"], "F": ["8c"]}],
    ),
    "Mg-hcp": (
        lambda: _sg("P6_3/mmc", Lattice.hexagonal(3.209, 5.211), ["Mg"], [[1 / 3, 2 / 3, 0.25]]),
        194,
        (3.209, 3.209, 5.211, 90, 90, 120),
        [{"Mg": ["2c"]}, {"Mg": ["2d"]}],
    ),
    "Al2O3": (  # corundum: rhombohedral, conventional cell on hexagonal axes (30 atoms)
        lambda: _sg(
            "R-3c", Lattice.hexagonal(4.759, 12.991), ["Al", "O"], [[0, 0, 0.35216], [0.30624, 0, 0.25]]
        ),
        167,
        (4.759, 4.759, 12.991, 90, 90, 120),
        [{"Al": ["12c"], "O": ["18e"]}],
    ),
}


def _variants(conventional: Structure) -> dict[str, Structure]:
    primitive = conventional.get_primitive_structure()
    shifted = primitive.copy()
    shifted.translate_sites(
        list(range(len(shifted))), [0.137, 0.291, 0.613], frac_coords=True, to_unit_cell=True
    )
    supercell = primitive.copy()
    supercell.make_supercell([1, 2, 1])
    rng = np.random.default_rng(0)
    jittered = conventional.copy()
    for i in range(len(jittered)):  # 1e-3 A noise, well inside symprec = 0.01 A
        jittered.translate_sites([i], rng.normal(scale=1e-3 / math.sqrt(3), size=3), frac_coords=False)
    return {
        "conventional": conventional,
        "primitive": primitive,
        "shifted": shifted,
        "supercell": supercell,
        "jittered": jittered,
    }


@pytest.mark.parametrize("name", list(TEXTBOOK))
def test_textbook_crystals(name):
    build, number, parameters, assignments = TEXTBOOK[name]
    conventional = build()
    # the builder itself is right: group and atoms per conventional cell (sum of multiplicities)
    assert spglib_number(conventional, 0.01) == number
    assert len(conventional) == sum(int(label[:-1]) for labels in assignments[0].values() for label in labels)
    for variant, structure in _variants(conventional).items():
        where = f"{name}/{variant}"
        assert spglib_number(structure, 0.01) == number, where
        crystal = extract_symmetry(structure, where)
        assert crystal.material_id == where
        assert crystal.spacegroup_number == number, where
        assert crystal.spacegroup_symbol.replace("_", "") == conventional.get_space_group_info()[0].replace(
            "_", ""
        )
        assert labels_by_element(crystal) in assignments, (where, labels_by_element(crystal))
        assert crystal.num_atoms == len(conventional), where
        np.testing.assert_allclose(crystal.lattice_parameters, parameters, rtol=2e-3, err_msg=where)
        assert (
            Composition(crystal.structure().composition).reduced_formula
            == structure.composition.reduced_formula
        )
        assert match_rms(structure, crystal.structure()) is not None, where
        assert crystal.symprec == 0.01
        assert_consistent_arrays(crystal)
        assert_orbits_match_spglib(crystal)


def test_fixed_and_free_parameters_of_textbook_sites():
    """Special positions have no free parameters; (x,x,0) / (1/3,2/3,z) have one, with the right value."""
    nacl = extract_symmetry(TEXTBOOK["NaCl"][0]().get_primitive_structure())
    assert all(site.free_parameters == () for site in nacl.sites)
    rutile = extract_symmetry(TEXTBOOK["TiO2"][0]())
    oxygen = next(s for s in rutile.sites if s.element == "O")
    assert len(oxygen.free_parameters) == 1
    # rutile's O parameter is 0.3049 (or 1 - 0.3049, 0.3049 - 1/2 ... for the shifted origin)
    x = oxygen.free_parameters[0] % 1.0
    assert min(abs(x - v) for v in (0.3049, 1 - 0.3049, 0.5 - 0.3049, 0.5 + 0.3049, 0.3049 - 0.5 + 1)) < 1e-4
    wurtzite = extract_symmetry(TEXTBOOK["ZnO"][0]())
    zn, o = (next(s for s in wurtzite.sites if s.element == e) for e in ("Zn", "O"))
    assert len(zn.free_parameters) == len(o.free_parameters) == 1
    # the polar axis has no fixed origin: only the difference u = z(O) - z(Zn) is physical
    u = (o.representative[2] - zn.representative[2]) % 1.0
    assert min(abs(u - 0.382), abs(u - (1 - 0.382))) < 1e-4


def test_re_extraction_of_the_conventional_cell_is_stable(fixture_dataset):
    """Extracting the returned cell again gives the same group, labels' multiplicities and structure."""
    dataset, _ = fixture_dataset
    for i in range(0, len(dataset), 20):
        crystal = dataset[i]
        again = extract_symmetry(crystal.structure(), crystal.material_id)
        assert again.spacegroup_number == crystal.spacegroup_number
        assert sorted(s.multiplicity for s in again.sites) == sorted(s.multiplicity for s in crystal.sites)
        assert again.num_atoms == crystal.num_atoms
        np.testing.assert_allclose(again.lattice_parameters, crystal.lattice_parameters, rtol=1e-4)
        assert match_rms(crystal.structure(), again.structure()) is not None


# --------------------------------------------------------------------------------------
# the 200-structure fixture


def test_fixture_per_atom_arrays(fixture_dataset):
    dataset, failures = fixture_dataset
    assert failures == []
    for i in range(len(dataset)):
        assert_consistent_arrays(dataset[i])


def test_fixture_orbits_and_groups_match_spglib(fixture_dataset, fixture_csv):
    dataset, _ = fixture_dataset
    rows = read_rows(fixture_csv)
    for i, row in enumerate(rows):
        crystal = dataset[i]
        assert crystal.material_id == row.material_id
        assert_orbits_match_spglib(crystal)
        source = structure_from_cif(row.cif)
        # the group found is spglib's for the source at the tolerance that succeeded
        assert spglib_number(source, crystal.symprec) == crystal.spacegroup_number, row.material_id
        # the conventional cell holds (centring factor) x the primitive cell's atoms
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            primitive_atoms = len(SpacegroupAnalyzer(source, symprec=crystal.symprec).find_primitive())
        centring = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "R": 3, "F": 4}[crystal.spacegroup_symbol[0]]
        assert crystal.num_atoms == centring * primitive_atoms, row.material_id
        assert crystal.structure().composition.reduced_formula == source.composition.reduced_formula


def test_fixture_letters_match_spglib_for_most_crystals(fixture_dataset):
    """spglib's Wyckoff letters agree, except where an origin shift of the normalizer relabels
    sites (Pnma 4a<->4b, Fd-3m origin choice 1 vs 2, ...). Measured: 196 / 200 agree."""
    dataset, _ = fixture_dataset
    disagree = []
    for i in range(len(dataset)):
        crystal = dataset[i]
        data = spglib_dataset(crystal.structure(), 1e-3)
        ours = sorted(s.letter for s in crystal.sites)
        theirs = sorted(data.wyckoffs[j] for j in np.unique(data.equivalent_atoms))
        if ours != theirs:
            disagree.append((crystal.material_id, crystal.spacegroup_number, ours, theirs))
    assert len(disagree) <= 8, disagree


# --------------------------------------------------------------------------------------
# Wyckoff tables: orbit_arrays against pyxtal's general position, for all 230 groups


def test_orbit_arrays_for_every_wyckoff_position():
    rng = np.random.default_rng(1)
    positions = 0
    for number in range(1, 231):
        group = space_group(number)
        general = np.stack(
            [np.asarray(op.affine_matrix, np.float64) for op in group.Wyckoff_positions[0].ops]
        )
        for wp in group.Wyckoff_positions:
            positions += 1
            w0 = np.asarray(wp.ops[0].affine_matrix, np.float64)
            # the defining operation is idempotent modulo lattice translations
            square = w0 @ w0 - w0
            assert np.allclose(square[:3, :3], 0) and np.allclose(square[:3, 3], np.round(square[:3, 3])), (
                number,
                wp.letter,
            )
            representative = (w0 @ np.append(rng.uniform(size=3), 1.0))[:3] % 1.0
            coords, ops = orbit_arrays(number, wp.letter, representative)
            assert coords.shape == (wp.multiplicity, 3) and ops.shape == (wp.multiplicity, 4, 4)
            assert (coords >= 0).all() and (coords < 1).all()
            assert periodic_distance(coords[0], representative) < 1e-9, (number, wp.letter)
            assert len(unique_points(coords, 1e-6)) == wp.multiplicity, (number, wp.letter)
            # the orbit is the image of the representative under the whole group
            orbit = unique_points((general @ np.append(representative, 1.0))[:, :3], 1e-6)
            assert same_point_set(orbit, coords, 1e-6), (number, wp.letter)
    assert positions == 1731  # number of Wyckoff positions of the 230 groups (ITA, one setting each)


def test_build_crystal_rejects_a_wrong_multiplicity():
    site = WyckoffSite("Na", "a", 8, (0.0, 0.0, 0.0), ())
    with pytest.raises(SymmetryError, match="mp-wrong"):
        build_crystal("mp-wrong", 225, (5.0, 5.0, 5.0, 90, 90, 90), (site,))


# --------------------------------------------------------------------------------------
# schema round trip on the fixture


def _rebuild_from_record(record: schema.SymmetryRecord) -> SymmetrizedCrystal:
    lat = record.lattice
    sites = tuple(
        WyckoffSite(w.element, w.letter, w.multiplicity, tuple(w.coords), ()) for w in record.wyckoff
    )
    return build_crystal(
        record.provenance.id,
        record.space_group.number,
        (lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma),
        sites,
    )


def test_schema_round_trip_reproduces_every_fixture_structure(fixture_dataset, fixture_csv):
    dataset, _ = fixture_dataset
    rows = read_rows(fixture_csv)
    unmatched = []
    for i, row in enumerate(rows):
        crystal = dataset[i]
        record = crystal.to_record()
        schema.validate_record(record)
        parsed = schema.SymmetryRecord.from_json(record.to_json())
        assert parsed.to_dict() == record.to_dict()
        assert parsed.provenance.id == row.material_id
        assert parsed.space_group.number == crystal.spacegroup_number
        assert parsed.composition.num_atoms == crystal.num_atoms
        assert (
            Composition(parsed.composition.counts).reduced_formula == Composition(row.formula).reduced_formula
        )
        for name in ("band_gap", "formation_energy_per_atom"):
            assert parsed.property(name) == pytest.approx(row.properties[name], abs=1e-9)
        rebuilt = _rebuild_from_record(parsed)
        assert rebuilt.num_atoms == crystal.num_atoms
        assert sorted(rebuilt.atomic_numbers.tolist()) == sorted(crystal.atomic_numbers.tolist())
        if match_rms(structure_from_cif(row.cif), rebuilt.structure()) is None:
            unmatched.append(row.material_id)
    assert unmatched == [], f"round trip does not match the source CIF: {unmatched}"


# --------------------------------------------------------------------------------------
# failures


def test_disordered_structure_raises_one_line_symmetry_error():
    disordered = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(SymmetryError) as info:
        extract_symmetry(disordered, "mp-disordered-1")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "mp-disordered-1" in message
    assert "\n" not in message


def test_coincident_atoms_raise_symmetry_error():
    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0, 0, 0]])
    with pytest.raises(SymmetryError, match="mp-overlap"):
        extract_symmetry(overlapping, "mp-overlap")


def test_unparseable_input_raises_symmetry_error_naming_the_id():
    with pytest.raises(SymmetryError, match="mp-not-a-structure") as info:
        extract_symmetry("not a structure", "mp-not-a-structure")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------
# 1,000 MP-20 test structures: extract -> record (6 decimals) -> rebuild -> match


def _round_trip_row(args):
    material_id, cif = args
    warnings.filterwarnings("ignore")
    try:
        crystal = extract_symmetry(structure_from_cif(cif), material_id)
        record = schema.SymmetryRecord.from_json(crystal.to_record().to_json())
        rebuilt = _rebuild_from_record(record)
        if match_rms(structure_from_cif(cif), rebuilt.structure()) is None:
            return material_id, "no match"
        return material_id, None
    except Exception as error:  # noqa: BLE001 - reported by id
        return material_id, f"{type(error).__name__}: {error}"[:300]


@pytest.mark.slow
@pytest.mark.shared_data
def test_round_trip_first_1000_mp20_test_structures(shared_mp20):
    rows = read_rows(shared_mp20 / "test.csv.gz", limit=1000)
    assert len(rows) == 1000
    with process_pool(2) as pool:
        results = pool.map(_round_trip_row, [(r.material_id, r.cif) for r in rows], chunksize=25)
    failures = [(mid, reason) for mid, reason in results if reason is not None]
    for mid, reason in failures:
        print(f"round-trip failure: {mid}: {reason}")
    rate = 1 - len(failures) / len(rows)
    print(f"round trip: {len(rows) - len(failures)} / {len(rows)} match (rate {rate:.4f})")
    assert rate >= 0.995, f"match rate {rate:.4f}; failures: {failures}"
