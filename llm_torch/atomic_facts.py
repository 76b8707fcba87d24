"""Per-element facts written into the prompts: electronegativity, atomic radius, oxidation states.

The values come from pymatgen's ``Element`` (Pauling electronegativity ``X``, empirical
``atomic_radius`` in angstrom, ``common_oxidation_states``). They are computed once for all
118 elements and shipped as ``atomic_facts.json`` next to this file, so building a prompt
needs neither pymatgen nor its import time; ``python -m llm_torch.atomic_facts`` rebuilds
the table (it is deterministic for a given pymatgen version, recorded in the file).
Missing values (noble gases have no Pauling electronegativity, heavy elements no radius)
are ``None`` and printed as ``n/a``.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from unimdm_jax.schema import ELEMENT_SYMBOLS

__all__ = ["AtomicFacts", "atomic_facts", "build_table", "facts_table", "format_facts"]

TABLE_FILE = "atomic_facts.json"


@dataclass(frozen=True)
class AtomicFacts:
    """What the prompt says about one element."""

    symbol: str
    electronegativity: float | None  # Pauling
    atomic_radius: float | None  # angstrom (empirical)
    oxidation_states: tuple[int, ...]  # common oxidation states (may be empty)


def _clean_float(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return round(x, 3) if math.isfinite(x) else None


def build_table() -> dict:
    """Compute the table from pymatgen (slow import; used to regenerate ``atomic_facts.json``)."""
    import pymatgen.core  # on use: reading the shipped table needs neither pymatgen nor its import time

    elements = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for symbol in ELEMENT_SYMBOLS:
            element = pymatgen.core.Element(symbol)
            try:
                states = tuple(int(s) for s in element.common_oxidation_states)
            except Exception:  # noqa: BLE001 - a missing datum is "n/a", not an error
                states = ()
            elements[symbol] = {
                "electronegativity": _clean_float(getattr(element, "X", None)),
                "atomic_radius": _clean_float(getattr(element, "atomic_radius", None)),
                "oxidation_states": list(states),
            }
    version = getattr(pymatgen.core, "__version__", "unknown")
    return {
        "source": f"pymatgen {version} Element: X, atomic_radius, common_oxidation_states",
        "elements": elements,
    }


@functools.cache
def facts_table() -> dict[str, AtomicFacts]:
    """All 118 elements' facts (from the shipped JSON; computed with pymatgen if it is missing)."""
    try:
        data = json.loads(resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, OSError):
        data = build_table()
    return {
        symbol: AtomicFacts(
            symbol, entry["electronegativity"], entry["atomic_radius"], tuple(entry["oxidation_states"])
        )
        for symbol, entry in data["elements"].items()
    }


def atomic_facts(symbol: str) -> AtomicFacts:
    """Facts of one element symbol; ``ValueError`` (one line) for an unknown symbol."""
    table = facts_table()
    if symbol not in table:
        raise ValueError(f"unknown element symbol {symbol!r}")
    return table[symbol]


def format_facts(facts: AtomicFacts) -> str:
    """One prompt line, e.g. ``Fe: electronegativity 1.83, atomic radius 1.40 A, oxidation states +2 +3``."""
    chi = "n/a" if facts.electronegativity is None else f"{facts.electronegativity:.2f}"
    radius = "n/a" if facts.atomic_radius is None else f"{facts.atomic_radius:.2f} A"
    states = " ".join(f"{s:+d}" for s in facts.oxidation_states) or "n/a"
    return f"{facts.symbol}: electronegativity {chi}, atomic radius {radius}, oxidation states {states}"


def main() -> None:  # pragma: no cover - regenerates package data
    path = Path(__file__).with_name(TABLE_FILE)
    table = build_table()
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in table["elements"].items()]
    text = '{"source": ' + json.dumps(table["source"]) + ',\n"elements": {\n' + ",\n".join(lines) + "\n}}\n"
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
