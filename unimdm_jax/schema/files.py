"""Reading and writing files of symmetry records: one JSON record, a JSON list, or JSONL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import SchemaError, json_type_name
from .record import SymmetryRecord, parse_json, validate_record

JSONL_SUFFIXES = (".jsonl", ".ndjson")

PathLike = str | os.PathLike


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in JSONL_SUFFIXES


def _read_text(path: Path) -> str:
    data = path.read_bytes()  # OSError (missing file, directory, permissions) propagates
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SchemaError(f"not UTF-8 text (invalid byte at offset {error.start})") from None


def _parse_jsonl(text: str) -> list[SymmetryRecord]:
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(validate_record(parse_json(line, single_line=True)))
        except SchemaError as error:
            raise SchemaError(f"line {line_number}: {error}") from None
    return records


def parse_records(text: str, *, jsonl: bool | None = None) -> list[SymmetryRecord]:
    """Records from text: one JSON record, a JSON list of records, or JSONL.

    ``jsonl=None`` guesses: the text is JSONL when it is not a single JSON document.
    """
    if jsonl:
        return _parse_jsonl(text)
    try:
        data = parse_json(text)
    except SchemaError:
        lines = [line for line in text.splitlines() if line.strip()]
        if jsonl is None and len(lines) > 1 and lines[0].lstrip().startswith("{"):
            return _parse_jsonl(text)
        raise
    if isinstance(data, list):
        records = []
        for index, item in enumerate(data):
            try:
                records.append(validate_record(item))
            except SchemaError as error:
                raise error.within(f"[{index}]") from None
        return records
    if isinstance(data, dict):
        return [validate_record(data)]
    raise SchemaError(f"expected a record object or a list of records, got {json_type_name(data)}")


def load_records(path: PathLike) -> list[SymmetryRecord]:
    """All records of a ``.json`` (one record or a list) or ``.jsonl`` file, validated.

    Raises ``SchemaError`` for malformed content (with the line number for JSONL) and
    ``OSError`` when the file cannot be read.
    """
    path = Path(path)
    return parse_records(_read_text(path), jsonl=True if _is_jsonl(path) else None)


def load_record(path: PathLike) -> SymmetryRecord:
    """The single record of a file; ``SchemaError`` when it holds none or several."""
    records = load_records(path)
    if len(records) != 1:
        raise SchemaError(f"expected exactly one record, found {len(records)}")
    return records[0]


def dump_records(records: Iterable[SymmetryRecord | Mapping[str, Any]], path: PathLike) -> int:
    """Validate and write records: JSONL for ``.jsonl``/``.ndjson`` paths, else a JSON list.

    The file is replaced atomically; returns the number of records written.
    """
    path = Path(path)
    checked = []
    for index, record in enumerate(records):
        try:
            checked.append(validate_record(record))
        except SchemaError as error:
            raise error.within(f"[{index}]") from None
    if _is_jsonl(path):
        text = "".join(record.to_json() + "\n" for record in checked)
    else:
        text = json.dumps([record.to_dict() for record in checked], indent=2, allow_nan=False) + "\n"
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return len(checked)
