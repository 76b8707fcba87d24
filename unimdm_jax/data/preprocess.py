"""Preprocessing: CDVAE CSV rows -> symmetrized crystals, in parallel, cached on disk.

A split is processed once per (file content, settings): the cache key hashes the input
file's bytes, the symmetry tolerance and ``EXTRACTION_VERSION``. The cache is a plain
``.npz`` (loaded with ``allow_pickle=False``) holding the dataset column by column, plus a
JSON report of the rows that failed. Nothing is dropped silently: every failed row is in
the report with its material id and reason, and the counts are printed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unimdm_jax.data import io
from unimdm_jax.data.io import read_rows, structure_from_cif
from unimdm_jax.data.symmetry import DEFAULT_SYMPREC, SymmetrizedCrystal, WyckoffSite, extract_symmetry
from unimdm_jax.parallel import process_pool
from unimdm_jax.provenance import file_sha256
from unimdm_jax.schema import PROPERTY_NAMES, space_group_symbol  # PROPERTY_NAMES: the stored columns

# Bump when the extraction's output changes, so stale caches are not reused.
EXTRACTION_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Failure:
    material_id: str
    source: str
    reason: str


@dataclasses.dataclass(frozen=True, eq=False)
class CrystalDataset:
    """Symmetrized crystals stored column by column (atoms of all crystals concatenated)."""

    material_id: np.ndarray  # (G,) str
    source: np.ndarray  # (G,) str: "file:row"
    spacegroup: np.ndarray  # (G,) int
    lattice_parameters: np.ndarray  # (G, 6) a, b, c, alpha, beta, gamma
    num_atoms: np.ndarray  # (G,) atoms in the conventional cell
    symprec: np.ndarray  # (G,) tolerance that succeeded
    property_names: tuple[str, ...]
    properties: np.ndarray  # (G, P), NaN where unknown
    sites_json: np.ndarray  # (G,) str: JSON list of [element, letter, multiplicity, rep, free]
    atomic_numbers: np.ndarray  # (N,)
    frac_coords: np.ndarray  # (N, 3)
    wyckoff_ops: np.ndarray  # (N, 4, 4)
    anchor_index: np.ndarray  # (N,) index of the anchor atom within its crystal
    ops_rotation_pinv: np.ndarray  # (N, 3, 3)
    site_index: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.material_id)

    @property
    def atom_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.num_atoms)]).astype(np.int64)

    def property(self, name: str) -> np.ndarray:
        return self.properties[:, self.property_names.index(name)]

    def __getitem__(self, i: int) -> SymmetrizedCrystal:
        start, stop = self.atom_offsets[i], self.atom_offsets[i + 1]
        sites = tuple(
            WyckoffSite(e, letter, int(m), tuple(rep), tuple(free))
            for e, letter, m, rep, free in json.loads(str(self.sites_json[i]))
        )
        return SymmetrizedCrystal(
            material_id=str(self.material_id[i]),
            spacegroup_number=int(self.spacegroup[i]),
            spacegroup_symbol=_symbol(int(self.spacegroup[i])),
            lattice_parameters=self.lattice_parameters[i],
            sites=sites,
            atomic_numbers=self.atomic_numbers[start:stop],
            frac_coords=self.frac_coords[start:stop],
            wyckoff_ops=self.wyckoff_ops[start:stop],
            anchor_index=self.anchor_index[start:stop],
            ops_rotation_pinv=self.ops_rotation_pinv[start:stop],
            site_index=self.site_index[start:stop],
            properties={n: float(v) for n, v in zip(self.property_names, self.properties[i])},
            symprec=float(self.symprec[i]),
        )

    def select(self, indices) -> "CrystalDataset":
        indices = np.asarray(indices, dtype=np.int64)
        offsets = self.atom_offsets
        atoms = (
            np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices])
            if len(indices)
            else np.zeros(0, np.int64)
        )
        per_crystal = {f: getattr(self, f)[indices] for f in _CRYSTAL_FIELDS}
        per_atom = {f: getattr(self, f)[atoms] for f in _ATOM_FIELDS}
        return CrystalDataset(property_names=self.property_names, **per_crystal, **per_atom)

    @staticmethod
    def concatenate(parts: list["CrystalDataset"]) -> "CrystalDataset":
        names = parts[0].property_names
        if any(p.property_names != names for p in parts):
            raise ValueError("cannot concatenate datasets with different property columns")
        fields = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _CRYSTAL_FIELDS + _ATOM_FIELDS}
        return CrystalDataset(property_names=names, **fields)

    @staticmethod
    def from_crystals(crystals: list[SymmetrizedCrystal], sources: list[str], property_names=PROPERTY_NAMES):
        def cat(values, shape, dtype):
            return np.concatenate(values).astype(dtype) if values else np.zeros((0, *shape), dtype)

        return CrystalDataset(
            material_id=np.asarray([c.material_id for c in crystals], dtype=str),
            source=np.asarray(sources, dtype=str),
            spacegroup=np.asarray([c.spacegroup_number for c in crystals], dtype=np.int32),
            lattice_parameters=np.asarray([c.lattice_parameters for c in crystals], np.float64).reshape(
                -1, 6
            ),
            num_atoms=np.asarray([c.num_atoms for c in crystals], dtype=np.int32),
            symprec=np.asarray([c.symprec for c in crystals], dtype=np.float64),
            property_names=tuple(property_names),
            properties=np.asarray(
                [[c.properties.get(n, np.nan) for n in property_names] for c in crystals], np.float64
            ).reshape(-1, len(property_names)),
            sites_json=np.asarray(
                [
                    json.dumps(
                        [
                            [s.element, s.letter, s.multiplicity, s.representative, s.free_parameters]
                            for s in c.sites
                        ]
                    )
                    for c in crystals
                ],
                dtype=str,
            ),
            atomic_numbers=cat([c.atomic_numbers for c in crystals], (), np.int32),
            frac_coords=cat([c.frac_coords for c in crystals], (3,), np.float32),
            wyckoff_ops=cat([c.wyckoff_ops for c in crystals], (4, 4), np.float32),
            anchor_index=cat([c.anchor_index for c in crystals], (), np.int32),
            ops_rotation_pinv=cat([c.ops_rotation_pinv for c in crystals], (3, 3), np.float32),
            site_index=cat([c.site_index for c in crystals], (), np.int32),
        )

    def save(self, path: Path) -> None:
        arrays = {f: getattr(self, f) for f in _CRYSTAL_FIELDS + _ATOM_FIELDS}
        arrays["property_names"] = np.asarray(self.property_names, dtype=str)
        path = Path(path)
        tmp = path.with_name(
            f"{path.name}.{os.getpid()}.tmp.npz"
        )  # two processes may write one cache at once
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> "CrystalDataset":
        with np.load(path, allow_pickle=False) as data:
            fields = {f: data[f] for f in _CRYSTAL_FIELDS + _ATOM_FIELDS}
            names = tuple(str(n) for n in data["property_names"])
        return CrystalDataset(property_names=names, **fields)


_CRYSTAL_FIELDS = (
    "material_id",
    "source",
    "spacegroup",
    "lattice_parameters",
    "num_atoms",
    "symprec",
    "properties",
    "sites_json",
)
_ATOM_FIELDS = (
    "atomic_numbers",
    "frac_coords",
    "wyckoff_ops",
    "anchor_index",
    "ops_rotation_pinv",
    "site_index",
)


def _symbol(number: int) -> str:
    return space_group_symbol(number)


def _symmetrize_row(args):
    """Worker: one CSV row -> (crystal, None) or (None, Failure). Never raises."""
    material_id, cif, properties, source, symprec = args

    warnings.filterwarnings("ignore")
    try:
        structure = structure_from_cif(cif)
        return extract_symmetry(structure, material_id, properties, symprec), None
    except Exception as error:  # noqa: BLE001 - report, never die on one row
        return None, Failure(material_id, source, f"{type(error).__name__}: {error}"[:500])


def symmetrize_rows(
    rows,
    workers: int | None = None,
    symprec: float = DEFAULT_SYMPREC,
    progress: bool = True,
    properties: Sequence[str] = PROPERTY_NAMES,
):
    """Symmetrize CSV rows in parallel, preserving order. Returns (dataset, failures); the
    dataset's property columns are ``properties`` (NaN where a row has no value)."""

    workers = workers or os.cpu_count() or 1
    properties = tuple(properties)
    jobs = [
        (
            r.material_id,
            r.cif,
            {n: r.properties.get(n, float("nan")) for n in properties},
            r.source,
            symprec,
        )
        for r in rows
    ]
    bar = tqdm(total=len(jobs), desc="symmetry", unit="crystal", disable=not progress, file=sys.stderr)
    results = []
    if workers > 1 and len(jobs) > 1:
        with process_pool(workers) as pool:
            for result in pool.imap(_symmetrize_row, jobs, chunksize=16):
                results.append(result)
                bar.update()
    else:
        for job in jobs:
            results.append(_symmetrize_row(job))
            bar.update()
    bar.close()
    crystals = [c for c, _ in results if c is not None]
    sources = [job[3] for job, (c, _) in zip(jobs, results) if c is not None]
    failures = [f for _, f in results if f is not None]
    return CrystalDataset.from_crystals(crystals, sources, properties), failures


def check_property_columns(path: Path, properties: Sequence[str], rows: Sequence[io.CrystalRow]) -> None:
    """A one-line ``DatasetError`` unless the CSV (``rows``: read from it) has a numeric column for
    every property."""
    header = [name for name in io.read_header(path) if name]
    missing = [name for name in properties if name not in header]
    if missing:
        others = [c for c in header if c not in io.METADATA_COLUMNS]
        raise io.DatasetError(
            f"{path}: no column {missing[0]!r} (property columns: {', '.join(others) or 'none'})"
        )
    if not rows:
        raise io.DatasetError(f"{path}: no data rows")
    numeric = set(rows[0].properties)  # the columns whose every value is a number (or empty)
    not_numeric = [name for name in properties if name not in numeric]
    if not_numeric:
        raise io.DatasetError(f"{path}: column {not_numeric[0]!r} holds values that are not numbers")


def default_cache_dir() -> Path:
    return Path(os.environ.get("UNIMDM_CACHE", Path.home() / ".cache" / "unimdm" / "preprocessed"))


def cache_key(path: Path, symprec: float, properties: Sequence[str] = PROPERTY_NAMES) -> str:
    settings = json.dumps({"symprec": symprec, "version": EXTRACTION_VERSION, "properties": list(properties)})
    return hashlib.sha256((file_sha256(path) + settings).encode()).hexdigest()[:24]


def preprocess_file(
    path,
    cache_dir: Path | None = None,
    workers: int | None = None,
    symprec: float = DEFAULT_SYMPREC,
    progress: bool = True,
    properties: Sequence[str] | None = None,
) -> tuple[CrystalDataset, list[Failure]]:
    """Symmetrize every row of one CSV file, using the on-disk cache when it is valid.

    ``properties``: the numeric columns kept as the dataset's properties (default: MP-20's
    ``PROPERTY_NAMES``, NaN where the file has no such column); named ones must exist and be
    numeric (a user's own property: register its unit with ``schema.register_property``)."""

    path = Path(path)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    custom = properties is not None
    properties = tuple(properties) if custom else PROPERTY_NAMES
    key = cache_key(path, symprec, properties)
    data_path = cache_dir / f"{path.name}.{key}.npz"
    report_path = cache_dir / f"{path.name}.{key}.failures.json"
    if data_path.exists() and report_path.exists():
        try:
            failures = [Failure(**f) for f in json.loads(report_path.read_text())]
            return CrystalDataset.load(data_path), failures
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            pass  # a corrupt cache is rebuilt
    rows = read_rows([path])
    if custom:  # (a cached file passed this check when it was written)
        check_property_columns(path, properties, rows)
    dataset, failures = symmetrize_rows(rows, workers, symprec, progress, properties)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dataset.save(data_path)
    report_path.write_text(json.dumps([dataclasses.asdict(f) for f in failures], indent=1))
    return dataset, failures


def load_split(name: str, root=None, properties: Sequence[str] | None = None, **kwargs):
    """A policy split of MP-20 by name (``load_policy_split``), or a CSV file of your own with
    ``properties`` as its property columns (``preprocess_file``). Returns (dataset, failures)."""
    if name in POLICY_SPLITS:
        return load_policy_split(name, root, **kwargs)
    path = Path(name)
    if not path.is_file():
        raise io.DatasetError(
            f"split {name!r} is neither a policy split ({', '.join(POLICY_SPLITS)}) nor a CSV file"
        )
    return preprocess_file(path, properties=properties, **kwargs)


POLICY_SPLITS = ("train", "holdout", "test", "test-1k")


def load_policy_split(name: str, root=None, **kwargs) -> tuple[CrystalDataset, list[Failure]]:
    """The training policy's splits (see ../shared/README.md), preprocessed and cached.

    - ``train``: all of train_partial.csv.gz + val.csv.gz rows 1001..9047
    - ``holdout``: val.csv.gz rows 1..1000 (model selection only)
    - ``test``: test.csv.gz (reported results only)
    - ``test-1k``: the fixed 1,000-structure subset of test (see ``io.test_subset_indices``)
    """

    root = Path(root) if root is not None else io.default_data_root()
    mp20 = root / "mp_20" if (root / "mp_20").is_dir() else root

    def part(file_name):
        return preprocess_file(mp20 / file_name, **kwargs)

    def rows_in(dataset, file_name, lo, hi):
        index = np.asarray([int(s.rsplit(":", 1)[1]) for s in dataset.source])
        return np.nonzero((index >= lo) & (index < hi))[0]

    if name == "train":
        train, f1 = part("train_partial.csv.gz")
        val, f2 = part("val.csv.gz")
        val_rest = val.select(rows_in(val, "val.csv.gz", 1000, 10**9))
        f2 = [f for f in f2 if int(f.source.rsplit(":", 1)[1]) >= 1000]
        return CrystalDataset.concatenate([train, val_rest]), f1 + f2
    if name == "holdout":
        val, failures = part("val.csv.gz")
        return val.select(rows_in(val, "val.csv.gz", 0, 1000)), [
            f for f in failures if int(f.source.rsplit(":", 1)[1]) < 1000
        ]
    if name in ("test", "test-1k"):
        test, failures = part("test.csv.gz")
        if name == "test":
            return test, failures
        wanted = set(io.test_subset_indices().tolist())
        index = np.asarray([int(s.rsplit(":", 1)[1]) for s in test.source])
        keep = np.nonzero([i in wanted for i in index])[0]
        return test.select(keep), [f for f in failures if int(f.source.rsplit(":", 1)[1]) in wanted]
    raise ValueError(f"unknown split {name!r}: expected train, holdout, test or test-1k")
