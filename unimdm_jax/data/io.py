"""Reading CDVAE-format crystal datasets (MP-20, Perov-5, Carbon-24, MPTS-52).

File format
-----------
One CSV per split, plain (``train.csv``, as published by CDVAE/DiffCSP) or gzip-compressed
(``val.csv.gz``, as in ``../shared/data/mp_20``). Upstream files start with an unnamed
pandas index column (header ``,material_id,...``); it is detected and dropped. Required
columns: ``material_id`` and ``cif``. Everything else is optional:

* ``pretty_formula`` (MP-20, MPTS-52) or ``formula`` (Perov-5) -> :attr:`CrystalRow.formula`
  (``""`` when the file has neither);
* ``spacegroup.number`` -> :attr:`CrystalRow.spacegroup_number` (``None`` when absent/empty);
* every other column whose non-empty values are all numeric is a *property*
  (``formation_energy_per_atom``, ``band_gap``, ``e_above_hull`` for MP-20; ``heat_ref``,
  ``heat_all``, ``dir_gap``, ``ind_gap`` for Perov-5; ``energy_per_atom`` for Carbon-24).
  Empty cells become NaN. Pass ``properties=[...]`` to get exactly those keys, with NaN for
  the ones a file does not have.

Row numbering: :attr:`CrystalRow.source` is ``"<file name>:<i>"`` where ``i`` is the
0-based index of the data row in file order (the header is not counted), so
``"val.csv.gz:0"`` is the first structure of ``val.csv.gz``. ``skip``/``limit`` count rows
the same way, across all files given, in order.

MP-20 training policy (see ``../shared/README.md``)
---------------------------------------------------
* ``holdout`` = the first 1,000 rows of ``val.csv.gz`` (rows ``val.csv.gz:0`` .. ``:999``),
  used for early stopping / model selection only;
* ``train``   = all of ``train_partial.csv.gz`` + rows 1,001..9,047 (1-based; i.e.
  ``val.csv.gz:1000`` .. ``:9046``) of ``val.csv.gz`` = 28,218 structures;
* ``test``    = ``test.csv.gz`` (9,046 rows), for reported results only;
* ``test_1k`` = :data:`TEST_1K`, a fixed 1,000-structure subset of ``test`` (see
  :func:`test_subset_indices`), for quick evaluations.

:func:`mp20_split` returns an :class:`MP20Split` that names the exact files/row ranges (use
:meth:`MP20Split.describe` in result tables); :func:`policy_rows` reads them.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from unimdm_jax.errors import one_line

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Structure

__all__ = [
    "DatasetError",
    "CrystalRow",
    "as_paths",
    "REQUIRED_COLUMNS",
    "read_rows",
    "iter_rows",
    "read_header",
    "structure_from_cif",
    "default_data_root",
    "mp20_dir",
    "mp20_paths",
    "FileSlice",
    "MP20Split",
    "mp20_split",
    "policy_rows",
    "MP20_SPLIT_NAMES",
    "MP20_POLICY_COUNTS",
    "HOLDOUT_SIZE",
    "MP20_TEST_SIZE",
    "TEST_1K_SEED",
    "TEST_1K_SIZE",
    "TEST_1K",
    "test_subset_indices",
]

PathLike = Union[str, "os.PathLike[str]"]

REQUIRED_COLUMNS: tuple[str, ...] = ("material_id", "cif")
FORMULA_COLUMNS: tuple[str, ...] = ("pretty_formula", "formula")
SPACEGROUP_COLUMNS: tuple[str, ...] = ("spacegroup.number", "spacegroup_number", "spacegroup")
# Columns that are never treated as numeric properties.
METADATA_COLUMNS: frozenset[str] = frozenset(
    {"material_id", "cif", "elements", "index", *FORMULA_COLUMNS, *SPACEGROUP_COLUMNS}
)
_MISSING = frozenset({"", "nan", "na", "n/a", "none", "null"})
_GZIP_MAGIC = b"\x1f\x8b"


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or malformed. ``str(err)`` is one line."""


@dataclass(frozen=True)
class CrystalRow:
    """One structure of a CDVAE-format CSV.

    ``properties`` holds every numeric column of the file (NaN for empty cells);
    ``source`` is ``"<file name>:<0-based data row index>"``. Hashable (the hash ignores
    ``properties``); equality compares all fields.
    """

    material_id: str
    cif: str
    properties: dict[str, float] = field(hash=False)
    formula: str
    spacegroup_number: int | None
    source: str

    def structure(self) -> "Structure":
        """The structure parsed from :attr:`cif` (see :func:`structure_from_cif`)."""
        return structure_from_cif(self.cif)


# --------------------------------------------------------------------------------------
# low-level file access


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _open_text(path: Path):
    """Open ``path`` for text reading; gzip detected by magic bytes (not by extension)."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory, expected a CSV file")
    try:
        gz = _is_gzip(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open ({one_line(exc)})") from exc
    if path.name.endswith(".gz") and not gz:
        raise DatasetError(f"{path}: not a valid gzip file (bad magic bytes)")
    if gz:
        return gzip.open(path, "rt", encoding="utf-8", newline=""), True
    return open(path, encoding="utf-8", newline=""), False


def read_header(path: PathLike) -> list[str]:
    """Column names of a CDVAE CSV (index column, if any, reported as ``""``)."""
    path = Path(path)
    fh, gz = _open_text(path)
    try:
        with fh:
            header = next(csv.reader(fh), None)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:
        kind = "unreadable gzip file" if gz else "unreadable file"
        raise DatasetError(f"{path}: {kind} ({one_line(exc)})") from exc
    if not header:
        raise DatasetError(f"{path}: empty file (no CSV header)")
    return header


def _is_index_column(name: str) -> bool:
    return name == "" or name.startswith("Unnamed: 0")


@dataclass
class _Table:
    path: Path
    columns: list[str]
    data: dict[str, list[str]]
    nrows: int


def _read_table(path: Path, nrows: int | None) -> _Table:
    # pandas and pymatgen are imported on use: this module is on the path of the JAX-only
    # machine (``unimdm_jax.remote``), which has neither, and of the data CLI's --help
    import pandas as pd

    fh, gz = _open_text(path)
    try:
        with fh:
            df = pd.read_csv(
                fh,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                nrows=nrows,
                engine="c",
            )
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{path}: empty file (no CSV header)") from exc
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path}: malformed CSV ({one_line(exc)})") from exc
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        kind = "unreadable gzip file" if gz else "unreadable file"
        raise DatasetError(f"{path}: {kind} ({one_line(exc)})") from exc
    columns = [str(c) for c in df.columns]
    if columns and _is_index_column(columns[0]):
        columns = columns[1:]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(
            f"{path}: missing required column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})"
        )
    data = {c: df[c].tolist() for c in columns}
    return _Table(path=path, columns=columns, data=data, nrows=len(df))


def _parse_float(value: str) -> float | None:
    """float(value); NaN for missing markers; None if not a number."""
    v = value.strip()
    if v.lower() in _MISSING:
        return math.nan
    try:
        return float(v)
    except ValueError:
        return None


def _numeric_columns(table: _Table) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for col in table.columns:
        if col in METADATA_COLUMNS or _is_index_column(col):
            continue
        values = []
        for raw in table.data[col]:
            x = _parse_float(raw)
            if x is None:
                break
            values.append(x)
        else:
            out[col] = values
    return out


def _parse_spacegroup(value: str, path: Path, i: int) -> int | None:
    x = _parse_float(value)
    if x is None:
        raise DatasetError(f"{path}: row {i}: bad space-group number {value!r}")
    if math.isnan(x):
        return None
    if x != int(x) or not 1 <= int(x) <= 230:
        raise DatasetError(f"{path}: row {i}: space-group number {value!r} not in 1..230")
    return int(x)


def _table_rows(
    table: _Table, start: int, stop: int, properties: Sequence[str] | None
) -> Iterator[CrystalRow]:
    numeric = _numeric_columns(table)
    prop_names = list(properties) if properties is not None else list(numeric)
    formula_col = next((c for c in FORMULA_COLUMNS if c in table.data), None)
    sg_col = next((c for c in SPACEGROUP_COLUMNS if c in table.data), None)
    ids = table.data["material_id"]
    cifs = table.data["cif"]
    name = table.path.name
    for i in range(start, stop):
        props = {p: (float(numeric[p][i]) if p in numeric else math.nan) for p in prop_names}
        yield CrystalRow(
            material_id=ids[i],
            cif=cifs[i],
            properties=props,
            formula=table.data[formula_col][i] if formula_col else "",
            spacegroup_number=(_parse_spacegroup(table.data[sg_col][i], table.path, i) if sg_col else None),
            source=f"{name}:{i}",
        )


def as_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """One path or several, as a list of Paths."""
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise DatasetError("no input files given")
    return out


def iter_rows(
    paths: PathLike | Iterable[PathLike],
    limit: int | None = None,
    skip: int = 0,
    *,
    properties: Sequence[str] | None = None,
) -> Iterator[CrystalRow]:
    """Yield :class:`CrystalRow` s from one or several CDVAE CSVs, in file order.

    ``skip`` rows are dropped and at most ``limit`` rows yielded, counting across all
    files. ``properties`` fixes the property keys (NaN where a file lacks the column);
    by default each row carries every numeric column of its file.
    Raises :class:`DatasetError` (one line) for a missing file, a file without
    ``material_id``/``cif`` columns, or an unreadable gzip/CSV file.
    """
    if skip < 0:
        raise DatasetError(f"skip must be >= 0, got {skip}")
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    files = as_paths(paths)
    for p in files:  # fail early, before yielding anything, on a missing file
        if not p.exists():
            raise DatasetError(f"{p}: no such file")
    to_skip, remaining = skip, limit
    for path in files:
        if remaining == 0:
            return
        nrows = None if remaining is None else to_skip + remaining
        table = _read_table(path, nrows)
        start = min(to_skip, table.nrows)
        stop = table.nrows if remaining is None else min(table.nrows, start + remaining)
        to_skip -= start
        if remaining is not None:
            remaining -= stop - start
        yield from _table_rows(table, start, stop, properties)


def read_rows(
    paths: PathLike | Iterable[PathLike],
    limit: int | None = None,
    skip: int = 0,
    *,
    properties: Sequence[str] | None = None,
) -> list[CrystalRow]:
    """List version of :func:`iter_rows`."""
    return list(iter_rows(paths, limit=limit, skip=skip, properties=properties))


def structure_from_cif(cif: str) -> "Structure":
    """Parse one CIF string with pymatgen (``Structure.from_str(cif, fmt="cif")``).

    pymatgen's CIF warnings are silenced. The cell is returned as written in the CIF
    (no primitive/Niggli reduction). Raises :class:`DatasetError` if it cannot be parsed.
    """
    from pymatgen.core import Structure  # on use: the JAX-only machine has no pymatgen (see _read_table)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(cif, fmt="cif")
    except Exception as exc:  # pymatgen raises ValueError/KeyError/IndexError/...
        raise DatasetError(f"cannot parse CIF: {one_line(exc)}") from exc
    if len(structure) == 0:
        raise DatasetError("cannot parse CIF: no atoms")
    return structure


# --------------------------------------------------------------------------------------
# data root and the MP-20 training policy

DATA_ENV_VAR = "UNIMDM_DATA"
HOLDOUT_SIZE = 1000
MP20_TEST_SIZE = 9046
MP20_SPLIT_NAMES: tuple[str, ...] = ("train", "holdout", "test", "test_1k")
#: Row counts of the policy splits with the files in ``../shared/data/mp_20``.
MP20_POLICY_COUNTS: dict[str, int] = {
    "train": 28218,
    "holdout": HOLDOUT_SIZE,
    "test": MP20_TEST_SIZE,
    "test_1k": 1000,
}


def _repo_root() -> Path:
    # <repo>/unimdm_jax/data/io.py -> <repo>
    return Path(__file__).resolve().parents[2]


def default_data_root() -> Path:
    """Directory holding the dataset folders (``mp_20/``, ``perov_5/``, ...).

    ``$UNIMDM_DATA`` if set; else ``<repo>/../shared/data`` if it exists; else
    ``~/.cache/unimdm/data`` (which need not exist; ``download --dest`` it).
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    shared = _repo_root().parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path.home() / ".cache" / "unimdm" / "data"


def _find(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        if (directory / name).is_file():
            return directory / name
    return None


def mp20_dir(root: PathLike | None = None) -> Path:
    """The MP-20 folder: ``root/mp_20`` if present, else ``root`` itself if it holds
    ``val.csv[.gz]``. ``root`` defaults to :func:`default_data_root`."""
    base = Path(root).expanduser() if root is not None else default_data_root()
    if (base / "mp_20").is_dir():
        return base / "mp_20"
    if _find(base, "val") is not None:
        return base
    raise DatasetError(
        f"{base}: no MP-20 data (expected {base / 'mp_20'}/val.csv.gz); "
        f"set {DATA_ENV_VAR} or run `python -m unimdm_jax.data download mp_20 --dest DIR`"
    )


def mp20_paths(root: PathLike | None = None) -> dict[str, Path]:
    """Paths of the MP-20 files: keys ``"train"``, ``"val"``, ``"test"``.

    ``"train"`` is ``train_partial.csv.gz`` (the shared copy) when present, else the full
    upstream ``train.csv[.gz]``. Raises :class:`DatasetError` if a file is missing.
    """
    d = mp20_dir(root)
    found = {
        "train": _find(d, "train_partial") or _find(d, "train"),
        "val": _find(d, "val"),
        "test": _find(d, "test"),
    }
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise DatasetError(f"{d}: missing MP-20 file(s) for {', '.join(missing)}")
    return {k: v for k, v in found.items() if v is not None}


@dataclass(frozen=True)
class FileSlice:
    """Rows ``start:stop`` (0-based, Python slice semantics) of one file, or explicit
    ``indices`` (0-based, sorted) when given."""

    path: Path
    start: int = 0
    stop: int | None = None
    indices: tuple[int, ...] | None = None

    def describe(self) -> str:
        if self.indices is not None:
            return f"{self.path.name}[{len(self.indices)} fixed rows]"
        if self.start == 0 and self.stop is None:
            return f"{self.path.name}[all]"
        return f"{self.path.name}[{self.start}:{'' if self.stop is None else self.stop}]"

    def iter_rows(self, properties: Sequence[str] | None = None) -> Iterator[CrystalRow]:
        if self.indices is None:
            limit = None if self.stop is None else max(0, self.stop - self.start)
            yield from iter_rows(self.path, limit=limit, skip=self.start, properties=properties)
            return
        wanted = self.indices
        if not wanted:
            return
        rows = read_rows(self.path, limit=wanted[-1] + 1, properties=properties)
        if len(rows) <= wanted[-1]:
            raise DatasetError(f"{self.path}: has {len(rows)} rows, subset needs row {wanted[-1]}")
        for i in wanted:
            yield rows[i]


@dataclass(frozen=True)
class MP20Split:
    """One split of the MP-20 training policy: an ordered list of file slices."""

    name: str
    parts: tuple[FileSlice, ...]
    expected_rows: int | None = None
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """E.g. ``"train = train_partial.csv.gz[all] + val.csv.gz[1000:]"`` (0-based)."""
        return f"{self.name} = " + " + ".join(p.describe() for p in self.parts)

    def iter_rows(self, properties: Sequence[str] | None = None) -> Iterator[CrystalRow]:
        for part in self.parts:
            yield from part.iter_rows(properties=properties)

    def rows(self, properties: Sequence[str] | None = None) -> list[CrystalRow]:
        return list(self.iter_rows(properties=properties))


def mp20_split(name: str, root: PathLike | None = None) -> MP20Split:
    """The policy split ``name`` (``train``, ``holdout``, ``test``, ``test_1k``)."""
    if name not in MP20_SPLIT_NAMES:
        raise DatasetError(f"unknown MP-20 split {name!r} (choose from {', '.join(MP20_SPLIT_NAMES)})")
    paths = mp20_paths(root)
    notes: tuple[str, ...] = ()
    if name == "train":
        if not paths["train"].name.startswith("train_partial"):
            notes = (f"uses the full train split {paths['train'].name} instead of train_partial",)
        parts = (FileSlice(paths["train"]), FileSlice(paths["val"], start=HOLDOUT_SIZE))
        expected = MP20_POLICY_COUNTS["train"] if not notes else None
    elif name == "holdout":
        parts = (FileSlice(paths["val"], start=0, stop=HOLDOUT_SIZE),)
        expected = HOLDOUT_SIZE
    elif name == "test":
        parts = (FileSlice(paths["test"]),)
        expected = MP20_TEST_SIZE
    else:  # test_1k
        parts = (FileSlice(paths["test"], indices=TEST_1K),)
        expected = TEST_1K_SIZE
    return MP20Split(name=name, parts=parts, expected_rows=expected, notes=notes)


def policy_rows(
    root: PathLike | None, name: str, *, properties: Sequence[str] | None = None
) -> list[CrystalRow]:
    """Rows of MP-20 policy split ``name`` under data root ``root`` (None: default).

    ``train`` = all of ``train_partial.csv.gz`` + ``val.csv.gz`` rows 1,001..9,047
    (1-based); ``holdout`` = first 1,000 rows of ``val.csv.gz``; ``test`` =
    ``test.csv.gz``; ``test_1k`` = the :data:`TEST_1K` rows of ``test.csv.gz``.
    """
    return mp20_split(name, root).rows(properties=properties)


TEST_1K_SEED = 20240601
TEST_1K_SIZE = 1000


def test_subset_indices(
    n_total: int = MP20_TEST_SIZE, size: int = TEST_1K_SIZE, seed: int = TEST_1K_SEED
) -> "np.ndarray":
    """Fixed random subset of row indices, sorted ascending (0-based, file order).

    Defined as ``np.sort(np.random.default_rng(seed).choice(n_total, size, replace=False))``.
    With the defaults (``n_total=9046``, ``size=1000``, ``seed=20240601``) this is
    :data:`TEST_1K`: the documented 1,000-structure subset of the MP-20 test split
    (``test.csv.gz``, 9,046 rows) used for quick evaluations. Stable across NumPy versions
    as long as NumPy's ``Generator.choice`` stream is (it has been since NumPy 1.17).
    """

    if not 0 <= size <= n_total:
        raise ValueError(f"size must be in 0..{n_total}, got {size}")
    idx = np.random.default_rng(seed).choice(n_total, size, replace=False)
    return np.sort(idx).astype(np.int64)


# Not a pytest test function despite the name.
test_subset_indices.__test__ = False  # type: ignore[attr-defined]

#: The MP-20 ``test_1k`` subset: 0-based row indices into ``test.csv.gz`` (sorted).
TEST_1K: tuple[int, ...] = tuple(int(i) for i in test_subset_indices())
