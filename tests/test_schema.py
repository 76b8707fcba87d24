"""Tests of the JSON symmetry schema (``unimdm_jax.schema``).

Facts checked independently of the shipped code: the Wyckoff table against pyxtal for all 230
groups, textbook structures (rock salt, rutile, wurtzite, diamond, olivine), the 32 point-group
orders, the crystal-system number ranges and the element list against pymatgen.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from unimdm_jax import schema
from unimdm_jax.schema import (
    ELEMENT_SYMBOLS,
    SCHEMA_VERSION,
    Composition,
    LatticeParameters,
    Property,
    Provenance,
    SchemaError,
    SpaceGroup,
    SymmetryRecord,
    WyckoffEntry,
    WyckoffPositionInfo,
    all_space_groups,
    centring_factor,
    dump_records,
    is_valid_element,
    json_schema,
    load_record,
    load_records,
    space_group_info,
    space_group_number,
    space_group_symbol,
    validate_record,
    wyckoff_positions,
)
from unimdm_jax.schema.__main__ import main

PACKAGE_DIR = Path(schema.__file__).parent
HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def record_dict(number, symbol, sites, counts=None, properties=None, **extra):
    """A record dict from ``sites`` = [(element, letter, multiplicity), ...]."""
    if counts is None:
        counts = {}
        for element, _, multiplicity in sites:
            counts[element] = counts.get(element, 0) + multiplicity
    out = {
        "schema_version": SCHEMA_VERSION,
        "composition": counts,
        "space_group": {"number": number, "symbol": symbol},
        "wyckoff": [{"element": e, "letter": letter, "multiplicity": m} for e, letter, m in sites],
        "properties": properties if properties is not None else [],
        "provenance": {"source": "test"},
    }
    out.update(extra)
    return out


NACL = record_dict(
    225,
    "Fm-3m",
    [("Na", "a", 4), ("Cl", "b", 4)],
    properties=[{"name": "band_gap", "value": 5.0, "unit": "eV"}],
)


def rejected(data, match: str) -> str:
    with pytest.raises(SchemaError, match=match) as info:
        validate_record(data)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- tables vs pyxtal


def test_table_matches_pyxtal_for_all_230_groups():
    symmetry = pytest.importorskip("pyxtal.symmetry")
    for number in range(1, 231):
        group = symmetry.Group(number)
        info = space_group_info(number)
        assert info.symbol == group.symbol
        assert info.crystal_system == group.lattice_type
        assert info.centring == group.symbol[0]
        assert info.point_group == group.point_group
        assert info.hall_number == group.hall_number
        expected = {}
        for wp in group:
            wp.get_site_symmetry()
            expected[wp.letter] = WyckoffPositionInfo(
                wp.letter,
                wp.multiplicity,
                wp.get_dof(),
                wp.site_symm,
                wp.ops[0].as_xyz_str().replace(" ", ""),
            )
        assert {p.letter: p for p in info.wyckoff} == expected, number


POINT_GROUP_ORDER = {
    "1": 1, "-1": 2, "2": 2, "m": 2, "2/m": 4, "222": 4, "mm2": 4, "mmm": 8,
    "4": 4, "-4": 4, "4/m": 8, "422": 8, "4mm": 8, "-42m": 8, "4/mmm": 16,
    "3": 3, "-3": 6, "32": 6, "3m": 6, "-3m": 12,
    "6": 6, "-6": 6, "6/m": 12, "622": 12, "6mm": 12, "-62m": 12, "6/mmm": 24,
    "23": 12, "m-3": 24, "432": 24, "-43m": 24, "m-3m": 48,
}  # fmt: skip


def test_table_structure_and_textbook_facts():
    groups = all_space_groups()
    assert [g.number for g in groups] == list(range(1, 231))
    assert sum(len(g.wyckoff) for g in groups) == 1731  # number of Wyckoff positions in ITA vol. A
    assert len({g.point_group for g in groups}) == 32
    systems = [(2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
               (167, "trigonal"), (194, "hexagonal"), (230, "cubic")]  # fmt: skip
    for group in groups:
        assert group.crystal_system == next(name for last, name in systems if group.number <= last)
        letters = [p.letter for p in group.wyckoff]
        assert letters == sorted(letters, key=lambda c: (c.isupper(), c)) and len(set(letters)) == len(
            letters
        )
        general = group.wyckoff[-1]  # the general position carries the last letter
        assert general.dof == 3 and general.site_symmetry == "1" and general.representative == "x,y,z"
        assert general.multiplicity == max(p.multiplicity for p in group.wyckoff)
        # |general orbit| = |point group| x lattice points per conventional cell
        assert general.multiplicity == POINT_GROUP_ORDER[group.point_group] * centring_factor(group.number)
        for position in group.wyckoff:
            assert general.multiplicity % position.multiplicity == 0
            assert position.dof == len(set(re.findall("[xyz]", position.representative)))
    assert centring_factor(225) == 4 and centring_factor(166) == 3 and centring_factor(139) == 2
    assert centring_factor(62) == 1 and centring_factor(38) == 2
    assert [p.label for p in wyckoff_positions(62)] == ["4a", "4b", "4c", "8d"]
    assert [p.label for p in wyckoff_positions(225)][:3] == ["4a", "4b", "8c"]
    assert wyckoff_positions(47)[-1].label == "8A"  # Pmmm runs past 'z'
    assert wyckoff_positions(194)[7].representative == "x,2x,1/4"  # 6h of P6_3/mmc
    assert space_group_symbol(194) == "P63/mmc" and space_group_symbol(166) == "R-3m"
    for bad in (0, 231, True, "62"):
        with pytest.raises(ValueError):
            space_group_info(bad)
    assert (PACKAGE_DIR / "wyckoff_tables.json").stat().st_size < 1_000_000


@pytest.mark.parametrize(
    ("symbol", "number"),
    [("P6_3/mmc", 194), ("P 63/m m c", 194), ("P63/mmc", 194), ("P 6_3/m 2/m 2/c", 194), ("P2_1/c", 14),
     ("P 1 21/c 1", 14), ("Cmca", 64), ("Cmce", 64), ("Abm2", 39), ("R-3m:H", 166), ("R-3m:h", 166),
     ("Fd-3m:2", 227), ("Fm\u22123m", 225), ("I4_1/amd", 141), ("Pnma", 62)],
)  # fmt: skip
def test_symbol_spellings(symbol, number):
    assert space_group_number(symbol) == number


@pytest.mark.parametrize("symbol", ["R-3m:R", "Fd-3m:1", "PNMA", "Pnma:", "", "P7", 62])
def test_symbols_not_accepted(symbol):
    assert space_group_number(symbol) is None


def test_elements():
    assert len(ELEMENT_SYMBOLS) == len(set(ELEMENT_SYMBOLS)) == 118
    assert ELEMENT_SYMBOLS[0] == "H" and ELEMENT_SYMBOLS[25] == "Fe" and ELEMENT_SYMBOLS[-1] == "Og"
    assert is_valid_element("Na") and not is_valid_element("NA") and not is_valid_element("Xx")
    assert not is_valid_element(11) and not is_valid_element("D")
    periodic_table = pytest.importorskip("pymatgen.core.periodic_table")
    assert ELEMENT_SYMBOLS == tuple(periodic_table.Element.from_Z(z).symbol for z in range(1, 119))


# ----------------------------------------------------------------------------- textbook records


@pytest.mark.parametrize(
    ("number", "symbol", "sites"),
    [
        (225, "Fm-3m", [("Na", "a", 4), ("Cl", "b", 4)]),  # rock salt
        (136, "P4_2/mnm", [("Ti", "a", 2), ("O", "f", 4)]),  # rutile
        (186, "P6_3mc", [("Zn", "b", 2), ("O", "b", 2)]),  # wurtzite: 2b has a free z
        (227, "Fd-3m", [("Si", "a", 8)]),  # diamond
        (221, "Pm-3m", [("Sr", "a", 1), ("Ti", "b", 1), ("O", "c", 3)]),  # cubic perovskite
        (
            62,
            "Pnma",
            [("Li", "a", 4), ("Fe", "c", 4), ("P", "c", 4), ("O", "c", 4), ("O", "c", 4), ("O", "d", 8)],
        ),
        (166, "R-3m", [("Bi", "c", 6), ("Se", "a", 3), ("Se", "c", 6)]),  # Bi2Se3, hexagonal axes
        (194, "P 63/m m c", [("Mg", "c", 2)]),  # hcp
    ],
)
def test_textbook_records_valid(number, symbol, sites):
    record = validate_record(record_dict(number, symbol, sites))
    assert record.space_group.number == number
    assert SymmetryRecord.from_json(record.to_json()) == record


def test_nacl_record_fields_and_rejections():
    record = validate_record(NACL)
    assert record.composition.formula == "Na4 Cl4" and record.composition.reduced_formula == "NaCl"
    assert record.composition.num_atoms == 8
    assert [str(w) for w in record.wyckoff] == ["Na 4a", "Cl 4b"] and record.wyckoff[1].label == "4b"
    assert record.property("band_gap") == 5.0 and record.property("formation_energy_per_atom") is None
    # 4a is a fixed point (no free parameters): it cannot hold two orbits, whatever the elements
    rejected(
        record_dict(225, "Fm-3m", [("Na", "a", 4), ("Cl", "a", 4)]),
        r"wyckoff\[1\]: position 4a .* no free parameters",
    )
    rejected(record_dict(225, "Fm-3m", [("Na", "a", 4), ("Na", "a", 4)]), "no free parameters")
    # counts are for the conventional (F-centred) cell, not the primitive one
    message = rejected(
        record_dict(225, "Fm-3m", [("Na", "a", 4), ("Cl", "b", 4)], counts={"Na": 1, "Cl": 1}), "composition"
    )
    assert "conventional" in message


def test_composition_helpers():
    olivine = Composition({"Li": 4, "Fe": 4, "P": 4, "O": 16})
    assert (
        olivine.formula == "Li4 Fe4 P4 O16"
        and olivine.reduced_formula == "LiFePO4"
        and olivine.num_atoms == 28
    )
    assert Composition({"Fe": 6, "O": 9}).reduced_formula == "Fe2O3"
    assert hash(olivine) == hash(Composition(dict(olivine.counts)))
    entries = [WyckoffEntry("Zn", "b", 2), WyckoffEntry("O", "b", 2), WyckoffEntry("Zn", "a", 2)]
    assert Composition.from_wyckoff(entries).counts == {"Zn": 4, "O": 2}


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["wyckoff"][1].update(letter="z"),
         r"^wyckoff\[1\]: space group 225 \(Fm-3m\) has no Wyckoff position 'z'$"),
        (lambda d: d["wyckoff"][1].update(letter="B"), "no Wyckoff position 'B'"),
        (lambda d: d["wyckoff"][1].update(multiplicity=8), r"wyckoff\[1\]: multiplicity 8"),
        (lambda d: d["space_group"].update(number=0), r"space_group.number: must be in 1-230"),
        (lambda d: d["space_group"].update(number=231), r"space_group.number: must be in 1-230"),
        (lambda d: d["space_group"].update(number=True), "expected an integer"),
        (lambda d: d["space_group"].update(symbol="Pnma"), "names space group 62"),
        (lambda d: d["space_group"].update(symbol="Fm3m"), "not a recognised"),
        (lambda d: d["composition"].update(Xx=4), "composition: unknown element symbol 'Xx'"),
        (lambda d: d["wyckoff"][0].update(element="Xx"), r"wyckoff\[0\].element: unknown element"),
        (lambda d: d["composition"].update(Na=4.0), "expected an integer"),
        (lambda d: d["composition"].update(Na=0), "must be >= 1"),
        (lambda d: d["composition"].pop("Cl"), "'Cl' is not in the composition"),
        (lambda d: d["composition"].update(K=4), "'K' has no Wyckoff position"),
        (lambda d: d["properties"][0].update(value=float("nan")), "finite"),
        (lambda d: d["properties"][0].update(value=float("inf")), "finite"),
        (lambda d: d["properties"][0].update(value="5"), "expected a number"),
        (lambda d: d["properties"][0].pop("unit"), r"properties\[0\]: missing required key 'unit'"),
        (lambda d: d["properties"][0].update(unit=""), "non-empty"),
        (lambda d: d["properties"][0].update(unit="meV"), "band_gap must be given in 'eV'"),
        (lambda d: d["properties"][0].update(name=" "), "non-empty"),
        (lambda d: d["properties"].append(dict(d["properties"][0])), "duplicate property"),
        (lambda d: d.update(extra=1), "unknown top-level key 'extra'"),
        (lambda d: d["wyckoff"][0].update(site="x"), r"wyckoff\[0\]: unknown key"),
        (lambda d: d.pop("provenance"), "missing required key 'provenance'"),
        (lambda d: d["provenance"].update(source=""), "provenance.source"),
        (lambda d: d["provenance"].update(rank=-1), "provenance.rank"),
        (lambda d: d.update(schema_version="2.0"), "schema_version: unsupported version"),
        (lambda d: d.update(wyckoff=[]), "at least one"),
        (lambda d: d.update(wyckoff={}), "expected an array"),
        (lambda d: d["wyckoff"][0].update(coords=[0, 0]), "3 fractional coordinates"),
        (lambda d: d["wyckoff"][0].update(coords=[0, 0, float("nan")]), "finite"),
        (lambda d: d.update(lattice={"a": 5.6, "b": 5.6, "c": 5.7, "alpha": 90, "beta": 90, "gamma": 90}),
         "cubic: needs a = b = c"),
        (lambda d: d.update(lattice={"a": 5.6, "b": 5.6, "c": 5.6, "alpha": 90, "beta": 90, "gamma": 0}),
         "between 0 and 180"),
        (lambda d: d.update(lattice={"a": -5.6, "b": 5.6, "c": 5.6, "alpha": 90, "beta": 90, "gamma": 90}),
         "positive"),
    ],
)  # fmt: skip
def test_invalid_records_rejected(mutate, match):
    data = copy.deepcopy(NACL)
    mutate(data)
    rejected(data, match)


def test_lattice_constraints():
    cubic = {"a": 5.64, "b": 5.64, "c": 5.64, "alpha": 90, "beta": 90, "gamma": 90}
    assert validate_record({**NACL, "lattice": cubic}).lattice == LatticeParameters(
        5.64, 5.64, 5.64, 90, 90, 90
    )
    hexagonal = {"a": 4.14, "b": 4.14, "c": 28.6, "alpha": 90, "beta": 90, "gamma": 120}
    bi2se3 = record_dict(166, "R-3m", [("Bi", "c", 6), ("Se", "a", 3), ("Se", "c", 6)], lattice=hexagonal)
    validate_record(bi2se3)
    rhombohedral = {"a": 9.8, "b": 9.8, "c": 9.8, "alpha": 24.3, "beta": 24.3, "gamma": 24.3}
    rejected({**bi2se3, "lattice": rhombohedral}, "hexagonal axes")
    rejected(
        {**bi2se3, "space_group": {"number": 166, "symbol": "R-3m:R"}}, "rhombohedral axes are not supported"
    )
    monoclinic = record_dict(14, "P2_1/c", [("Zr", "e", 4), ("O", "e", 4), ("O", "e", 4)])
    validate_record(
        {**monoclinic, "lattice": {"a": 5.15, "b": 5.21, "c": 5.31, "alpha": 90, "beta": 99.2, "gamma": 90}}
    )
    rejected(
        {**monoclinic, "lattice": {"a": 5.15, "b": 5.21, "c": 5.31, "alpha": 99.2, "beta": 90, "gamma": 90}},
        "unique axis b",
    )
    triclinic = record_dict(2, "P-1", [("Cu", "i", 2)])
    rejected(
        {**triclinic, "lattice": {"a": 1, "b": 1, "c": 1, "alpha": 170, "beta": 170, "gamma": 170}},
        "positive volume",
    )


def test_validate_record_objects():
    record = validate_record(NACL)
    assert validate_record(record) == record
    bad = SymmetryRecord(
        composition=Composition({"Na": 4, "Cl": 4}),
        space_group=SpaceGroup(225, "Fm-3m"),
        wyckoff=(WyckoffEntry("Na", "a", 4), WyckoffEntry("Cl", "a", 4)),
        properties=(),
        provenance=Provenance("test"),
    )
    with pytest.raises(SchemaError, match="no free parameters"):
        validate_record(bad)
    with pytest.raises(SchemaError, match=r"wyckoff\[0\]: expected WyckoffEntry"):
        validate_record(
            SymmetryRecord(bad.composition, bad.space_group, ({"element": "Na"},), (), bad.provenance)
        )
    with pytest.raises(SchemaError, match="must be a JSON object"):
        validate_record([NACL])
    with pytest.raises(SchemaError, match="duplicate key"):
        SymmetryRecord.from_json('{"composition": {}, "composition": {}}')
    with pytest.raises(SchemaError, match="invalid JSON"):
        SymmetryRecord.from_json('{"composition": ')
    assert issubclass(SchemaError, ValueError)


# ----------------------------------------------------------------------------- property-based

ELEMENT_POOL = ("Li", "Na", "Mg", "Al", "Si", "O", "S", "Cl", "Ti", "Fe", "Ni", "Zn", "Ba", "Bi")
SYSTEM_LATTICE = {
    "triclinic": lambda a, b, c, al, be, ga: (a, b, c, al, be, ga),
    "monoclinic": lambda a, b, c, al, be, ga: (a, b, c, 90, be, 90),
    "orthorhombic": lambda a, b, c, al, be, ga: (a, b, c, 90, 90, 90),
    "tetragonal": lambda a, b, c, al, be, ga: (a, a, c, 90, 90, 90),
    "trigonal": lambda a, b, c, al, be, ga: (a, a, c, 90, 90, 120),
    "hexagonal": lambda a, b, c, al, be, ga: (a, a, c, 90, 90, 120),
    "cubic": lambda a, b, c, al, be, ga: (a, a, a, 90, 90, 90),
}
finite_floats = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def valid_records(draw):
    """A random valid record built from the tables: dof-0 positions are used at most once."""
    number = draw(st.integers(1, 230))
    group = space_group_info(number)
    entries, fixed_used = [], set()
    for _ in range(draw(st.integers(1, 5))):
        position = draw(st.sampled_from(group.wyckoff))
        if position.dof == 0:
            if position.letter in fixed_used:
                continue
            fixed_used.add(position.letter)
        coords = draw(st.none() | st.tuples(*[st.floats(0, 1, exclude_max=True)] * 3))
        entries.append(
            WyckoffEntry(draw(st.sampled_from(ELEMENT_POOL)), position.letter, position.multiplicity, coords)
        )
    counts = Composition.from_wyckoff(entries).counts
    order = draw(st.permutations(list(counts)))
    names = draw(
        st.lists(st.sampled_from(["band_gap", "formation_energy_per_atom", "bulk_modulus"]), unique=True)
    )
    units = {"band_gap": "eV", "formation_energy_per_atom": "eV/atom", "bulk_modulus": "GPa"}
    properties = tuple(Property(name, draw(finite_floats), units[name]) for name in names)
    lattice = None
    if draw(st.booleans()):
        lengths = [draw(st.floats(2, 30)) for _ in range(3)]
        angles = [draw(st.floats(80, 110)) for _ in range(3)]
        lattice = LatticeParameters(*SYSTEM_LATTICE[group.crystal_system](*lengths, *angles))
    symbol = draw(st.sampled_from([group.symbol, *group.aliases]))
    provenance = Provenance(
        source=draw(st.sampled_from(["mp_20", "stage1"])),
        id=draw(st.none() | st.text(max_size=8)),
        model=draw(st.none() | st.just("llm-0.5b")),
        score=draw(st.none() | finite_floats),
        rank=draw(st.none() | st.integers(0, 100)),
    )
    return SymmetryRecord(
        composition=Composition({element: counts[element] for element in order}),
        space_group=SpaceGroup(number, symbol),
        wyckoff=tuple(entries),
        properties=properties,
        provenance=provenance,
        lattice=lattice,
    )


@HYPOTHESIS
@given(valid_records())
def test_random_valid_records_validate_and_round_trip(record):
    assert validate_record(record) == record
    assert SymmetryRecord.from_json(record.to_json()) == record
    assert SymmetryRecord.from_dict(json.loads(record.to_json(indent=2))) == record
    assert record.composition.num_atoms == sum(w.multiplicity for w in record.wyckoff)
    assert record.composition.num_atoms % centring_factor(record.space_group.number) == 0
    assert not json_schema_violations(record.to_dict())


@HYPOTHESIS
@given(valid_records(), st.data())
def test_mutated_records_rejected(record, data):
    d = record.to_dict()
    group = space_group_info(record.space_group.number)
    kind = data.draw(st.sampled_from(["count", "letter", "multiplicity", "fixed_twice", "number"]))
    index = data.draw(st.integers(0, len(d["wyckoff"]) - 1))
    entry = d["wyckoff"][index]
    if kind == "count":
        element = data.draw(st.sampled_from(sorted(d["composition"])))
        d["composition"][element] += data.draw(st.sampled_from([-1, 1, group.centring_factor]))
        if d["composition"][element] == 0:
            d["composition"][element] = 2 * record.composition.counts[element]
    elif kind == "letter":
        present = {p.letter for p in group.wyckoff}  # Pmmm (47) uses all 27 letters a-z, A: "B" is never one
        entry["letter"] = data.draw(
            st.sampled_from([c for c in "abcdefghijklmnopqrstuvwxyzAB" if c not in present])
        )
    elif kind == "multiplicity":
        entry["multiplicity"] += data.draw(st.integers(1, 10))
    elif kind == "fixed_twice":
        fixed = [p for p in group.wyckoff if p.dof == 0]
        if not fixed:
            return
        position = data.draw(st.sampled_from(fixed))
        element = data.draw(st.sampled_from(ELEMENT_POOL))
        for _ in range(2):
            d["wyckoff"].append(
                {"element": element, "letter": position.letter, "multiplicity": position.multiplicity}
            )
        d["composition"][element] = d["composition"].get(element, 0) + 2 * position.multiplicity
    else:
        d["space_group"]["number"] = data.draw(st.sampled_from([0, 231, -1, 1000]))
    with pytest.raises(SchemaError):
        validate_record(d)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value, prefix=()):
    yield prefix
    children = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    )
    for key, child in children:
        yield from _paths(child, (*prefix, key))


@HYPOTHESIS
@given(valid_records(), st.data(), json_values)
def test_arbitrary_corruption_gives_schema_error_only(record, data, replacement):
    """Replacing any part of a valid record by arbitrary JSON never raises anything but SchemaError."""
    d = record.to_dict()
    path = data.draw(st.sampled_from(list(_paths(d))))
    if not path:
        d = replacement
    else:
        parent = d
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = replacement
    try:
        validate_record(d)
    except SchemaError as error:
        assert "\n" not in str(error)


# ----------------------------------------------------------------------------- JSON Schema document


def json_schema_violations(instance, node=None, root=None, path="$"):
    """A small draft 2020-12 checker for the keywords our schema document uses."""
    root = root or json_schema()
    node = root if node is None else node
    if "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return json_schema_violations(instance, target, root, path)
    types = {"object": dict, "array": list, "string": str, "null": type(None)}
    errors = []
    for key, want in node.items():
        if key in ("$schema", "$id", "title", "description", "$defs"):
            continue
        if key == "type":
            names = want if isinstance(want, list) else [want]
            ok = any(
                (isinstance(instance, (int, float)) and not isinstance(instance, bool)) if n == "number"
                else (isinstance(instance, int) and not isinstance(instance, bool)) if n == "integer"
                else isinstance(instance, types[n])
                for n in names
            )  # fmt: skip
            if not ok:
                return [f"{path}: not {want}"]
        elif key == "const" and instance != want or key == "enum" and instance not in want:
            errors.append(f"{path}: {key}")
        elif key == "required":
            errors += [f"{path}: missing {k}" for k in want if k not in instance]
        elif key == "properties":
            for name, sub in want.items():
                if isinstance(instance, dict) and name in instance:
                    errors += json_schema_violations(instance[name], sub, root, f"{path}.{name}")
        elif key == "additionalProperties" and isinstance(instance, dict):
            extra = [k for k in instance if k not in node.get("properties", {})]
            for name in extra:
                errors += (
                    [f"{path}: extra {name}"]
                    if want is False
                    else json_schema_violations(instance[name], want, root, f"{path}.{name}")
                )
        elif key == "propertyNames" and isinstance(instance, dict):
            for name in instance:
                errors += json_schema_violations(name, want, root, f"{path}[{name}]")
        elif key == "items" and isinstance(instance, list):
            for i, item in enumerate(instance):
                errors += json_schema_violations(item, want, root, f"{path}[{i}]")
        elif key == "oneOf":
            if sum(not json_schema_violations(instance, sub, root, path) for sub in want) != 1:
                errors.append(f"{path}: oneOf")
        elif key in ("minItems", "minProperties", "minLength") and isinstance(instance, (list, dict, str)):
            errors += [f"{path}: {key}"] if len(instance) < want else []
        elif key == "maxItems" and isinstance(instance, list):
            errors += [f"{path}: {key}"] if len(instance) > want else []
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(instance, (int, float)):
                bad = {"minimum": instance < want, "maximum": instance > want,
                       "exclusiveMinimum": instance <= want,
                       "exclusiveMaximum": instance >= want}[key]  # fmt: skip
                errors += [f"{path}: {key}"] if bad else []
        elif key == "pattern" and isinstance(instance, str):
            errors += [] if re.search(want, instance) else [f"{path}: pattern"]
        elif key not in ("const", "enum", "additionalProperties", "propertyNames", "items", "minItems",
                         "minProperties", "minLength", "maxItems", "pattern"):  # fmt: skip
            raise AssertionError(f"checker does not know keyword {key!r}")
    return errors


def test_json_schema_document():
    document = json_schema()
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert document["$defs"]["element"]["enum"] == list(ELEMENT_SYMBOLS)
    assert json_schema() is not json_schema()  # callers get their own copy
    assert not json_schema_violations(validate_record(NACL).to_dict())
    for broken in ({**NACL, "extra": 1}, {**NACL, "composition": {"Xx": 1}}, {**NACL, "wyckoff": []}):
        assert json_schema_violations(broken)


def test_readme_example_is_valid():
    text = (PACKAGE_DIR / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    record = SymmetryRecord.from_json(example)
    assert record.composition.reduced_formula == "LiFePO4" and record.property("band_gap") == 3.7


# ----------------------------------------------------------------------------- files and CLI


def test_load_and_dump_records(tmp_path):
    records = [validate_record(NACL), validate_record(record_dict(227, "Fd-3m", [("Si", "a", 8)]))]
    for name in ("out.json", "out.jsonl"):
        assert dump_records(records, tmp_path / name) == 2
        assert load_records(tmp_path / name) == records
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    (tmp_path / "one.json").write_text(json.dumps(NACL))
    assert load_record(tmp_path / "one.json") == records[0]
    with pytest.raises(SchemaError, match="exactly one"):
        load_record(tmp_path / "out.json")
    with pytest.raises(SchemaError, match=r"\[1\]: missing required key 'wyckoff'"):
        dump_records([NACL, {k: v for k, v in NACL.items() if k != "wyckoff"}], tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()

    bad_line = copy.deepcopy(NACL)
    bad_line["wyckoff"][1]["letter"] = "a"
    (tmp_path / "bad.jsonl").write_text(json.dumps(NACL) + "\n\n" + json.dumps(bad_line) + "\n")
    with pytest.raises(SchemaError, match=r"^line 3: wyckoff\[1\]: position 4a"):
        load_records(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text(json.dumps(NACL) + "\n{oops\n")
    with pytest.raises(SchemaError, match=r"^line 2: invalid JSON: .* column 2$"):
        load_records(tmp_path / "broken.jsonl")
    (tmp_path / "list.json").write_text(json.dumps([NACL, bad_line]))
    with pytest.raises(SchemaError, match=r"^\[1\]\.wyckoff\[1\]: position 4a"):
        load_records(tmp_path / "list.json")
    (tmp_path / "number.json").write_text("42")
    with pytest.raises(SchemaError, match="expected a record object or a list"):
        load_records(tmp_path / "number.json")


def test_cli_validate(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(NACL))
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: 1 valid record(s)"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(record_dict(62, "Pnma", [("Na", "h", 4)])))
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    inputs = [good, bad, tmp_path / "missing.json", tmp_path, binary, deep]
    assert main(["validate", *map(str, inputs)]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 5 and captured.out.strip() == f"{good}: 1 valid record(s)"
    assert errors[0] == f"{bad}: wyckoff[0]: space group 62 (Pnma) has no Wyckoff position 'h'"
    assert errors[1].startswith(f"{tmp_path / 'missing.json'}: cannot read")
    assert errors[2].startswith(f"{tmp_path}: cannot read")
    assert "not UTF-8" in errors[3] and "invalid JSON" in errors[4]

    assert main(["validate"]) == 2
    assert main(["wyckoff", "62"]) == 0
    assert "8d" in capsys.readouterr().out
    assert main(["wyckoff", "P 6_3/m m c"]) == 0 and main(["wyckoff", "231"]) == 1
    capsys.readouterr()
    assert main(["show-schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_cli_subprocess_single_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(NACL)
        + "\n"
        + json.dumps({**NACL, "properties": [{"name": "band_gap", "value": 1}]})
        + "\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "unimdm_jax.schema", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.strip() == f"{bad}: line 2: properties[0]: missing required key 'unit'"


def test_import_is_light():
    code = (
        "import sys, unimdm_jax.schema as s; s.wyckoff_positions(225); s.json_schema(); "
        "print(sorted(m for m in ('jax', 'torch', 'pyxtal', 'pymatgen', 'spglib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
