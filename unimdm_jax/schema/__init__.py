"""The JSON symmetry schema: the record stage 1 emits and stage 2 generates a crystal under.

Pure Python (stdlib only): imports neither JAX, torch, pyxtal nor pymatgen. The space-group
tables are package data (``wyckoff_tables.json``, generated once by ``_build_tables.py``).
See ``README.md`` in this directory for the field reference and validation rules.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from .elements import ELEMENT_SYMBOLS, atomic_number, is_valid_element
from .errors import SchemaError
from .files import dump_records, load_record, load_records, parse_records
from .properties import (
    KNOWN_PROPERTY_UNITS,
    PROPERTY_ALIASES,
    PROPERTY_NAMES,
    canonical_property,
    parse_property_specs,
    register_property,
)
from .record import (
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    Composition,
    LatticeParameters,
    Property,
    Provenance,
    SpaceGroup,
    SymmetryRecord,
    WyckoffEntry,
    parse_json,
    validate_record,
)
from .tables import (
    CENTRING_FACTORS,
    SpaceGroupInfo,
    WyckoffPositionInfo,
    all_space_groups,
    centring_factor,
    crystal_system,
    normalise_symbol,
    space_group_info,
    space_group_number,
    space_group_symbol,
    wyckoff_positions,
)

__all__ = [
    "CENTRING_FACTORS",
    "Composition",
    "ELEMENT_SYMBOLS",
    "KNOWN_PROPERTY_UNITS",
    "LatticeParameters",
    "PROPERTY_ALIASES",
    "PROPERTY_NAMES",
    "Property",
    "Provenance",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "SchemaError",
    "SpaceGroup",
    "SpaceGroupInfo",
    "SymmetryRecord",
    "WyckoffEntry",
    "WyckoffPositionInfo",
    "all_space_groups",
    "atomic_number",
    "canonical_property",
    "parse_property_specs",
    "register_property",
    "centring_factor",
    "crystal_system",
    "dump_records",
    "is_valid_element",
    "json_schema",
    "load_record",
    "load_records",
    "normalise_symbol",
    "parse_json",
    "parse_records",
    "space_group_info",
    "space_group_number",
    "space_group_symbol",
    "validate_record",
    "wyckoff_positions",
]


@functools.cache
def _json_schema_text() -> str:
    return resources.files(__name__).joinpath("symmetry_record.schema.json").read_text(encoding="utf-8")


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a record, as a fresh dict."""
    return json.loads(_json_schema_text())
