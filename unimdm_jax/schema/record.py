"""Record types of the JSON symmetry schema and their validation.

Constructing the frozen dataclasses directly does not check anything; ``validate_record``
(the single entry point, also behind ``SymmetryRecord.from_dict`` / ``from_json``) does: first
structure and types, then the crystallographic rules. Every failure is a ``SchemaError``
whose message is one line ``"<path>: <reason>"``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .elements import is_valid_element
from .errors import SchemaError, json_type_name, show
from .properties import KNOWN_PROPERTY_UNITS
from .tables import SpaceGroupInfo, space_group_info, space_group_number

SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class Property:
    """A target (or measured) scalar property, e.g. ``Property("band_gap", 1.2, "eV")``."""

    name: str
    value: float
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit}


@dataclass(frozen=True)
class WyckoffEntry:
    """One orbit of the structure: an element on a Wyckoff position of the record's group.

    ``coords`` (optional) are the fractional coordinates of one representative atom in the
    conventional cell of the standard setting.
    """

    element: str
    letter: str
    multiplicity: int
    coords: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.coords, list):
            object.__setattr__(self, "coords", tuple(self.coords))

    @property
    def label(self) -> str:
        """Wyckoff label, e.g. ``"6h"``."""
        return f"{self.multiplicity}{self.letter}"

    def __str__(self) -> str:
        return f"{self.element} {self.label}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "element": self.element,
            "letter": self.letter,
            "multiplicity": self.multiplicity,
        }
        if self.coords is not None:
            out["coords"] = list(self.coords) if isinstance(self.coords, (tuple, list)) else self.coords
        return out


@dataclass(frozen=True)
class SpaceGroup:
    """Space group by ITA number (1-230) and Hermann-Mauguin symbol, e.g. ``SpaceGroup(62, "Pnma")``."""

    number: int
    symbol: str

    def __str__(self) -> str:
        return f"{self.symbol} ({self.number})"

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "symbol": self.symbol}


@dataclass(frozen=True)
class Composition:
    """Atom counts per element in the CONVENTIONAL cell of the record's space group.

    That is the primitive cell's atoms times the centring factor (P 1, A/B/C/I 2, R 3, F 4),
    e.g. rock-salt NaCl in Fm-3m is ``Composition({"Na": 4, "Cl": 4})``. Element order is kept
    as given. ``counts`` is a private copy; treat it as read-only.
    """

    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:  # copy (also accepts (element, count) pairs); leave garbage for validate_record to report
            object.__setattr__(self, "counts", dict(self.counts))
        except (TypeError, ValueError):
            pass

    def __hash__(self) -> int:
        return hash(frozenset(self.counts.items()))

    def __repr__(self) -> str:
        return f"Composition({self.counts!r})"

    @classmethod
    def from_wyckoff(cls, wyckoff: Iterable[WyckoffEntry]) -> Composition:
        """Counts implied by a Wyckoff assignment (sum of multiplicities per element, first-seen order)."""
        counts: dict[str, int] = {}
        for entry in wyckoff:
            counts[entry.element] = counts.get(entry.element, 0) + entry.multiplicity
        return cls(counts)

    @property
    def formula(self) -> str:
        """Cell formula with explicit counts, e.g. ``"Li4 Fe4 P4 O16"``."""
        return " ".join(f"{element}{count}" for element, count in self.counts.items())

    @property
    def reduced_formula(self) -> str:
        """Formula divided by the greatest common divisor, 1s omitted, e.g. ``"LiFePO4"``."""
        divisor = math.gcd(*self.counts.values()) if self.counts else 1
        divisor = divisor or 1
        parts = []
        for element, count in self.counts.items():
            reduced = count // divisor
            parts.append(element if reduced == 1 else f"{element}{reduced}")
        return "".join(parts)

    @property
    def num_atoms(self) -> int:
        """Atoms in the conventional cell."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts) if isinstance(self.counts, Mapping) else self.counts


@dataclass(frozen=True)
class Provenance:
    """Where a record came from: ``source`` (e.g. ``"mp_20"``, ``"stage1"``), the structure or
    sample ``id``, the generating ``model``, its ``score`` and ``rank`` (0 or 1 based, lower is better)."""

    source: str
    id: str | None = None
    model: str | None = None
    score: float | None = None
    rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        for key in ("id", "model", "score", "rank"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class LatticeParameters:
    """Conventional-cell lattice parameters: lengths in angstrom, angles in degrees."""

    a: float
    b: float
    c: float
    alpha: float
    beta: float
    gamma: float

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("a", "b", "c", "alpha", "beta", "gamma")}


@dataclass(frozen=True)
class SymmetryRecord:
    """The handoff between stage 1 (space group + Wyckoff prediction) and stage 2 (diffusion).

    ``from_dict`` / ``from_json`` validate; the constructor does not (use ``validate_record``).
    """

    composition: Composition
    space_group: SpaceGroup
    wyckoff: tuple[WyckoffEntry, ...]
    properties: tuple[Property, ...]
    provenance: Provenance
    lattice: LatticeParameters | None = None
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("wyckoff", "properties"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    def property(self, name: str) -> float | None:
        """Value of the property called ``name``, or None when the record has none."""
        for prop in self.properties:
            if prop.name == name:
                return prop.value
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (optional fields left out when None)."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "composition": self.composition.to_dict(),
            "space_group": self.space_group.to_dict(),
            "wyckoff": [entry.to_dict() for entry in self.wyckoff],
            "properties": [prop.to_dict() for prop in self.properties],
        }
        if self.lattice is not None:
            out["lattice"] = self.lattice.to_dict()
        out["provenance"] = self.provenance.to_dict()
        return out

    def to_json(self, indent: int | None = None) -> str:
        """Standard JSON (NaN/Infinity refused with ``ValueError``)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SymmetryRecord:
        """Parse and validate a dict; raises ``SchemaError``."""
        return validate_record(data)

    @classmethod
    def from_json(cls, text: str) -> SymmetryRecord:
        """Parse and validate one JSON record; raises ``SchemaError``."""
        return cls.from_dict(parse_json(text))


# ----------------------------------------------------------------------------- validation

#: Versions this code reads. Minor versions only add optional fields; see README "Versioning".
SUPPORTED_SCHEMA_VERSIONS: tuple[str, ...] = (SCHEMA_VERSION,)

#: Tolerances for the crystal-system constraints on lattice parameters.
LATTICE_LENGTH_RTOL = 1e-3
LATTICE_ANGLE_TOL_DEG = 0.1

_TOP_LEVEL_REQUIRED = ("schema_version", "composition", "space_group", "wyckoff", "properties", "provenance")
_TOP_LEVEL_OPTIONAL = ("lattice",)


def validate_record(obj: Mapping[str, Any] | SymmetryRecord) -> SymmetryRecord:
    """Check a record (parsed JSON dict or ``SymmetryRecord``) and return it as a ``SymmetryRecord``.

    Raises ``SchemaError`` with a one-line message naming the first problem found.
    """
    if isinstance(obj, SymmetryRecord):
        obj = _record_as_dict(obj)
    elif not isinstance(obj, Mapping):
        raise SchemaError(f"a record must be a JSON object, got {json_type_name(obj)}")
    return _parse_record(obj)


# ----------------------------------------------------------------------------- helpers


def _check_keys(data: Mapping, required: tuple[str, ...], optional: tuple[str, ...], path: str) -> None:
    allowed = set(required) | set(optional)
    for key in data:
        if key not in allowed:
            where = "top-level key" if not path else "key"
            raise SchemaError(
                f"unknown {where} {show(key)} (allowed: {', '.join(required + optional)})", path
            )
    for key in required:
        if key not in data:
            raise SchemaError(f"missing required key {key!r}", path)


def _expect_object(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise SchemaError(f"expected an object, got {json_type_name(value)}", path)
    return value


def _expect_array(value: Any, path: str) -> list | tuple:
    if not isinstance(value, (list, tuple)):
        raise SchemaError(f"expected an array, got {json_type_name(value)}", path)
    return value


def _expect_string(value: Any, path: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"expected a string, got {json_type_name(value)}", path)
    if not allow_empty and not value.strip():
        raise SchemaError("must be a non-empty string", path)
    return value


def _expect_int(value: Any, path: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"expected an integer, got {json_type_name(value)}", path)
    if minimum is not None and value < minimum:
        raise SchemaError(f"must be >= {minimum}, got {value}", path)
    return value


def _expect_finite(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"expected a number, got {json_type_name(value)}", path)
    if not math.isfinite(value):
        raise SchemaError(f"must be a finite number, got {value}", path)
    return value


def _optional(value: Any, parse, path: str, **kwargs):
    return None if value is None else parse(value, path, **kwargs)


# ----------------------------------------------------------------------------- record parts


def _parse_record(data: Mapping) -> SymmetryRecord:
    _check_keys(data, _TOP_LEVEL_REQUIRED, _TOP_LEVEL_OPTIONAL, "")
    version = _expect_string(data["schema_version"], "schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise SchemaError(
            f"unsupported version {show(version)} (supported: {', '.join(SUPPORTED_SCHEMA_VERSIONS)})",
            "schema_version",
        )
    composition = _parse_composition(data["composition"], "composition")
    space_group, group = _parse_space_group(data["space_group"], "space_group")
    wyckoff = _parse_wyckoff(data["wyckoff"], "wyckoff", group)
    _check_composition_matches(composition, wyckoff, group)
    properties = _parse_properties(data["properties"], "properties")
    lattice = _optional(data.get("lattice"), _parse_lattice, "lattice", group=group)
    provenance = _parse_provenance(data["provenance"], "provenance")
    return SymmetryRecord(
        composition=composition,
        space_group=space_group,
        wyckoff=wyckoff,
        properties=properties,
        provenance=provenance,
        lattice=lattice,
        schema_version=version,
    )


def _parse_composition(value: Any, path: str) -> Composition:
    counts = _expect_object(value, path)
    if not counts:
        raise SchemaError("must name at least one element", path)
    for element, count in counts.items():
        if not is_valid_element(element):
            raise SchemaError(f"unknown element symbol {show(element)}", path)
        _expect_int(count, f"{path}.{element}", minimum=1)
    return Composition(dict(counts))


def _parse_space_group(value: Any, path: str) -> tuple[SpaceGroup, SpaceGroupInfo]:
    data = _expect_object(value, path)
    _check_keys(data, ("number", "symbol"), (), path)
    number = _expect_int(data["number"], f"{path}.number")
    if not 1 <= number <= 230:
        raise SchemaError(f"must be in 1-230, got {number}", f"{path}.number")
    group = space_group_info(number)
    symbol = _expect_string(data["symbol"], f"{path}.symbol")
    symbol_number = space_group_number(symbol)
    if symbol_number is None:
        if group.centring == "R" and symbol.strip().endswith(":R"):
            reason = f"rhombohedral axes are not supported; use hexagonal axes ({group.symbol!r})"
        else:
            reason = (
                f"{show(symbol)} is not a recognised Hermann-Mauguin symbol (space group {group} expected)"
            )
        raise SchemaError(reason, f"{path}.symbol")
    if symbol_number != number:
        other = space_group_info(symbol_number)
        raise SchemaError(f"{show(symbol)} names space group {other}, not {group}", f"{path}.symbol")
    return SpaceGroup(number, symbol), group


def _parse_wyckoff(value: Any, path: str, group: SpaceGroupInfo) -> tuple[WyckoffEntry, ...]:
    items = _expect_array(value, path)
    if not items:
        raise SchemaError("must list at least one Wyckoff position", path)
    entries = []
    fixed_point_owner: dict[str, int] = {}  # letter of a dof-0 position -> index occupying it
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        data = _expect_object(item, where)
        _check_keys(data, ("element", "letter", "multiplicity"), ("coords",), where)
        element = _expect_string(data["element"], f"{where}.element")
        if not is_valid_element(element):
            raise SchemaError(f"unknown element symbol {show(element)}", f"{where}.element")
        letter = _expect_string(data["letter"], f"{where}.letter")
        multiplicity = _expect_int(data["multiplicity"], f"{where}.multiplicity", minimum=1)
        position = group.position(letter)
        if position is None:
            raise SchemaError(f"space group {group} has no Wyckoff position {show(letter)}", where)
        if multiplicity != position.multiplicity:
            raise SchemaError(
                f"multiplicity {multiplicity} disagrees with position {position.label} "
                f"of space group {group}",
                where,
            )
        if position.dof == 0:
            if letter in fixed_point_owner:
                first = fixed_point_owner[letter]
                raise SchemaError(
                    f"position {position.label} of space group {group} has no free parameters and is "
                    f"already occupied by {path}[{first}] ({entries[first]})",
                    where,
                )
            fixed_point_owner[letter] = index
        coords = _optional(data.get("coords"), _parse_coords, f"{where}.coords")
        entries.append(WyckoffEntry(element, letter, multiplicity, coords))
    return tuple(entries)


def _parse_coords(value: Any, path: str) -> tuple[float, float, float]:
    items = _expect_array(value, path)
    if len(items) != 3:
        raise SchemaError(f"expected 3 fractional coordinates, got {len(items)}", path)
    return tuple(float(_expect_finite(x, f"{path}[{i}]")) for i, x in enumerate(items))  # type: ignore[return-value]


def _check_composition_matches(
    composition: Composition, wyckoff: tuple[WyckoffEntry, ...], group: SpaceGroupInfo
) -> None:
    implied = Composition.from_wyckoff(wyckoff).counts
    for index, entry in enumerate(wyckoff):
        if entry.element not in composition.counts:
            raise SchemaError(f"element {entry.element!r} is not in the composition", f"wyckoff[{index}]")
    for element, count in composition.counts.items():
        if element not in implied:
            raise SchemaError(f"element {element!r} has no Wyckoff position", "composition")
        if implied[element] != count:
            labels = " + ".join(e.label for e in wyckoff if e.element == element)
            raise SchemaError(
                f"{element} count {count} disagrees with its Wyckoff positions "
                f"({labels} = {implied[element]} atoms); "
                f"counts refer to the conventional cell of {group.symbol} "
                f"(centring factor {group.centring_factor})",
                "composition",
            )


def _parse_properties(value: Any, path: str) -> tuple[Property, ...]:
    items = _expect_array(value, path)
    properties = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        data = _expect_object(item, where)
        _check_keys(data, ("name", "value", "unit"), (), where)
        name = _expect_string(data["name"], f"{where}.name")
        if name in seen:
            raise SchemaError(f"duplicate property {name!r}", f"{where}.name")
        seen.add(name)
        number = float(_expect_finite(data["value"], f"{where}.value"))
        unit = _expect_string(data["unit"], f"{where}.unit")
        expected_unit = KNOWN_PROPERTY_UNITS.get(name)
        if expected_unit is not None and unit != expected_unit:
            raise SchemaError(f"{name} must be given in {expected_unit!r}, got {show(unit)}", f"{where}.unit")
        properties.append(Property(name, number, unit))
    return tuple(properties)


def _parse_provenance(value: Any, path: str) -> Provenance:
    data = _expect_object(value, path)
    _check_keys(data, ("source",), ("id", "model", "score", "rank"), path)
    return Provenance(
        source=_expect_string(data["source"], f"{path}.source"),
        id=_optional(data.get("id"), _expect_string, f"{path}.id", allow_empty=True),
        model=_optional(data.get("model"), _expect_string, f"{path}.model", allow_empty=True),
        score=_optional(data.get("score"), _expect_finite, f"{path}.score"),
        rank=_optional(data.get("rank"), _expect_int, f"{path}.rank", minimum=0),
    )


def _parse_lattice(value: Any, path: str, group: SpaceGroupInfo) -> LatticeParameters:
    data = _expect_object(value, path)
    names = ("a", "b", "c", "alpha", "beta", "gamma")
    _check_keys(data, names, (), path)
    p = {name: float(_expect_finite(data[name], f"{path}.{name}")) for name in names}
    for name in ("a", "b", "c"):
        if p[name] <= 0:
            raise SchemaError(f"length must be positive, got {p[name]}", f"{path}.{name}")
    for name in ("alpha", "beta", "gamma"):
        if not 0 < p[name] < 180:
            raise SchemaError(
                f"angle must be strictly between 0 and 180 degrees, got {p[name]}", f"{path}.{name}"
            )
    cos = [math.cos(math.radians(p[name])) for name in ("alpha", "beta", "gamma")]
    if 1 - sum(c * c for c in cos) + 2 * cos[0] * cos[1] * cos[2] <= 0:
        raise SchemaError("angles do not describe a cell with positive volume", path)
    problem = _lattice_constraint_violation(p, group.crystal_system)
    if problem:
        raise SchemaError(f"space group {group} is {group.crystal_system}: {problem}", path)
    return LatticeParameters(**p)


def _lattice_constraint_violation(p: dict[str, float], system: str) -> str | None:
    """Which crystal-system constraint the parameters break (standard setting), or None."""

    def same_length(x: str, y: str) -> bool:
        return abs(p[x] - p[y]) <= LATTICE_LENGTH_RTOL * max(p[x], p[y])

    def angle_is(name: str, degrees: float) -> bool:
        return abs(p[name] - degrees) <= LATTICE_ANGLE_TOL_DEG

    if system == "monoclinic":
        if not (angle_is("alpha", 90) and angle_is("gamma", 90)):
            return "needs alpha = gamma = 90 (unique axis b)"
    elif system in ("orthorhombic", "tetragonal", "cubic"):
        if not all(angle_is(name, 90) for name in ("alpha", "beta", "gamma")):
            return "needs alpha = beta = gamma = 90"
        if system == "tetragonal" and not same_length("a", "b"):
            return "needs a = b"
        if system == "cubic" and not (same_length("a", "b") and same_length("a", "c")):
            return "needs a = b = c"
    elif system in ("trigonal", "hexagonal"):
        if not (
            same_length("a", "b")
            and angle_is("alpha", 90)
            and angle_is("beta", 90)
            and angle_is("gamma", 120)
        ):
            return "needs a = b, alpha = beta = 90, gamma = 120 (hexagonal axes)"
    return None


def _record_as_dict(record: SymmetryRecord) -> dict[str, Any]:
    """``record.to_dict()`` after checking that each field has the right record type."""
    expected = {
        "composition": Composition,
        "space_group": SpaceGroup,
        "provenance": Provenance,
    }
    for name, cls in expected.items():
        if not isinstance(getattr(record, name), cls):
            raise SchemaError(f"expected {cls.__name__}, got {type(getattr(record, name)).__name__}", name)
    if record.lattice is not None and not isinstance(record.lattice, LatticeParameters):
        raise SchemaError(
            f"expected LatticeParameters or None, got {type(record.lattice).__name__}", "lattice"
        )
    for name, cls in (("wyckoff", WyckoffEntry), ("properties", Property)):
        items = getattr(record, name)
        if not isinstance(items, (tuple, list)):
            raise SchemaError(f"expected a tuple of {cls.__name__}, got {type(items).__name__}", name)
        for index, item in enumerate(items):
            if not isinstance(item, cls):
                raise SchemaError(f"expected {cls.__name__}, got {type(item).__name__}", f"{name}[{index}]")
    return record.to_dict()


# ----------------------------------------------------------------------------- JSON text


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SchemaError(f"invalid JSON: duplicate key {show(key)}")
        out[key] = value
    return out


def parse_json(text: str | bytes, *, single_line: bool = False) -> Any:
    """``json.loads`` that raises a one-line ``SchemaError`` (and rejects duplicate keys)."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise SchemaError(f"expected JSON text, got {type(text).__name__}")
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as error:
        where = f"column {error.colno}" if single_line else f"line {error.lineno} column {error.colno}"
        raise SchemaError(f"invalid JSON: {error.msg} at {where}") from None
    except RecursionError:
        raise SchemaError("invalid JSON: nested too deeply") from None
    except SchemaError:
        raise
    except ValueError as error:  # e.g. integers beyond the int-string conversion limit, bad bytes
        raise SchemaError(f"invalid JSON: {error}") from None
