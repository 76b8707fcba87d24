"""Generate ``wyckoff_tables.json``, the space-group / Wyckoff data shipped with the schema.

Run once (needs pyxtal, spglib and pymatgen; the schema package itself needs none of them)::

    python -m unimdm_jax.schema._build_tables

For every space group 1..230 in pyxtal's default setting (the ITA standard setting:
unique axis b / cell choice 1 for monoclinic groups, origin choice 2 where there is a choice,
hexagonal axes for R groups) the file records the Hermann-Mauguin symbol, crystal system,
centring letter, point group, Hall number, setting choice, accepted alternative symbols and,
per Wyckoff position: letter, multiplicity (conventional cell), number of free parameters,
site symmetry and the representative coordinate triplet (e.g. ``"x,1/4,z"``).
Wyckoff positions are stored in ITA letter order: a, b, ..., z, A.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyxtal
import spglib
from pymatgen.symmetry.groups import SpaceGroup as PmgSpaceGroup
from pyxtal.symmetry import Group

TABLE_PATH = Path(__file__).with_name("wyckoff_tables.json")

# Symbols renamed by the 'e'-glide convention (ITA 5th edition, 2002); older data still uses them.
LEGACY_E_GLIDE_SYMBOLS = {39: "Abm2", 41: "Aba2", 64: "Cmca", 67: "Cmma", 68: "Ccca"}


def normalise(symbol: str) -> str:
    """Same normalisation the runtime uses: drop spaces and underscores."""
    return symbol.replace(" ", "").replace("_", "")


def build_group(number: int) -> dict:
    """Collect the table entry for one space group."""

    group = Group(number)
    sg_type = spglib.get_spacegroup_type(group.hall_number)
    assert sg_type.number == number, (number, sg_type.number)
    pmg = PmgSpaceGroup.from_int_number(number)

    aliases = []
    for alias in (
        sg_type.international_short,
        sg_type.international_full,
        pmg.symbol,
        pmg.full_symbol,
        LEGACY_E_GLIDE_SYMBOLS.get(number),
    ):
        if alias and normalise(alias) != normalise(group.symbol) and alias not in aliases:
            aliases.append(alias)

    positions = []
    for wp in group:
        wp.get_site_symmetry()
        positions.append(
            [
                wp.letter,
                int(wp.multiplicity),
                int(wp.get_dof()),
                wp.site_symm,
                wp.ops[0].as_xyz_str().replace(" ", ""),
            ]
        )
    positions.sort(key=lambda row: (row[0].isupper(), row[0]))  # ITA order: a..z, then A
    return {
        "number": number,
        "symbol": group.symbol,
        "crystal_system": group.lattice_type,
        "centring": group.symbol[0],
        "point_group": group.point_group,
        "hall_number": int(group.hall_number),
        "setting": sg_type.choice,
        "aliases": aliases,
        "wyckoff": positions,
    }


def build_tables() -> dict:
    """Build the whole document (all 230 groups) and check alias uniqueness."""

    groups = [build_group(n) for n in range(1, 231)]
    owner: dict[str, int] = {}
    for group in groups:
        for symbol in [group["symbol"], *group["aliases"]]:
            key = normalise(symbol)
            if owner.setdefault(key, group["number"]) != group["number"]:
                raise RuntimeError(f"symbol {symbol!r} is ambiguous: {owner[key]} and {group['number']}")
    return {
        "description": "Space groups 1-230 and their Wyckoff positions (conventional cell, standard "
        "setting: unique axis b, origin choice 2, hexagonal axes for R groups). "
        "wyckoff rows: [letter, multiplicity, dof, site_symmetry, representative].",
        "generated_with": f"pyxtal {pyxtal.__version__}",
        "groups": groups,
    }


def main() -> None:
    tables = build_tables()
    text = json.dumps(tables, separators=(",", ":"), ensure_ascii=True)
    # One group per line keeps diffs readable while the file stays small.
    text = text.replace(',{"number":', ',\n{"number":')
    TABLE_PATH.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {TABLE_PATH} ({len(text) / 1024:.0f} KiB, {len(tables['groups'])} groups)")


if __name__ == "__main__":
    main()
