"""Download and verify the standard CDVAE-format datasets.

    python -m unimdm_jax.data download mp_20 --dest DIR      # -> DIR/mp_20/{train,val,test}.csv
    python -m unimdm_jax.data verify DIR/mp_20

Sources: ``https://raw.githubusercontent.com/txie-93/cdvae/main/data/<name>/<split>.csv``
(mp_20, perov_5, carbon_24) and ``https://raw.githubusercontent.com/jiaor17/DiffCSP/main/data/
mpts_52/<split>.csv``. ``--base-url URL`` replaces the ``.../data`` prefix (a mirror must use
the same ``<name>/<split>.csv`` layout).

Verification
------------
:data:`MANIFEST` gives, per file, the expected number of data rows and the columns that must
be in the header; ``size``/``sha256`` are ``None`` because the upstream values could not be
recorded offline. Trust on first use: after the first download whose header and row counts
all match, ``DEST/<name>/MANIFEST.lock.json`` records the size and sha256 of each file.
Later downloads (``--force``) and ``verify`` must match the lock (and the manifest wherever
its values are not ``None``). To re-trust a dataset (e.g. after an intentional upstream
change), delete the lock file.

Atomicity: every split is downloaded to a hidden temporary file in ``DEST/<name>/``; only
when *all* splits pass verification are they renamed into place (``os.replace``) and the
lock written. On any failure the temporary files are deleted and a dataset directory that
this call created is removed, so no partial files are left behind.

Errors are :class:`DownloadError` (one line; CLI exit 1) or, when the host cannot be reached,
:class:`OfflineError` (CLI exit 2).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from unimdm_jax.data.io import DatasetError
from unimdm_jax.errors import one_line
from unimdm_jax.provenance import file_sha256

__all__ = [
    "CDVAE_BASE_URL",
    "DIFFCSP_BASE_URL",
    "LOCK_NAME",
    "FileSpec",
    "DatasetSpec",
    "MANIFEST",
    "DownloadError",
    "OfflineError",
    "VerifyReport",
    "DownloadResult",
    "FileCheck",
    "download_dataset",
    "verify_dataset",
    "verify_file",
    "count_csv_rows",
    "load_manifest",
    "manifest_to_json",
]

CDVAE_BASE_URL = "https://raw.githubusercontent.com/txie-93/cdvae/main/data"
DIFFCSP_BASE_URL = "https://raw.githubusercontent.com/jiaor17/DiffCSP/main/data"
LOCK_NAME = "MANIFEST.lock.json"
_CHUNK = 1 << 16


class DownloadError(DatasetError):
    """Download or verification failed (one-line message)."""


class OfflineError(DownloadError):
    """The source host could not be reached (no network, DNS failure, refused, timeout)."""

    exit_code = 2


@dataclass(frozen=True)
class FileSpec:
    """Expected content of one split file. ``None`` = unknown, not checked."""

    split: str
    rows: int | None
    size: int | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.split}.csv"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    base_url: str
    files: tuple[FileSpec, ...]
    required_columns: tuple[str, ...] = ("material_id", "cif")

    def file(self, split: str) -> FileSpec:
        for f in self.files:
            if f.split == split:
                return f
        raise KeyError(split)


def _spec(name: str, base: str, rows: tuple[int, int, int], cols: Sequence[str]) -> DatasetSpec:
    files = tuple(FileSpec(s, n) for s, n in zip(("train", "val", "test"), rows))
    return DatasetSpec(name, base, files, ("material_id", "cif", *cols))


#: The packaged manifest. size/sha256 unknown (None): see the module docstring (TOFU lock).
MANIFEST: dict[str, DatasetSpec] = {
    "mp_20": _spec(
        "mp_20",
        CDVAE_BASE_URL,
        (27136, 9047, 9046),
        ("formation_energy_per_atom", "band_gap", "pretty_formula", "spacegroup.number"),
    ),
    "perov_5": _spec("perov_5", CDVAE_BASE_URL, (11356, 3785, 3785), ("heat_ref",)),
    "carbon_24": _spec("carbon_24", CDVAE_BASE_URL, (6091, 2030, 2030), ("energy_per_atom",)),
    "mpts_52": _spec("mpts_52", DIFFCSP_BASE_URL, (27380, 5000, 8096), ()),
}


def manifest_to_json(manifest: Mapping[str, DatasetSpec]) -> dict:
    return {k: asdict(v) for k, v in manifest.items()}


def load_manifest(path: str | os.PathLike[str]) -> dict[str, DatasetSpec]:
    """Read a manifest JSON (the format of :func:`manifest_to_json`)."""
    try:
        raw = json.loads(Path(path).read_text())
        return {
            name: DatasetSpec(
                name=d.get("name", name),
                base_url=d["base_url"],
                files=tuple(FileSpec(**f) for f in d["files"]),
                required_columns=tuple(d.get("required_columns", ("material_id", "cif"))),
            )
            for name, d in raw.items()
        }
    except FileNotFoundError as exc:
        raise DownloadError(f"{path}: no such manifest file") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DownloadError(f"{path}: bad manifest ({one_line(exc)})") from exc


# --------------------------------------------------------------------------------------
# file checks


def _open_csv_text(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def count_csv_rows(path: str | os.PathLike[str]) -> tuple[list[str], int]:
    """(header, number of data records) of a CSV (plain or gzip), quoted newlines allowed."""
    path = Path(path)
    csv.field_size_limit(1 << 30)
    try:
        with _open_csv_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DownloadError(f"{path.name}: empty file")
            n = sum(1 for _ in reader)
    except (csv.Error, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise DownloadError(f"{path.name}: not a readable CSV ({one_line(exc)})") from exc
    return header, n


@dataclass
class FileCheck:
    filename: str
    size: int
    sha256: str
    rows: int | None


def verify_file(
    path: Path,
    spec: FileSpec,
    required_columns: Sequence[str],
    lock_entry: Mapping | None = None,
    *,
    display_name: str | None = None,
    check_rows: bool = True,
) -> FileCheck:
    """Check one file against the manifest entry ``spec`` and the lock entry (if any).

    Raises :class:`DownloadError` with a one-line reason on the first mismatch."""
    name = display_name or spec.filename
    size = path.stat().st_size
    digest = file_sha256(path)
    for origin, ref in (("manifest", asdict(spec)), (LOCK_NAME, lock_entry or {})):
        if ref.get("size") is not None and int(ref["size"]) != size:
            raise DownloadError(f"{name}: size {size} does not match {origin} ({ref['size']})")
        if ref.get("sha256") is not None and str(ref["sha256"]).lower() != digest:
            raise DownloadError(
                f"{name}: sha256 {digest[:16]}... does not match {origin} ({str(ref['sha256'])[:16]}...)"
            )
    rows = None
    if check_rows:
        header, rows = count_csv_rows(path)
        cols = header[1:] if header and (header[0] == "" or header[0].startswith("Unnamed")) else header
        missing = [c for c in required_columns if c not in cols]
        if missing:
            raise DownloadError(
                f"{name}: header lacks column(s) {', '.join(missing)} (found: {', '.join(cols)})"
            )
        if spec.rows is not None and rows != spec.rows:
            raise DownloadError(f"{name}: {rows} data rows, manifest expects {spec.rows}")
    return FileCheck(filename=spec.filename, size=size, sha256=digest, rows=rows)


def _read_lock(directory: Path) -> dict | None:
    lock = directory / LOCK_NAME
    if not lock.exists():
        return None
    try:
        data = json.loads(lock.read_text())
        if not isinstance(data.get("files"), dict):
            raise ValueError("no 'files' table")
        return data
    except (OSError, ValueError) as exc:
        raise DownloadError(f"{lock}: unreadable lock file ({one_line(exc)})") from exc


def _write_lock(
    directory: Path, name: str, source: str, checks: Sequence[FileCheck], old: dict | None
) -> Path:
    files = dict((old or {}).get("files", {}))
    for c in checks:
        files[c.filename] = {"size": c.size, "sha256": c.sha256, "rows": c.rows}
    data = {
        "dataset": name,
        "source": source,
        "created": (old or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "trust-on-first-use record written by unimdm_jax.data.download; "
        "delete this file to re-trust the dataset",
        "files": dict(sorted(files.items())),
    }
    lock = directory / LOCK_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{LOCK_NAME}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, lock)
    except BaseException:
        _unlink(Path(tmp))
        raise
    return lock


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------
# download


DISPLAY_NAMES = {"mp_20": "MP-20", "perov_5": "Perov-5", "carbon_24": "Carbon-24", "mpts_52": "MPTS-52"}


def _offline_message(host: str, reason: str, name: str = "mp_20") -> str:
    return (
        f"cannot reach {host}: {reason} — download {DISPLAY_NAMES.get(name, name)} on a "
        f"machine with internet and pass --dest / set UNIMDM_DATA"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        inner = exc.reason
        return one_line(inner) if isinstance(inner, BaseException) else str(inner)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return one_line(exc)


def _fetch(
    url: str, dest: Path, *, timeout: float, progress: bool | None, label: str, name: str = "mp_20"
) -> None:
    """Stream ``url`` into ``dest`` (already-created temp file path)."""
    host = urllib.parse.urlsplit(url).netloc or url
    req = urllib.request.Request(url, headers={"User-Agent": "unimdm-data/0.1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
            total = resp.headers.get("Content-Length")
            bar = tqdm(
                total=int(total) if total and total.isdigit() else None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                disable=(not progress) if progress is not None else None,
                leave=False,
            )
            with bar:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
            if total and total.isdigit() and out.tell() != int(total):
                raise DownloadError(f"{label}: truncated download ({out.tell()} of {total} bytes) from {url}")
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{label}: HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
        raise OfflineError(_offline_message(host, _reason(exc), name)) from exc
    except OSError as exc:  # local I/O trouble (disk full, permissions, ...)
        raise DownloadError(f"{label}: {one_line(exc)}") from exc


def _missing_ancestors(path: Path) -> list[Path]:
    out = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


@dataclass
class DownloadResult:
    directory: Path
    downloaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    lock: Path | None = None
    lock_created: bool = False


def download_dataset(
    name: str,
    dest: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    force: bool = False,
    manifest: Mapping[str, DatasetSpec] | None = None,
    splits: Sequence[str] | None = None,
    timeout: float = 60.0,
    progress: bool | None = None,
    log=None,
) -> DownloadResult:
    """Download dataset ``name`` into ``dest/name/`` and verify it (see module docstring).

    Existing files are verified and kept unless ``force``. ``manifest`` overrides
    :data:`MANIFEST` (tests use small files). ``progress=None`` shows a tqdm bar only on a
    terminal. ``log`` is a ``print``-like callable for status lines (default: stderr when
    it is a terminal, else silent).
    """
    manifest = MANIFEST if manifest is None else manifest
    if name not in manifest:
        raise DownloadError(f"unknown dataset {name!r} (choose from {', '.join(sorted(manifest))})")
    spec = manifest[name]
    if base_url:
        spec = replace(spec, base_url=base_url)
    files = [spec.file(s) for s in splits] if splits else list(spec.files)
    if log is None:  # status lines only on an interactive terminal; errors are raised
        log = (lambda msg: print(msg, file=sys.stderr)) if sys.stderr.isatty() else (lambda msg: None)
    say = log

    directory = Path(dest).expanduser() / name
    created = _missing_ancestors(directory)  # dirs this call creates, deepest first
    directory.mkdir(parents=True, exist_ok=True)
    result = DownloadResult(directory=directory)
    temps: list[Path] = []
    try:
        lock = _read_lock(directory)
        lock_files = (lock or {}).get("files", {})
        checks: list[FileCheck] = []
        pending: list[tuple[Path, Path]] = []
        for f in files:
            final = directory / f.filename
            if final.exists() and not force:
                try:
                    checks.append(verify_file(final, f, spec.required_columns, lock_files.get(f.filename)))
                except DownloadError as exc:
                    raise DownloadError(f"{exc} (existing file; --force re-downloads it)") from exc
                result.kept.append(f.filename)
                say(f"{name}/{f.filename}: present, verified")
                continue
            url = f"{spec.base_url.rstrip('/')}/{name}/{f.filename}"
            fd, tmp_name = tempfile.mkstemp(prefix=f".{f.filename}.", suffix=".part", dir=directory)
            os.close(fd)
            tmp = Path(tmp_name)
            temps.append(tmp)
            say(f"{name}/{f.filename}: downloading {url}")
            _fetch(url, tmp, timeout=timeout, progress=progress, label=f"{name}/{f.filename}", name=name)
            checks.append(verify_file(tmp, f, spec.required_columns, lock_files.get(f.filename)))
            pending.append((tmp, final))
        for tmp, final in pending:
            os.replace(tmp, final)
            result.downloaded.append(final.name)
        temps.clear()
        new_entries = [c for c in checks if c.filename not in lock_files]
        if lock is None or new_entries:
            result.lock = _write_lock(directory, name, spec.base_url, checks, lock)
            result.lock_created = lock is None
            say(f"{name}: {'wrote' if lock is None else 'updated'} {result.lock} (trust on first use)")
        else:
            result.lock = directory / LOCK_NAME
        return result
    except BaseException:
        for tmp in temps:
            _unlink(tmp)
        for d in created:
            try:
                d.rmdir()  # only if still empty
            except OSError:
                break
        raise


# --------------------------------------------------------------------------------------
# verify


@dataclass
class VerifyReport:
    directory: Path
    dataset: str
    checked: list[FileCheck]
    locked: bool
    lock_written: bool = False

    def summary(self) -> str:
        lines = [f"{self.dataset} at {self.directory}:"]
        for c in self.checked:
            rows = "" if c.rows is None else f"{c.rows} rows, "
            lines.append(f"  {c.filename}: OK ({rows}{c.size} bytes, sha256 {c.sha256[:16]}...)")
        if self.lock_written:
            lines.append(f"  wrote {LOCK_NAME} (trust on first use)")
        elif not self.locked:
            lines.append(f"  no {LOCK_NAME}: checked header and row counts only (--lock to record hashes)")
        return "\n".join(lines)


def _locate(directory: Path, filename: str) -> Path | None:
    for cand in (directory / filename, directory / f"{filename}.gz"):
        if cand.is_file():
            return cand
    return None


def verify_dataset(
    directory: str | os.PathLike[str],
    name: str | None = None,
    *,
    manifest: Mapping[str, DatasetSpec] | None = None,
    write_lock: bool = False,
) -> VerifyReport:
    """Verify ``directory`` (e.g. ``DEST/mp_20``) against its lock and the manifest.

    The dataset name defaults to the lock's ``dataset`` field, else the folder name.
    ``<split>.csv`` or ``<split>.csv.gz`` are accepted. Without a lock, header and row
    counts are checked; ``write_lock=True`` then records the hashes (trust on first use).
    """
    manifest = MANIFEST if manifest is None else manifest
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DownloadError(f"{directory}: no such directory")
    lock = _read_lock(directory)
    name = name or (lock or {}).get("dataset") or directory.name
    if name not in manifest:
        raise DownloadError(
            f"{directory}: unknown dataset {name!r} (choose from {', '.join(sorted(manifest))})"
        )
    spec = manifest[name]
    lock_files = (lock or {}).get("files", {})
    located = {f.split: _locate(directory, f.filename) for f in spec.files}
    missing = [f.filename for f in spec.files if located[f.split] is None]
    if missing:
        raise DownloadError(f"{directory}: missing {', '.join(missing)}")
    checks = []
    for f in spec.files:
        path = located[f.split]
        assert path is not None
        entry = lock_files.get(path.name)
        if lock is not None and entry is None:
            raise DownloadError(f"{path.name}: not recorded in {LOCK_NAME}")
        c = verify_file(path, f, spec.required_columns, entry, display_name=path.name)
        c.filename = path.name
        checks.append(c)
    report = VerifyReport(directory=directory, dataset=name, checked=checks, locked=lock is not None)
    if write_lock and lock is None:
        _write_lock(directory, name, "verify --lock", checks, None)
        report.lock_written = True
    return report
