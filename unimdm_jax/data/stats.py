"""Summary statistics of CDVAE-format dataset files.

    python -m unimdm_jax.data stats FILE... [--json] [--processes N] [--limit N]

Reported over all files together: number of rows; distinct elements and, per element, the
number of structures containing it; atoms-per-cell histogram (cell as written in the CIF,
parsed with pymatgen in a process pool); space-group and crystal-system histograms (from the
``spacegroup.number`` column); min/mean/max of each numeric property column. Element and
atom counts come from the parsed CIFs, not from the ``elements``/formula columns.
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymatgen.io.cif  # noqa: F401 - loaded in the parent process, so that forked workers start warm
from pymatgen.symmetry.groups import sg_symbol_from_int_number
from tqdm.auto import tqdm

from unimdm_jax.data.io import DatasetError, PathLike, as_paths, iter_rows, structure_from_cif
from unimdm_jax.parallel import process_pool
from unimdm_jax.schema.tables import CRYSTAL_SYSTEMS, crystal_system

__all__ = [
    "PropertySummary",
    "DatasetStats",
    "compute_stats",
    "format_stats",
]


@dataclass
class PropertySummary:
    count: int  # finite values
    missing: int  # NaN / absent
    min: float | None
    mean: float | None
    max: float | None


@dataclass
class DatasetStats:
    files: list[str]
    rows: int
    element_counts: dict[str, int]  # element -> number of structures containing it
    atoms_per_cell: dict[int, int]  # number of atoms in the CIF cell -> structures
    spacegroups: dict[int, int]  # spacegroup.number -> structures
    spacegroup_missing: int
    properties: dict[str, PropertySummary]
    parse_failures: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    @property
    def n_elements(self) -> int:
        return len(self.element_counts)

    @property
    def crystal_systems(self) -> dict[str, int]:
        out = {name: 0 for name in CRYSTAL_SYSTEMS}
        for sg, n in self.spacegroups.items():
            out[crystal_system(int(sg))] += n
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (histogram keys become strings, as JSON requires)."""
        return {
            "files": list(self.files),
            "rows": self.rows,
            "n_elements": self.n_elements,
            "element_counts": dict(self.element_counts),
            "atoms_per_cell": {str(k): v for k, v in self.atoms_per_cell.items()},
            "spacegroups": {str(k): v for k, v in self.spacegroups.items()},
            "spacegroup_missing": self.spacegroup_missing,
            "crystal_systems": self.crystal_systems,
            "properties": {k: vars(v).copy() for k, v in self.properties.items()},
            "parse_failures": [{"source": s, "reason": r} for s, r in self.parse_failures],
        }


def _parse_one(cif: str) -> tuple[int | None, tuple[str, ...], str | None]:
    try:
        s = structure_from_cif(cif)
    except DatasetError as exc:
        return None, (), str(exc)
    elements = tuple(sorted(e.symbol for e in s.composition.element_composition.elements))
    return len(s), elements, None


def _parse_all(cifs: Sequence[str], processes: int, progress: bool | None):
    bar_kw = dict(
        total=len(cifs),
        desc="parsing CIFs",
        unit="cif",
        file=sys.stderr,
        disable=(not progress) if progress is not None else None,
        leave=False,
    )
    if processes <= 1 or len(cifs) < 64:
        with tqdm(**bar_kw) as bar:
            out = []
            for c in cifs:
                out.append(_parse_one(c))
                bar.update()
            return out

    chunksize = max(8, min(256, len(cifs) // (processes * 8) or 1))
    with process_pool(processes) as pool:  # created before the bar's monitor thread starts
        with tqdm(**bar_kw) as bar:
            out = []
            for res in pool.imap(_parse_one, cifs, chunksize=chunksize):
                out.append(res)
                bar.update()
    return out


def _summary(values: Iterable[float], n_rows: int) -> PropertySummary:
    finite = [v for v in values if not math.isnan(v) and not math.isinf(v)]
    if not finite:
        return PropertySummary(0, n_rows, None, None, None)
    return PropertySummary(
        count=len(finite),
        missing=n_rows - len(finite),
        min=min(finite),
        mean=math.fsum(finite) / len(finite),
        max=max(finite),
    )


def compute_stats(
    paths: PathLike | Iterable[PathLike],
    *,
    processes: int | None = None,
    progress: bool | None = None,
    limit: int | None = None,
) -> DatasetStats:
    """Statistics of the rows of ``paths`` (see module docstring).

    ``processes`` defaults to ``min(2, cpu_count)``; ``progress=None`` shows a tqdm bar on
    stderr only when it is a terminal. Raises :class:`DatasetError` for unreadable input."""
    files = as_paths(paths)
    rows = list(iter_rows(files, limit=limit))
    if processes is None:
        processes = min(2, os.cpu_count() or 1)
    parsed = _parse_all([r.cif for r in rows], processes, progress)

    elements: Counter[str] = Counter()
    natoms: Counter[int] = Counter()
    failures: list[tuple[str, str]] = []
    for row, (n, els, err) in zip(rows, parsed):
        if err is not None or n is None:
            failures.append((row.source, err or "no atoms"))
            continue
        natoms[n] += 1
        elements.update(els)
    sgs = Counter(r.spacegroup_number for r in rows if r.spacegroup_number is not None)
    prop_names: list[str] = []
    for r in rows:
        for k in r.properties:
            if k not in prop_names:
                prop_names.append(k)
    props = {k: _summary((r.properties.get(k, math.nan) for r in rows), len(rows)) for k in prop_names}
    return DatasetStats(
        files=[str(p) for p in files],
        rows=len(rows),
        element_counts=dict(sorted(elements.items(), key=lambda kv: (-kv[1], kv[0]))),
        atoms_per_cell=dict(sorted(natoms.items())),
        spacegroups=dict(sorted(sgs.items())),
        spacegroup_missing=sum(1 for r in rows if r.spacegroup_number is None),
        properties=props,
        parse_failures=failures,
    )


# --------------------------------------------------------------------------------------
# text rendering


def _bar_lines(items: Sequence[tuple[str, int]], total: int, width: int = 40) -> list[str]:
    if not items:
        return ["    (none)"]
    peak = max(n for _, n in items) or 1
    label_w = max(len(k) for k, _ in items)
    count_w = max(len(str(n)) for _, n in items)
    out = []
    for k, n in items:
        bar = "#" * max(1 if n else 0, round(width * n / peak))
        pct = 100.0 * n / total if total else 0.0
        out.append(f"    {k:>{label_w}} | {n:>{count_w}} {pct:5.1f}% {bar}".rstrip())
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _sg_symbol(n: int) -> str:
    try:
        return sg_symbol_from_int_number(n)
    except Exception:  # pragma: no cover - symbol is cosmetic
        return ""


def format_stats(stats: DatasetStats, *, top_spacegroups: int = 15, width: int = 40) -> str:
    """Human-readable report with compact ASCII histograms."""
    n_ok = stats.rows - len(stats.parse_failures)
    lines = [f"files: {', '.join(stats.files)}", f"rows: {stats.rows}"]
    if stats.parse_failures:
        lines.append(f"CIF parse failures: {len(stats.parse_failures)}")
        for src, why in stats.parse_failures[:5]:
            lines.append(f"    {src}: {why}")
        if len(stats.parse_failures) > 5:
            lines.append(f"    ... {len(stats.parse_failures) - 5} more")

    lines.append("")
    lines.append(f"elements: {stats.n_elements} distinct (structures containing each, of {n_ok} parsed)")
    cells = [f"{el:>2} {n:>6}" for el, n in stats.element_counts.items()]
    for i in range(0, len(cells), 8):
        lines.append("    " + "  ".join(cells[i : i + 8]))

    lines.append("")
    if stats.atoms_per_cell:
        tot = sum(k * v for k, v in stats.atoms_per_cell.items())
        lo, hi = min(stats.atoms_per_cell), max(stats.atoms_per_cell)
        lines.append(f"atoms per cell: min {lo}, max {hi}, mean {tot / max(n_ok, 1):.2f}")
        items = [(str(k), stats.atoms_per_cell.get(k, 0)) for k in range(lo, hi + 1)]
        lines.extend(_bar_lines(items, n_ok, width))
    else:
        lines.append("atoms per cell: (no parsed structures)")

    lines.append("")
    n_sg = sum(stats.spacegroups.values())
    if stats.spacegroups:
        missing = f", {stats.spacegroup_missing} rows without one" if stats.spacegroup_missing else ""
        lines.append(f"space groups: {len(stats.spacegroups)} distinct (spacegroup.number{missing})")
        lines.append("  crystal systems:")
        lines.extend(_bar_lines(list(stats.crystal_systems.items()), n_sg, width))
        top = sorted(stats.spacegroups.items(), key=lambda kv: (-kv[1], kv[0]))[:top_spacegroups]
        lines.append(f"  top {len(top)} space groups:")
        lines.extend(_bar_lines([(f"{k} {_sg_symbol(k)}", v) for k, v in top], n_sg, width))
        if len(stats.spacegroups) > len(top):
            rest = n_sg - sum(v for _, v in top)
            lines.append(f"    ... {len(stats.spacegroups) - len(top)} more groups, {rest} rows")
    else:
        lines.append("space groups: (no spacegroup.number column)")

    lines.append("")
    if stats.properties:
        name_w = max(len("property"), *(len(k) for k in stats.properties))
        lines.append("properties:")
        lines.append(
            f"    {'property':<{name_w}} {'count':>7} {'missing':>7} {'min':>10} {'mean':>10} {'max':>10}"
        )
        for k, s in stats.properties.items():
            lines.append(
                f"    {k:<{name_w}} {s.count:>7} {s.missing:>7} {_fmt(s.min):>10} "
                f"{_fmt(s.mean):>10} {_fmt(s.max):>10}"
            )
    else:
        lines.append("properties: (no numeric property columns)")
    return "\n".join(lines)
