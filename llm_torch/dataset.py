"""Instruction data for the symmetry predictor, built from the MP-20 training policy's splits.

    python -m llm_torch.dataset --split train --property band_gap --out data/llm_bg_train.jsonl
    python -m llm_torch.dataset --split holdout --property formation_energy --format chat \\
        --out fm_holdout.jsonl
    python -m llm_torch.dataset --csv tests/fixtures/mp20_fixture.csv.gz --property band_gap \\
        --out fixture.jsonl

Splits (``unimdm_jax.data.preprocess.load_policy_split``, symmetrized and cached; set
``UNIMDM_CACHE``): ``train`` (train_partial + val rows 1,001-9,047; 28,218 crystals),
``holdout`` (val rows 1-1,000, model selection), ``test`` / ``test_1k`` (reporting only). One line
per crystal that has the property: ``{"instruction", "input", "output", "meta"}`` (alpaca) or
``{"messages", "meta"}`` (chat). ``--composition-mode mixed`` (default) writes cell counts for
about half of the crystals and only the reduced formula for the others (chosen by a hash of the
material id, so it is stable), which teaches the model both ways of being asked; ``both`` writes
every crystal twice, once in each mode (twice the examples per epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from unimdm_jax.data.io import read_rows
from unimdm_jax.data.preprocess import (
    DEFAULT_SYMPREC,
    PROPERTY_NAMES,
    cache_key,
    check_property_columns,
    default_cache_dir,
    load_policy_split,
    preprocess_file,
    symmetrize_rows,
)
from unimdm_jax.errors import one_line

from .prompts import build_example, canonical_property, to_chat

__all__ = [
    "SPLITS",
    "as_alpaca",
    "build_examples",
    "COMPOSITION_MODES",
    "composition_modes_for",
    "csv_records",
    "examples_from_records",
    "main",
    "read_jsonl",
    "split_records",
    "write_jsonl",
]

SPLITS = ("train", "holdout", "test", "test_1k")


COMPOSITION_MODES = ("mixed", "both", "cell", "reduced")


def composition_modes_for(material_id: str, mode: str) -> tuple[str, ...]:
    """The prompt modes (``cell`` / ``reduced``) one crystal is written in.

    ``mixed``: one, picked by CRC32 of the id (even: cell); ``both``: both; ``cell`` / ``reduced``: that one.
    """
    if mode in ("cell", "reduced"):
        return (mode,)
    if mode == "both":
        return ("cell", "reduced")
    if mode != "mixed":
        raise ValueError(f"composition mode must be one of {', '.join(COMPOSITION_MODES)}, got {mode!r}")
    return ("cell",) if zlib.crc32(str(material_id).encode()) % 2 == 0 else ("reduced",)


def examples_from_records(
    records: Iterable[Any], property_name: str, *, composition_mode: str = "mixed", fmt: str = "alpaca"
) -> Iterator[dict]:
    """One example per record that has ``property_name`` (others are skipped); two with
    ``composition_mode="both"``."""
    name = canonical_property(property_name)
    if fmt not in ("alpaca", "chat"):
        raise ValueError(f"format must be alpaca or chat, got {fmt!r}")
    for record in records:
        value = record.property(name)
        if value is None:
            continue
        material_id = record.provenance.id or ""
        for mode in composition_modes_for(material_id, composition_mode):
            example = build_example(record, property_name=name, composition_mode=mode)
            meta = {
                "id": material_id,
                "property": name,
                "value": value,
                "composition_mode": mode,
                "counts": dict(record.composition.counts),
                "space_group": record.space_group.number,
            }
            if fmt == "chat":
                yield {"messages": to_chat(example), "meta": meta}
            else:
                yield {**example, "meta": meta}


def split_records(split: str, root: str | None = None, limit: int | None = None) -> list:
    """Schema records (true properties) of a policy split, from the preprocessing cache."""

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    dataset, _ = load_policy_split("test-1k" if split == "test_1k" else split, root)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return [dataset[i].to_record(source="mp_20") for i in range(n)]


def csv_records(
    path: str | Path,
    limit: int | None = None,
    workers: int = 1,
    progress: bool = False,
    offset: int = 0,
    properties: tuple[str, ...] | None = None,
) -> list:
    """Schema records of the rows of a CDVAE CSV: ``limit`` rows (all when None) after the first
    ``offset``, counting the rows that symmetrize (every MP-20 row does). ``properties``: the
    numeric columns the records carry (default MP-20's; a user's own must be registered).

    Uses the preprocessing cache when it holds the whole file. Without it, the first rows
    (no offset, a limit) are symmetrized alone; any other call symmetrizes and caches the whole
    file once, so that the shards of a sharded evaluation (``--offset N --limit M``) do not each
    symmetrize the N rows before them again (~0.05 s a row: 7.5 min of one core for MP-20 test, measured).
    """

    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    path = Path(path)
    names = PROPERTY_NAMES if properties is None else tuple(properties)
    cache = default_cache_dir() / f"{path.name}.{cache_key(path, DEFAULT_SYMPREC, names)}.npz"
    if cache.exists() or limit is None or offset > 0:
        dataset, _ = preprocess_file(path, workers=workers, progress=progress, properties=properties)
    else:
        rows = read_rows([path], limit=limit)
        if properties is not None:
            check_property_columns(path, names, rows)
        dataset, _ = symmetrize_rows(rows, workers=workers, progress=progress, properties=names)
    stop = len(dataset) if limit is None else min(offset + limit, len(dataset))
    return [dataset[i].to_record(source=path.name.split(".")[0]) for i in range(offset, stop)]


def build_examples(
    *,
    split: str | None = None,
    csv: str | None = None,
    property_name: str = "band_gap",
    composition_mode: str = "mixed",
    fmt: str = "alpaca",
    limit: int | None = None,
    root: str | None = None,
) -> list[dict]:
    """Examples of a policy split or of a CSV file (exactly one of ``split`` / ``csv``)."""
    if (split is None) == (csv is None):
        raise ValueError("give exactly one of split or csv")
    if split:
        records = split_records(split, root, limit)
    else:  # a user's own property is read from its column of the file
        name = canonical_property(property_name)
        records = csv_records(csv, limit, properties=None if name in PROPERTY_NAMES else (name,))
    return list(examples_from_records(records, property_name, composition_mode=composition_mode, fmt=fmt))


def write_jsonl(rows: Iterable[dict], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def as_alpaca(row: dict) -> dict:
    """An alpaca-format example from either format (chat rows are converted back)."""
    if "instruction" in row:
        return row
    messages = row["messages"]
    user = next(m["content"] for m in messages if m["role"] == "user")
    instruction, _, inp = user.partition("\n\n")
    output = next((m["content"] for m in messages if m["role"] == "assistant"), None)
    return {"instruction": instruction, "input": inp, "output": output, "meta": row.get("meta", {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_torch.dataset", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", choices=SPLITS, help="MP-20 policy split (default: train)")
    source.add_argument("--csv", help="a CDVAE-format CSV instead of a policy split")
    parser.add_argument("--property", default="band_gap", help="band_gap or formation_energy")
    parser.add_argument("--out", required=True, help="output JSONL file")
    parser.add_argument("--format", choices=("alpaca", "chat"), default="alpaca")
    parser.add_argument("--composition-mode", choices=COMPOSITION_MODES, default="mixed")
    parser.add_argument("--limit", type=int, default=None, help="first N crystals only")
    parser.add_argument(
        "--data-root", default=None, help="data root (default: $UNIMDM_DATA or ../shared/data)"
    )
    args = parser.parse_args(argv)
    try:
        rows = build_examples(
            split=None if args.csv else (args.split or "train"),
            csv=args.csv,
            property_name=args.property,
            composition_mode=args.composition_mode,
            fmt=args.format,
            limit=args.limit,
            root=args.data_root,
        )
    except (ValueError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    n = write_jsonl(rows, args.out)
    print(f"wrote {n} examples to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
