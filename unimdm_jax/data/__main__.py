"""``python -m unimdm_jax.data`` (also installed as ``unimdm-data``).

Subcommands: ``download``, ``verify``, ``stats`` (+ ``symmetry``, ``preprocess``: see below).

Adding a subcommand
-------------------
Define one function ``add_<name>_command(subparsers)`` in this module. It must create its
parser with ``subparsers.add_parser(...)`` and call ``set_defaults(handler=<fn>)`` where
``<fn>(args) -> int`` is the exit code. :func:`build_parser` discovers every
``add_*_command`` function in definition order, so nothing else needs registering.
Import heavy modules (pymatgen, jax, pandas, ...) *inside* the handler so that ``--help``
stays fast. Errors: raise ``DatasetError``/``ValueError``/``OSError`` with a one-line
message; :func:`main` prints ``error: <message>`` to stderr and returns 1 (an exception
with an ``exit_code`` attribute, e.g. ``OfflineError``, returns that code instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from unimdm_jax import schema  # JSON tables only
from unimdm_jax.errors import one_line

# every command imports its modules on use: building the parser (--help) loads no numpy,
# pandas, pymatgen or JAX (tests/test_data_io.py checks it)

PROG = "python -m unimdm_jax.data"


def _print_err(msg: str) -> None:
    print(msg, file=sys.stderr)


# --------------------------------------------------------------------------------------
# download


def _run_download(args: argparse.Namespace) -> int:
    from unimdm_jax.data.download import download_dataset, load_manifest

    manifest = load_manifest(args.manifest) if args.manifest else None
    dest = Path(args.dest) if args.dest else _default_dest()
    result = download_dataset(
        args.name,
        dest,
        base_url=args.base_url,
        force=args.force,
        manifest=manifest,
        timeout=args.timeout,
        progress=False if args.quiet else None,
        log=(lambda m: None) if args.quiet else None,
    )
    print(
        f"{args.name}: {len(result.downloaded)} downloaded, {len(result.kept)} already present, "
        f"all verified -> {result.directory}"
    )
    return 0


def _default_dest() -> Path:
    """$UNIMDM_DATA, else ~/.cache/unimdm/data (never the read-only ../shared)."""

    env = os.environ.get("UNIMDM_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unimdm" / "data"


def add_download_command(subparsers) -> None:
    p = subparsers.add_parser(
        "download",
        help="fetch a CDVAE-format dataset (mp_20, perov_5, carbon_24, mpts_52) and verify it",
        description="Download <name>/{train,val,test}.csv into DEST/<name>/, verify header and "
        "row counts against the packaged manifest, and record sizes/sha256 in "
        "DEST/<name>/MANIFEST.lock.json on first use (later downloads must match it). "
        "Exit 2 when the host cannot be reached.",
    )
    p.add_argument("name", choices=["mp_20", "perov_5", "carbon_24", "mpts_52"])
    p.add_argument(
        "--dest",
        help="data root; files go to DEST/<name>/ (default: $UNIMDM_DATA, else ~/.cache/unimdm/data)",
    )
    p.add_argument("--base-url", help="mirror replacing the .../data URL prefix")
    p.add_argument("--force", action="store_true", help="re-download files already present")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    p.add_argument("--manifest", help="manifest JSON overriding the packaged one")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(handler=_run_download)


# --------------------------------------------------------------------------------------
# verify


def _run_verify(args: argparse.Namespace) -> int:
    from unimdm_jax.data.download import load_manifest, verify_dataset

    manifest = load_manifest(args.manifest) if args.manifest else None
    report = verify_dataset(args.dir, args.name, manifest=manifest, write_lock=args.lock)
    print(report.summary())
    return 0


def add_verify_command(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check a dataset folder against MANIFEST.lock.json and the manifest",
        description="Verify DIR (e.g. DEST/mp_20): header columns, row counts, and sizes/sha256 "
        "recorded in DIR/MANIFEST.lock.json.",
    )
    p.add_argument("dir", help="dataset folder, e.g. DEST/mp_20")
    p.add_argument("--name", help="dataset name (default: from the lock file or folder name)")
    p.add_argument("--manifest", help="manifest JSON overriding the packaged one")
    p.add_argument(
        "--lock",
        action="store_true",
        help="if DIR has no lock file, write one after the checks pass (trust on first use)",
    )
    p.set_defaults(handler=_run_verify)


# --------------------------------------------------------------------------------------
# stats


def _run_stats(args: argparse.Namespace) -> int:
    from unimdm_jax.data.stats import compute_stats, format_stats

    stats = compute_stats(
        args.files,
        processes=args.processes,
        progress=False if args.quiet else None,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps(stats.to_dict(), indent=1))
    else:
        print(format_stats(stats))
    return 0


def add_stats_command(subparsers) -> None:
    p = subparsers.add_parser(
        "stats",
        help="rows, elements, atoms-per-cell, space-group and property summaries of CSV files",
    )
    p.add_argument("files", nargs="+", help="CDVAE-format CSV files (.csv or .csv.gz)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--processes", type=int, default=None, help="CIF parser processes (default 2)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_stats)


# --------------------------------------------------------------------------------------
# symmetry


def _report_failures(failures) -> None:
    for failure in failures:
        _print_err(f"failed: {failure.material_id} ({failure.source}): {one_line(failure.reason)}")


def _run_symmetry(args: argparse.Namespace) -> int:
    from unimdm_jax.data.io import read_rows
    from unimdm_jax.data.preprocess import symmetrize_rows

    rows = read_rows([args.file], limit=args.limit)
    dataset, failures = symmetrize_rows(rows, args.workers, args.symprec, progress=not args.quiet)
    source = f"dataset:{Path(args.file).name}"
    records = [dataset[i].to_record(source=source) for i in range(len(dataset))]
    count = schema.dump_records(records, args.out)
    _report_failures(failures)
    _print_err(f"{count} record(s) written to {args.out}; {len(failures)} structure(s) failed")
    return 0 if count else 1


def add_symmetry_command(subparsers) -> None:
    p = subparsers.add_parser("symmetry", help="one JSON symmetry schema record per structure of a CSV file")
    p.add_argument("file", help="CDVAE-format CSV (.csv or .csv.gz)")
    p.add_argument("--out", required=True, help="output file (.jsonl: one record per line; else a JSON list)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--symprec", type=float, default=0.01, help="symmetry tolerance (default 0.01)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_symmetry)


# --------------------------------------------------------------------------------------
# preprocess


def _run_preprocess(args: argparse.Namespace) -> int:
    from unimdm_jax.data.preprocess import preprocess_file
    from unimdm_jax.schema import parse_property_specs, register_property

    properties = None
    if args.properties is not None:
        specs = parse_property_specs(args.properties)
        properties = tuple(register_property(name, unit) for name, unit in specs.items())
    for file in args.files:
        dataset, failures = preprocess_file(
            file,
            cache_dir=args.cache_dir,
            workers=args.workers,
            symprec=args.symprec,
            progress=not args.quiet,
            properties=properties,
        )
        _report_failures(failures)
        print(f"{file}: {len(dataset)} crystal(s) symmetrized, {len(failures)} failed")
    return 0


def add_preprocess_command(subparsers) -> None:
    p = subparsers.add_parser(
        "preprocess", help="symmetrize CSV files into the on-disk cache used by training"
    )
    p.add_argument("files", nargs="+", help="CDVAE-format CSV files")
    p.add_argument("--cache-dir", default=None, help="default: $UNIMDM_CACHE or ~/.cache/unimdm/preprocessed")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--symprec", type=float, default=0.01, help="symmetry tolerance (default 0.01)")
    p.add_argument(
        "--properties",
        default=None,
        metavar="NAME:UNIT,...",
        help="numeric columns kept as properties, with their units, e.g. density:g/cm3 "
        "(default: MP-20's band_gap and formation_energy_per_atom); a training config names the same "
        "columns in its model's properties",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_preprocess)


def _command_adders() -> list[Callable]:
    return [
        fn
        for name, fn in list(globals().items())
        if name.startswith("add_") and name.endswith("_command") and callable(fn)
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Dataset tools for unimdm: download/verify CDVAE-format datasets, "
        "summary statistics, and preprocessing.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _command_adders():
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:  # pragma: no cover - required=True makes this unreachable
        parser.print_help(sys.stderr)
        return 1
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        _print_err("error: interrupted")
        return 130
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError
        _print_err(f"error: {one_line(exc)}")
        return int(getattr(exc, "exit_code", 1))


if __name__ == "__main__":
    sys.exit(main())
