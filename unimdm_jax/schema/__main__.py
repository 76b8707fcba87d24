"""Command line: ``python -m unimdm_jax.schema {validate,show-schema,wyckoff}``.

    validate FILE [FILE ...]   check record files (.json: one record or a list; .jsonl)
    show-schema                print the JSON Schema document
    wyckoff GROUP              print the Wyckoff table of a space group (number or symbol)

Problems are reported as one line per file on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from . import json_schema
from .errors import SchemaError
from .files import load_records
from .tables import space_group_info, space_group_number


def _validate(paths: Sequence[str]) -> int:
    status = 0
    for path in paths:
        try:
            records = load_records(path)
        except SchemaError as error:
            print(f"{path}: {error}", file=sys.stderr)
            status = 1
        except OSError as error:
            print(f"{path}: cannot read: {error.strerror or error}", file=sys.stderr)
            status = 1
        except Exception as error:  # noqa: BLE001 - the CLI promises one line, never a traceback
            print(
                f"{path}: internal error: {type(error).__name__}: {error}".replace("\n", " "), file=sys.stderr
            )
            status = 1
        else:
            print(f"{path}: {len(records)} valid record(s)")
    return status


def _show_schema() -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def _wyckoff(group: str) -> int:
    number = int(group) if group.strip().isdigit() else space_group_number(group)
    if number is None or not 1 <= number <= 230:
        print(
            f"{group}: not a space group (give a number 1-230 or a Hermann-Mauguin symbol)", file=sys.stderr
        )
        return 1
    info = space_group_info(number)
    setting = f", setting {info.setting}" if info.setting else ""
    print(
        f"space group {info.number} {info.symbol}: {info.crystal_system}, point group {info.point_group}, "
        f"centring {info.centring} (factor {info.centring_factor}){setting}"
    )
    print(f"{'label':>6}  {'dof':>3}  {'site symm.':<10}  representative")
    for position in info.wyckoff:
        print(
            f"{position.label:>6}  {position.dof:>3}  {position.site_symmetry:<10}  {position.representative}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unimdm_jax.schema", description="Uni-MDM JSON symmetry schema tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate record files (.json or .jsonl)")
    validate.add_argument("files", nargs="+", metavar="FILE")
    commands.add_parser("show-schema", help="print the JSON Schema of a record")
    wyckoff = commands.add_parser("wyckoff", help="print the Wyckoff positions of a space group")
    wyckoff.add_argument("group", metavar="GROUP", help="space-group number (1-230) or symbol")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 invalid input, 2 usage error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        if args.command == "validate":
            return _validate(args.files)
        if args.command == "show-schema":
            return _show_schema()
        return _wyckoff(args.group)
    except BrokenPipeError:  # e.g. `... show-schema | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
