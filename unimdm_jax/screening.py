"""Screening many targets: one generation per row of a targets CSV, resumable.

    python -m unimdm_jax.sample --targets targets.csv --out DIR [--resume] [-n 8] [--top-k 3] [...]

``targets.csv`` has a ``formula`` column and one target column per row, ``band_gap`` (eV) or
``formation_energy`` (eV/atom; ``formation_energy_per_atom`` is accepted too), each a value or a
range ``lo:hi``; optional ``n``, ``top_k`` (else the command's ``-n`` / ``--top-k``) and ``id`` (else
``row0001``, ``row0002``, ...). With a ``--dit-checkpoint`` trained on a property of your own, that
property's column is a target column too (``density``, say). Every other option of the command
applies to all rows.

What it writes: ``DIR/rows/<id>/``, each row's folder exactly as a single run writes it (CIFs,
extended XYZ, ``summary.json`` / ``summary.csv``, ``symmetry.jsonl``), published by one rename when
the row is done; and ``DIR/summary.csv`` / ``DIR/summary.json``, one line per row in file order:
its status (``ok`` or ``error``), the one-line reason of a bad row (unknown element, impossible
composition, target out of range, ...), the numbers of structures sampled and kept, and the
rank-1 structure with the oracle's prediction and its distance to the target.

How: the models are loaded once. Rows are taken in fixed groups of ``rows_per_batch`` (by file
position): stage 1 (the symmetry predictor) runs row by row, then the structures of all rows of
the group that use the same Crystal DiT are sampled together in full batches of one padded shape
(``generation.sample_requests``), then each row is finished (duplicates, relaxation, oracle,
ranking) and written. A bad row is reported and does not stop the others.

Resuming (``resume=True``, ``--resume``): rows whose folder exists are not written again; a group
with rows left is recomputed whole (same rows, same seed, so the same draws), which makes the final
summary identical to that of an uninterrupted run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from unimdm_jax.errors import one_line
from unimdm_jax.generation import (
    GenerationError,
    Options,
    finish_request,
    load_crystal_dit,
    prepare_request,
    sample_requests,
)

#: target columns of a targets file: column name -> keyword of ``generation.prepare_request`` (which
#: maps the keyword to the schema's property name; columns of your own properties are added per screen)
TARGET_COLUMNS = {
    "band_gap": "band_gap",
    "formation_energy": "formation_energy",
    "formation_energy_per_atom": "formation_energy",
}
ROW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ROWS_PER_BATCH = 16


@dataclasses.dataclass(frozen=True)
class TargetRow:
    """One row of a targets file; ``error`` is set (one line) when the row itself is malformed."""

    id: str
    formula: str | None
    targets: dict[str, str]  # prepare_request keyword -> value or "lo:hi" as written
    n: int
    top_k: int
    error: str | None = None


def read_targets(path: str | Path, n: int = 8, top_k: int = 3, own_properties=()) -> list[TargetRow]:
    """The rows of a targets CSV. A file-level problem (missing, no ``formula`` column, duplicate
    ids) raises GenerationError; a row-level one becomes that row's ``error``. ``own_properties``:
    further target columns, the properties of your own a ``--dit-checkpoint`` is trained on."""
    path = Path(path)
    target_columns = {**TARGET_COLUMNS, **{name: name for name in own_properties}}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            lines = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise GenerationError(f"targets file {path}: {one_line(error)}") from None
    if "formula" not in columns:
        raise GenerationError(f"targets file {path}: no 'formula' column (columns: {', '.join(columns)})")
    if not any(c in target_columns for c in columns):
        raise GenerationError(f"targets file {path}: no target column ({', '.join(target_columns)})")
    rows, seen = [], set()
    for number, line in enumerate(lines, start=1):
        line = {(k or "").strip(): (v or "").strip() for k, v in line.items()}
        row_id = line.get("id") or f"row{number:04d}"
        if not ROW_ID.match(row_id):
            raise GenerationError(
                f"targets file {path}, row {number}: id {row_id!r} is not a safe folder name"
            )
        if row_id in seen:
            raise GenerationError(f"targets file {path}: id {row_id!r} appears twice")
        seen.add(row_id)
        error = None
        targets = {target_columns[c]: line[c] for c in target_columns if line.get(c)}
        if len(targets) != 1:
            error = f"give exactly one target per row: {' or '.join(dict.fromkeys(target_columns.values()))}"
        row_n, row_top_k = n, top_k
        try:
            row_n = int(line["n"]) if line.get("n") else n
            row_top_k = int(line["top_k"]) if line.get("top_k") else top_k
        except ValueError:
            error = error or f"n and top_k must be integers, got {line.get('n')!r}, {line.get('top_k')!r}"
        if not line.get("formula"):
            error = error or "no formula"
        rows.append(TargetRow(row_id, line.get("formula") or None, targets, row_n, row_top_k, error))
    if not rows:
        raise GenerationError(f"targets file {path} has no rows")
    return rows


def _write_json(path: Path, value: Any) -> None:
    """Atomic: a temporary file in the same folder, then one rename."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(value, out, indent=2, default=str)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def summary_line(row: TargetRow, folder: Path | None, reason: str | None) -> dict[str, Any]:
    """The across-rows summary line of a row: from its written folder, or its error."""
    line: dict[str, Any] = {
        "id": row.id,
        "formula": row.formula,
        **row.targets,
        "n": row.n,
        "top_k": row.top_k,
    }
    if reason is not None or folder is None:
        return {**line, "status": "error", "reason": reason}
    summary = json.loads((folder / "summary.json").read_text())
    line.update(
        status="ok", reason=None, num_sampled=summary["num_sampled"], num_unique=summary["num_unique"]
    )
    structures = summary["structures"]
    if structures:
        best = structures[0]
        line["best_file"] = f"rows/{row.id}/{best['file']}"
        for key in ("formula", "space_group_symbol", "space_group", "energy_per_atom"):
            if key in best:
                line[f"best_{key}"] = best[key]
        for key, value in best.items():
            if key.startswith(("predicted_", "abs_error_", "in_range_")):
                line[f"best_{key}"] = value
        hits = [s for s in structures if any(s.get(k) for k in s if k.startswith("in_range_"))]
        if any(k.startswith("in_range_") for k in best):
            line["num_in_range"] = len(hits)
    return line


def run_group(group: list[TargetRow], rows_dir: Path, options: Options, progress: bool = False) -> dict:
    """Generate the rows of one group that have no folder yet; returns {row id: one-line reason} of
    its bad rows. Stage 1 runs for every valid row of the group (done or not), so that the pooled
    sampling, and therefore every row's structures, do not depend on which rows were done before."""
    reasons: dict[str, str] = {}
    requests = {}
    for row in group:
        if row.error:
            reasons[row.id] = row.error
            continue
        try:
            builtin = {k: v for k, v in row.targets.items() if k in TARGET_COLUMNS.values()}
            own = {k: v for k, v in row.targets.items() if k not in builtin}
            requests[row.id] = prepare_request(
                row.formula, n=row.n, top_k=row.top_k, options=options, properties=own or None, **builtin
            )
        except GenerationError as error:
            reasons[row.id] = one_line(error)
    by_model: dict[int, list[str]] = {}
    for row_id, request in requests.items():
        by_model.setdefault(id(request.dit), []).append(row_id)
    for ids in by_model.values():  # stage 2: the group's structures pooled per Crystal DiT
        sampled = sample_requests([requests[i] for i in ids], options, progress=progress)
        for row_id, structures in zip(ids, sampled):
            if (rows_dir / row_id / "summary.json").is_file():
                continue
            result = finish_request(requests[row_id], structures, options)
            result.write(rows_dir / row_id, overwrite=True)  # staged, then one rename
    return reasons


class _RayWorker:
    """A Ray actor: loads the models on its first group and keeps them (``generation``'s caches)."""

    def __init__(self, rows_dir: str, options: Options):
        self.rows_dir, self.options = Path(rows_dir), options

    def run(self, group: list[TargetRow]) -> dict:
        return run_group(group, self.rows_dir, self.options)


def _run_on_ray(groups, rows_dir: Path, options: Options, address: str, workers: int | None, bar) -> dict:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise GenerationError("--ray needs Ray: pip install 'unimdm[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=None if address == "local" else address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise GenerationError(f"cannot connect to Ray at {address!r}: {one_line(error)}") from None
    try:
        count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1)(_RayWorker)
        pool = ActorPool([actor.remote(str(rows_dir), options) for _ in range(count)])
        reasons: dict[str, str] = {}
        for group, found in zip(groups, pool.map(lambda worker, group: worker.run.remote(group), groups)):
            reasons.update(found)
            bar.update(len(group))
        return reasons
    finally:
        if started_here:
            ray.shutdown()


def screen(
    targets: str | Path,
    out_dir: str | Path,
    *,
    options: Options | None = None,
    n: int = 8,
    top_k: int = 3,
    resume: bool = False,
    overwrite: bool = False,
    rows_per_batch: int = ROWS_PER_BATCH,
    ray_address: str | None = None,
    ray_workers: int | None = None,
    progress: bool = True,
    log=None,
) -> dict[str, Any]:
    """Run every row of a targets CSV (see the module docstring); returns the across-rows summary.

    ``ray_address``: distribute the groups of rows over a Ray cluster (``"auto"``: the running
    cluster, an address, or ``"local"``: start one on this machine), ``ray_workers`` actors (default:
    one per CPU of the cluster), each loading the models once. The output folder must be on a file
    system every node sees."""
    say = log or (lambda message: None)
    started = time.perf_counter()
    options = (options or Options()).checked()
    own = ()
    if options.dit_checkpoint is not None:  # a Crystal DiT of your own: its properties are target columns
        own = [p for p in load_crystal_dit(options.dit_checkpoint).properties if p not in TARGET_COLUMNS]
    rows = read_targets(targets, n, top_k, own)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise GenerationError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (resume or overwrite):
        raise GenerationError(
            f"output folder {out_dir} exists and is not empty "
            "(--resume to continue it, --overwrite to replace it)"
        )
    if overwrite and not resume and out_dir.is_dir():
        shutil.rmtree(out_dir)
    rows_dir = out_dir / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    for leftover in rows_dir.glob(".*"):  # staging folders of rows a killed run did not finish
        shutil.rmtree(leftover, ignore_errors=True)

    def done(row: TargetRow) -> bool:
        return (rows_dir / row.id / "summary.json").is_file()

    skipped = sum(done(r) for r in rows)
    if skipped:
        say(f"resuming: {skipped} of {len(rows)} rows already written")
    groups = [rows[i : i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]
    reasons = {r.id: r.error for r in rows if r.error}
    # a group is run when it has a valid row left to write
    todo = [g for g in groups if any(not done(r) and not r.error for r in g)]
    bar = tqdm(
        total=sum(len(g) for g in todo), desc="rows", unit="row", disable=not progress, file=sys.stderr
    )
    if ray_address:
        reasons.update(_run_on_ray(todo, rows_dir, options, ray_address, ray_workers, bar))
    else:
        for group in todo:
            reasons.update(run_group(group, rows_dir, options, progress=progress))
            bar.update(len(group))
    bar.close()

    lines = [summary_line(r, rows_dir / r.id if done(r) else None, reasons.get(r.id)) for r in rows]
    summary = {
        "targets_file": str(targets),
        "rows": len(rows),
        "ok": sum(line["status"] == "ok" for line in lines),
        "errors": sum(line["status"] == "error" for line in lines),
        "settings": {"n": n, "top_k": top_k, **dataclasses.asdict(options)},
        "lines": lines,
    }
    _write_csv(out_dir / "summary.csv", lines)
    _write_json(out_dir / "summary.json", summary)
    say(
        f"{summary['ok']} of {len(rows)} rows generated, {summary['errors']} with errors -> {out_dir}/ "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return summary
