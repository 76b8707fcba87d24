"""The 118 chemical element symbols (IUPAC), in atomic-number order."""

from __future__ import annotations

ELEMENT_SYMBOLS: tuple[str, ...] = (
    "H", "He",
    "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd",
    "In", "Sn", "Sb", "Te", "I", "Xe",
    "Cs", "Ba",
    "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn",
    "Fr", "Ra",
    "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr",
    "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn",
    "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)  # fmt: skip

_ATOMIC_NUMBER = {symbol: z for z, symbol in enumerate(ELEMENT_SYMBOLS, start=1)}


def is_valid_element(symbol: object) -> bool:
    """True for one of the 118 element symbols, spelled exactly (``"Na"``, not ``"NA"``)."""
    return isinstance(symbol, str) and symbol in _ATOMIC_NUMBER


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol; ``ValueError`` for anything else."""
    try:
        return _ATOMIC_NUMBER[symbol]
    except (KeyError, TypeError):
        raise ValueError(f"unknown element symbol {symbol!r}") from None
