"""Symmetry extraction: the ground truth that both stages learn from.

A structure is refined with pymatgen's SpacegroupAnalyzer and handed to pyxtal, which
returns the conventional cell of the space group in its standard setting (hexagonal axes
for the rhombohedral groups) and the occupied Wyckoff orbits. From that we keep, for every
atom of the conventional cell,

- its Wyckoff affine operation ``W_i`` (4x4): ``x_i = W_i @ [x_anchor, 1]``,
- the index of its orbit's anchor (representative) atom, and
- the pseudo-inverse of the rotation part of ``W_i`` (3x3), which maps a displacement of
  atom ``i`` back to the free parameters of its anchor.

That is exactly what a Wyckoff-constrained diffusion model (DiffCSP++, Jiao et al. 2024,
sec. 4.2) needs: noise and scores live on the anchors and are pushed to every atom through
``W_i``, so every intermediate state keeps the space group exactly.

Refinement tolerance: ``symprec=0.01`` first (the tolerance DiffCSP++ uses). If
SpacegroupAnalyzer or pyxtal fails at that tolerance, we retry with the tolerances in
``FALLBACK_TOLERANCES`` (tighter, which finds a subgroup rather than nothing). A structure
that fails at every tolerance raises :class:`SymmetryError`; callers report it by
material id and never drop it silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings

import numpy as np

from unimdm_jax import schema
from unimdm_jax.metrics import min_interatomic_distance

# pymatgen and pyxtal are imported on use: data.preprocess imports this module, and
# preprocess's CrystalDataset is read on the JAX-only machine (unimdm_jax.remote), which has neither

DEFAULT_SYMPREC = 0.01
FALLBACK_TOLERANCES = (0.001, 1e-4)


class SymmetryError(ValueError):
    """The symmetry of a structure could not be extracted."""


@dataclasses.dataclass(frozen=True)
class WyckoffSite:
    """One occupied Wyckoff orbit of the conventional cell."""

    element: str
    letter: str
    multiplicity: int
    representative: tuple[float, float, float]  # fractional coordinates of the anchor atom
    free_parameters: tuple[float, ...]  # values of the orbit's free parameters (len == dof)

    @property
    def label(self) -> str:
        return f"{self.multiplicity}{self.letter}"


@dataclasses.dataclass(frozen=True, eq=False)
class SymmetrizedCrystal:
    """A crystal in its conventional cell with per-atom Wyckoff information.

    Atoms are ordered orbit by orbit; the anchor of each orbit comes first within it.
    """

    material_id: str
    spacegroup_number: int
    spacegroup_symbol: str
    lattice_parameters: np.ndarray  # (6,) a, b, c [Angstrom], alpha, beta, gamma [degrees]
    sites: tuple[WyckoffSite, ...]
    atomic_numbers: np.ndarray  # (N,) int
    frac_coords: np.ndarray  # (N, 3) in [0, 1)
    wyckoff_ops: np.ndarray  # (N, 4, 4) affine: x_i = W_i [x_anchor; 1]
    anchor_index: np.ndarray  # (N,) index (within this crystal) of the orbit's anchor atom
    ops_rotation_pinv: np.ndarray  # (N, 3, 3) pseudo-inverse of W_i[:3, :3]
    site_index: np.ndarray  # (N,) index into ``sites``
    properties: dict[str, float]
    symprec: float  # the tolerance that succeeded

    @property
    def num_atoms(self) -> int:
        return int(len(self.atomic_numbers))

    @property
    def lattice_matrix(self) -> np.ndarray:
        from pymatgen.core import Lattice  # on use: see the note under the imports

        return np.asarray(Lattice.from_parameters(*self.lattice_parameters).matrix)

    def structure(self):
        """The conventional cell as a pymatgen Structure."""
        from pymatgen.core import Lattice, Structure  # on use: see the note under the imports

        return Structure(
            Lattice.from_parameters(*self.lattice_parameters),
            [int(z) for z in self.atomic_numbers],
            self.frac_coords,
        )

    def to_record(self, source: str = "dataset"):
        """The JSON symmetry schema record of this crystal (with its true properties)."""
        counts: dict[str, int] = {}
        for site in self.sites:
            counts[site.element] = counts.get(site.element, 0) + site.multiplicity
        properties = tuple(
            schema.Property(name, float(value), _unit(name))
            for name, value in self.properties.items()
            if np.isfinite(value)
        )
        return schema.SymmetryRecord(
            composition=schema.Composition(counts),
            space_group=schema.SpaceGroup(self.spacegroup_number, self.spacegroup_symbol),
            wyckoff=tuple(
                schema.WyckoffEntry(
                    s.element, s.letter, s.multiplicity, tuple(round(float(c), 6) for c in s.representative)
                )
                for s in self.sites
            ),
            properties=properties,
            provenance=schema.Provenance(source=source, id=self.material_id),
            lattice=schema.LatticeParameters(*(round(float(v), 6) for v in self.lattice_parameters)),
        )


#: Units of MP-20's and Perov-5's other energy columns, which a record may carry too.
OTHER_PROPERTY_UNITS = {
    "e_above_hull": "eV/atom",
    "energy_per_atom": "eV/atom",
    "heat_ref": "eV/atom",
}


def _unit(name: str) -> str:
    """The schema's unit of a property (built in or registered), else MP-20's, else ''."""
    return schema.KNOWN_PROPERTY_UNITS.get(name) or OTHER_PROPERTY_UNITS.get(name, "")


@functools.lru_cache(maxsize=None)
def space_group(number: int):
    """pyxtal's Group in its standard setting (cached: building one takes milliseconds)."""
    from pyxtal.symmetry import Group  # on use: see the note under the imports

    return Group(int(number))


@functools.lru_cache(maxsize=None)
def wyckoff_position(sg_number: int, letter: str):
    group = space_group(sg_number)
    for wp in group.Wyckoff_positions:
        if wp.letter == letter:
            return wp
    raise SymmetryError(f"space group {sg_number} has no Wyckoff position {letter!r}")


def orbit_arrays(sg_number: int, letter: str, representative) -> tuple[np.ndarray, np.ndarray]:
    """All positions of one Wyckoff orbit and their affine operations.

    Returns ``(frac_coords (m, 3) in [0, 1), ops (m, 4, 4))`` where ``ops[j]`` maps the
    representative to position ``j``; ``ops[0]`` is the position's first (defining) operation.
    """
    wp = wyckoff_position(sg_number, letter)
    ops = np.stack([np.asarray(op.affine_matrix, dtype=np.float64) for op in wp.ops])
    homogeneous = np.append(np.asarray(representative, dtype=np.float64), 1.0)
    coords = (ops @ homogeneous)[:, :3] % 1.0
    return coords, ops


def build_crystal(
    material_id: str,
    sg_number: int,
    lattice_parameters,
    sites: tuple[WyckoffSite, ...],
    properties: dict[str, float] | None = None,
    symprec: float = float("nan"),
) -> SymmetrizedCrystal:
    """Assemble per-atom arrays from Wyckoff sites (the inverse of extraction)."""
    from pymatgen.core import Element  # on use: see the note under the imports

    numbers, coords, ops, anchors, site_index = [], [], [], [], []
    for k, site in enumerate(sites):
        orbit_coords, orbit_ops = orbit_arrays(sg_number, site.letter, site.representative)
        if len(orbit_ops) != site.multiplicity:
            raise SymmetryError(
                f"{material_id}: Wyckoff {site.letter} of group {sg_number} has multiplicity "
                f"{len(orbit_ops)}, not {site.multiplicity}"
            )
        anchor = len(numbers)
        numbers += [Element(site.element).Z] * len(orbit_ops)
        coords.append(orbit_coords)
        ops.append(orbit_ops)
        anchors += [anchor] * len(orbit_ops)
        site_index += [k] * len(orbit_ops)
    wyckoff_ops = np.concatenate(ops).astype(np.float32)
    return SymmetrizedCrystal(
        material_id=material_id,
        spacegroup_number=int(sg_number),
        spacegroup_symbol=str(space_group(sg_number).symbol),
        lattice_parameters=np.asarray(lattice_parameters, dtype=np.float64),
        sites=tuple(sites),
        atomic_numbers=np.asarray(numbers, dtype=np.int32),
        frac_coords=np.concatenate(coords).astype(np.float32),
        wyckoff_ops=wyckoff_ops,
        anchor_index=np.asarray(anchors, dtype=np.int32),
        ops_rotation_pinv=np.linalg.pinv(wyckoff_ops[:, :3, :3].astype(np.float64)).astype(np.float32),
        site_index=np.asarray(site_index, dtype=np.int32),
        properties=dict(properties or {}),
        symprec=symprec,
    )


@functools.lru_cache(maxsize=None)
def _cached_pyxtal_class(name: str):
    """An lru-cached constructor for pyxtal's ``Group`` or ``Hall``.

    ``pyxtal.from_seed`` builds a fresh ``Group`` and ``Hall`` for every structure, and
    both scan pandas tables (about 30 ms per crystal, 40% of the extraction time). They
    depend only on their arguments and from_seed only reads them, so one instance per
    argument tuple gives identical results.
    """
    from pyxtal import symmetry  # on use: see the note under the imports

    return functools.lru_cache(maxsize=None)(getattr(symmetry, name))


@contextlib.contextmanager
def _pyxtal_with_cached_groups():
    import pyxtal.util  # binds pyxtal too; on use: see the note under the imports

    saved = pyxtal.Group, pyxtal.util.Hall
    pyxtal.Group, pyxtal.util.Hall = _cached_pyxtal_class("Group"), _cached_pyxtal_class("Hall")
    try:
        yield
    finally:
        pyxtal.Group, pyxtal.util.Hall = saved


def _pyxtal_from_structure(structure, symprec: float):
    # on use: see the note under the imports
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from pyxtal import pyxtal

    refined = SpacegroupAnalyzer(structure, symprec=symprec).get_refined_structure()
    crystal = pyxtal()
    with _pyxtal_with_cached_groups():
        crystal.from_seed(refined, tol=symprec)
    return crystal


MIN_ATOM_DISTANCE = 0.1  # Angstrom; closer atoms are a data error, not a structure


def _check_no_overlapping_atoms(structure, material_id: str) -> None:
    try:
        closest = min_interatomic_distance(structure)
    except (AttributeError, TypeError):
        raise SymmetryError(f"{material_id or 'structure'}: not a pymatgen Structure") from None
    if closest < MIN_ATOM_DISTANCE:
        raise SymmetryError(
            f"{material_id or 'structure'}: atoms {closest:.3g} A apart (minimum {MIN_ATOM_DISTANCE} A)"
        )


def extract_symmetry(
    structure,
    material_id: str = "",
    properties: dict[str, float] | None = None,
    symprec: float = DEFAULT_SYMPREC,
) -> SymmetrizedCrystal:
    """Space group, conventional cell and Wyckoff information of a pymatgen Structure."""
    _check_no_overlapping_atoms(structure, material_id)
    errors = []
    for tol in (symprec, *[t for t in FALLBACK_TOLERANCES if t < symprec]):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                crystal = _pyxtal_from_structure(structure, tol)
            sites = tuple(
                WyckoffSite(
                    element=str(site.specie),
                    letter=str(site.wp.letter),
                    multiplicity=int(site.wp.multiplicity),
                    representative=tuple(float(c) for c in np.asarray(site.position) % 1.0),
                    free_parameters=tuple(float(v) for v in site.wp.get_free_xyzs(np.asarray(site.position))),
                )
                for site in crystal.atom_sites
            )
            lattice_parameters = np.asarray(crystal.lattice.get_para(degree=True), dtype=np.float64)
            result = build_crystal(
                material_id, crystal.group.number, lattice_parameters, sites, properties, tol
            )
            if result.structure().composition.reduced_formula != structure.composition.reduced_formula:
                raise SymmetryError("the symmetrized cell changed the composition")
            return result
        except Exception as error:  # noqa: BLE001 - pyxtal/spglib raise many types
            errors.append(f"symprec={tol}: {type(error).__name__}: {error}")
    raise SymmetryError(f"{material_id or 'structure'}: symmetry extraction failed ({'; '.join(errors)})")
