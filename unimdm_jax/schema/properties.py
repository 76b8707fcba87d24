"""The property vocabulary: the names the project uses for properties, their units and aliases.

Every stage reads it from here: the schema validates units against it, the preprocessing
stores these columns, the prompts and the public API map user spellings through the aliases.
"""

from __future__ import annotations

#: Property names used by the project and the only unit each may be given in.
KNOWN_PROPERTY_UNITS: dict[str, str] = {
    "band_gap": "eV",
    "formation_energy_per_atom": "eV/atom",
}

#: The property columns of a preprocessed dataset, in this order.
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


def canonical_property(name: str) -> str:
    """Schema name of a property (``band_gap`` or ``formation_energy_per_atom``); ValueError otherwise."""
    key = PROPERTY_ALIASES.get(str(name).strip().lower().replace("-", "_"))
    if key is None:
        raise ValueError(f"unknown property {name!r} (use band_gap or formation_energy)")
    return key
