"""The property vocabulary: the names the project uses for properties, their units and aliases.

Every stage reads it from here: the schema validates units against it, the preprocessing
stores these columns, the prompts and the public API map user spellings through the aliases.

Band gap and formation energy are built in (MP-20's properties, the shipped models'). A user's
own property (``density`` in g/cm3, say) joins with :func:`register_property`: the
preprocessing does it for ``--properties density:g/cm3``, and loading a model trained on such a
property does it from the model's config, so the schema then checks its unit as it checks the
built-in ones.
"""

from __future__ import annotations

import re

#: Property names used by the project and the only unit each may be given in (built-in ones,
#: plus those registered by ``register_property`` in this process).
KNOWN_PROPERTY_UNITS: dict[str, str] = {
    "band_gap": "eV",
    "formation_energy_per_atom": "eV/atom",
}

#: The property columns of a preprocessed MP-20 dataset, in this order.
PROPERTY_NAMES: tuple[str, ...] = tuple(KNOWN_PROPERTY_UNITS)

#: User spellings (lower case, ``-`` as ``_``) -> property name.
PROPERTY_ALIASES: dict[str, str] = {
    "band_gap": "band_gap",
    "bg": "band_gap",
    "formation_energy": "formation_energy_per_atom",
    "formation_energy_per_atom": "formation_energy_per_atom",
    "fm": "formation_energy_per_atom",
    "ef": "formation_energy_per_atom",
}

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def canonical_property(name: str) -> str:
    """Schema name of a property (an alias of a built-in or registered one); ValueError otherwise."""
    key = PROPERTY_ALIASES.get(str(name).strip().lower().replace("-", "_"))
    if key is None:
        known = ", ".join(
            ["band_gap", "formation_energy", *sorted(set(KNOWN_PROPERTY_UNITS) - set(PROPERTY_NAMES))]
        )
        raise ValueError(f"unknown property {name!r} (known: {known})")
    return key


def register_property(name: str, unit: str) -> str:
    """Add a user's property (``name``: lower case letters, digits and ``_``, starting with a
    letter; ``unit``: a non-empty string such as ``g/cm3``) to the vocabulary. Registering a name
    again with the same unit is a no-op; another unit, or a built-in name with another unit, is a
    ValueError. Returns the name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"property name {name!r} must be lower case letters, digits and _, starting with a letter"
        )
    if not isinstance(unit, str) or not unit.strip() or any(c in unit for c in ",\n\t"):
        raise ValueError(f"property {name}: unit {unit!r} must be a non-empty string without commas")
    unit = unit.strip()
    canonical = PROPERTY_ALIASES.get(name)
    if canonical is not None and canonical != name:
        raise ValueError(f"property name {name!r} is an alias of {canonical}")
    known = KNOWN_PROPERTY_UNITS.get(name)
    if known is not None and known != unit:
        raise ValueError(f"property {name} is already known in {known!r}, not {unit!r}")
    KNOWN_PROPERTY_UNITS[name] = unit
    PROPERTY_ALIASES[name] = name
    return name


def parse_property_specs(text: str) -> dict[str, str]:
    """``"density:g/cm3,bulk_modulus:GPa"`` -> {name: unit} (a built-in name may omit its unit)."""
    specs: dict[str, str] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        name, _, unit = part.partition(":")
        name, unit = name.strip(), unit.strip()
        if not unit:
            unit = KNOWN_PROPERTY_UNITS.get(PROPERTY_ALIASES.get(name, name), "")
            if not unit:
                raise ValueError(f"property {name!r} needs a unit: write {name}:UNIT")
        if name in specs:
            raise ValueError(f"property {name!r} is named twice")
        specs[name] = unit
    if not specs:
        raise ValueError("no property named: write name:unit[,name:unit...]")
    return specs
