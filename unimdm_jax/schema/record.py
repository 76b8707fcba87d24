"""Record types of the JSON symmetry schema (frozen dataclasses, no validation on construction).

Constructing these classes directly does not check anything; ``validate_record`` (and
``SymmetryRecord.from_dict`` / ``from_json``, which call it) does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

SCHEMA_VERSION = "1.0"

#: Property names used by the project and the only unit each may be given in.
KNOWN_PROPERTY_UNITS: dict[str, str] = {
    "band_gap": "eV",
    "formation_energy_per_atom": "eV/atom",
}


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
        out: dict[str, Any] = {"element": self.element, "letter": self.letter, "multiplicity": self.multiplicity}
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
        from .validate import validate_record

        return validate_record(data)

    @classmethod
    def from_json(cls, text: str) -> SymmetryRecord:
        """Parse and validate one JSON record; raises ``SchemaError``."""
        from .validate import parse_json

        return cls.from_dict(parse_json(text))
