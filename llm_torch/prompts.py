"""The one prompt template of the symmetry predictor (English), its output format and parser.

An example is ``{"instruction", "input", "output"}`` (Alpaca style); :func:`to_chat` gives the
same content as chat messages. The **input** names the composition, facts about each element
(:mod:`llm_torch.atomic_facts`) and one target property::

    Reduced formula: LiFePO4
    Atoms in the conventional cell: Li4 Fe4 P4 O16
    Elements:
    Li: electronegativity 0.98, atomic radius 1.45 A, oxidation states +1
    ...
    Target band gap: 3.70 eV

In *reduced* composition mode the cell line reads
``Atoms in the conventional cell: free (a multiple of the reduced formula)`` and the model
chooses the number of formula units. The **output** is a chain of thought in a fixed format,
one item per line::

    Space group: 62 (Pnma)
    Wyckoff positions (label:free parameters): 4a:0 4b:0 4c:2 8d:3
    Li 4a
    Fe 4c
    P 4c
    O 4c
    O 4c
    O 8d
    {"space_group":{"number":62,"symbol":"Pnma"},"wyckoff":[{"element":"Li","letter":"a","multiplicity":4},...]}

Orbit lines are in canonical order: elements in formula order, then Wyckoff letters in the
table's (ITA) order. The JSON object is fully determined by the lines above it. Everything here
is pure Python (no torch), so the constrained decoder (:mod:`llm_torch.constraints`) shares
these formatters with the data builder.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from unimdm_jax.schema import (
    KNOWN_PROPERTY_UNITS,
    canonical_property,
    space_group_symbol,
    validate_record,
    wyckoff_positions,
)

from .atomic_facts import AtomicFacts, atomic_facts, format_facts

__all__ = [
    "INSTRUCTION",
    "PROMPT_PROPERTIES",
    "prompt_property",
    "SYSTEM_PROMPT",
    "build_example",
    "build_input",
    "build_prompt",
    "canonical_property",
    "cell_formula",
    "format_output",
    "json_line",
    "orbit_line",
    "parse_output",
    "positions_line",
    "prompt_text",
    "reduced_formula",
    "sort_assignment",
    "space_group_line",
    "to_chat",
]

#: How the prompt states each property (schema name -> label, unit, decimal digits); the
#: names, units and aliases are the schema's (``unimdm_jax.schema.properties``).
PROMPT_PROPERTIES: dict[str, tuple[str, str, int]] = {
    "band_gap": ("band gap", KNOWN_PROPERTY_UNITS["band_gap"], 2),
    "formation_energy_per_atom": ("formation energy", KNOWN_PROPERTY_UNITS["formation_energy_per_atom"], 3),
}

INSTRUCTION = (
    "Predict the space group and the Wyckoff positions of a stable crystal with the given "
    "composition and target property. Write the space group, the list of its Wyckoff positions "
    "(label:free parameters), one line per occupied orbit (element and Wyckoff label), then a "
    "JSON object with the space group and the Wyckoff assignment."
)
SYSTEM_PROMPT = "You are a crystallographer who predicts crystal symmetry from composition and properties."

SG_PREFIX = "Space group: "
POSITIONS_PREFIX = "Wyckoff positions (label:free parameters): "
CELL_LINE = "Atoms in the conventional cell: "
FREE_CELL = "free (a multiple of the reduced formula)"


# ----------------------------------------------------------------------------- output lines


def space_group_line(sg: int) -> str:
    """``Space group: 62 (Pnma)``."""
    return f"{SG_PREFIX}{sg} ({space_group_symbol(sg)})"


def positions_line(sg: int) -> str:
    """The group's candidate Wyckoff positions with their free parameters, ``... 4a:0 4b:0 4c:2 8d:3``."""
    return POSITIONS_PREFIX + " ".join(f"{p.label}:{p.dof}" for p in wyckoff_positions(sg))


def _position(sg: int, letter: str):
    for p in wyckoff_positions(sg):
        if p.letter == letter:
            return p
    raise ValueError(f"space group {sg} has no Wyckoff position {letter!r}")


def orbit_line(element: str, letter: str, sg: int) -> str:
    """``O 8d``: element, then the Wyckoff label (multiplicity + letter)."""
    return f"{element} {_position(sg, letter).multiplicity}{letter}"


def json_line(sg: int, assignment: Sequence[tuple[str, str]]) -> str:
    """The closing JSON object: the record's ``space_group`` and ``wyckoff`` (compact)."""
    wyckoff = [
        {"element": e, "letter": letter, "multiplicity": _position(sg, letter).multiplicity}
        for e, letter in assignment
    ]
    obj = {"space_group": {"number": sg, "symbol": space_group_symbol(sg)}, "wyckoff": wyckoff}
    return json.dumps(obj, separators=(",", ":"))


def sort_assignment(
    sg: int, assignment: Sequence[tuple[str, str]], elements: Sequence[str]
) -> list[tuple[str, str]]:
    """Canonical order: elements in ``elements`` order, then Wyckoff letters in table order."""
    letter_index = {p.letter: i for i, p in enumerate(wyckoff_positions(sg))}
    element_index = {e: i for i, e in enumerate(elements)}
    return sorted(
        assignment, key=lambda o: (element_index.get(o[0], len(element_index)), letter_index.get(o[1], 99))
    )


def format_output(
    sg: int, assignment: Sequence[tuple[str, str]], elements: Sequence[str] | None = None
) -> str:
    """The full output text (no trailing newline). ``assignment``: ``(element, letter)`` pairs."""
    if elements is None:
        elements = list(dict.fromkeys(e for e, _ in assignment))
    ordered = sort_assignment(sg, assignment, elements)
    lines = [space_group_line(sg), positions_line(sg)]
    lines += [orbit_line(e, letter, sg) for e, letter in ordered]
    lines.append(json_line(sg, ordered))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- input


def cell_formula(counts: Mapping[str, int]) -> str:
    """``Li4 Fe4 P4 O16`` (explicit counts, formula order)."""
    return " ".join(f"{e}{n}" for e, n in counts.items())


def reduced_formula(counts: Mapping[str, int]) -> str:
    """``LiFePO4`` (divided by the gcd, 1s omitted, formula order)."""
    divisor = math.gcd(*counts.values()) or 1
    return "".join(e if n // divisor == 1 else f"{e}{n // divisor}" for e, n in counts.items())


def prompt_property(property_name: str) -> tuple[str, str, int]:
    """(label, unit, decimal digits) the prompt states a property with; a user's own property
    (registered with ``schema.register_property``) reads as its name with spaces, 3 digits."""
    name = canonical_property(property_name)
    if name in PROMPT_PROPERTIES:
        return PROMPT_PROPERTIES[name]
    return name.replace("_", " "), KNOWN_PROPERTY_UNITS[name], 3


def _property_line(property_name: str, value: float) -> str:
    label, unit, digits = prompt_property(property_name)
    return f"Target {label}: {value:.{digits}f} {unit}"


def build_input(
    counts: Mapping[str, int],
    property_name: str,
    value: float,
    *,
    composition_mode: str = "cell",
    atomic_facts_table: Mapping[str, AtomicFacts] | None = None,
) -> str:
    """The ``input`` text. ``counts`` are conventional-cell counts (``cell`` mode) or any multiple
    of the reduced formula (``reduced`` mode: only the ratio is shown)."""
    if composition_mode not in ("cell", "reduced"):
        raise ValueError(f"composition_mode must be 'cell' or 'reduced', got {composition_mode!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"target {property_name} must be a finite number, got {value}")
    lines = [f"Reduced formula: {reduced_formula(counts)}"]
    lines.append(CELL_LINE + (cell_formula(counts) if composition_mode == "cell" else FREE_CELL))
    lines.append("Elements:")
    for element in counts:
        facts = atomic_facts_table[element] if atomic_facts_table is not None else atomic_facts(element)
        lines.append(format_facts(facts))
    lines.append(_property_line(property_name, float(value)))
    return "\n".join(lines)


def build_prompt(
    counts: Mapping[str, int],
    property_name: str,
    value: float,
    *,
    composition_mode: str = "cell",
    atomic_facts_table: Mapping[str, AtomicFacts] | None = None,
) -> dict[str, str]:
    """``{"instruction", "input"}`` for inference."""
    return {
        "instruction": INSTRUCTION,
        "input": build_input(
            counts,
            property_name,
            value,
            composition_mode=composition_mode,
            atomic_facts_table=atomic_facts_table,
        ),
    }


def build_example(
    record: Any,
    atomic_facts_table: Mapping[str, AtomicFacts] | None = None,
    *,
    property_name: str = "band_gap",
    composition_mode: str = "cell",
) -> dict[str, str]:
    """``{"instruction", "input", "output"}`` of a schema record (``SymmetryRecord`` or dict).

    The target is the record's own value of ``property_name``; ValueError if it has none.
    """

    record = validate_record(record)
    name = canonical_property(property_name)
    value = record.property(name)
    if value is None or not math.isfinite(value):
        raise ValueError(f"record {record.provenance.id or ''} has no {name}")
    counts = dict(record.composition.counts)
    example = build_prompt(
        counts, name, value, composition_mode=composition_mode, atomic_facts_table=atomic_facts_table
    )
    assignment = [(w.element, w.letter) for w in record.wyckoff]
    example["output"] = format_output(record.space_group.number, assignment, list(counts))
    return example


def to_chat(example: Mapping[str, str], *, system: str | None = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Chat messages (system?, user = instruction + input, assistant = output if present)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": f"{example['instruction']}\n\n{example['input']}"})
    if example.get("output") is not None:
        messages.append({"role": "assistant", "content": example["output"]})
    return messages


PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


def prompt_text(example: Mapping[str, str], tokenizer: Any = None, *, style: str = "auto") -> str:
    """The text the model sees before its answer.

    ``style="plain"`` is the Alpaca template (used by the from-scratch model);
    ``"chat"`` applies ``tokenizer.apply_chat_template`` (LoRA on a chat model); ``"auto"``
    picks chat when the tokenizer has a chat template.
    """
    if style == "auto":
        style = "chat" if tokenizer is not None and getattr(tokenizer, "chat_template", None) else "plain"
    if style == "plain":
        return PLAIN_TEMPLATE.format(instruction=example["instruction"], input=example["input"])
    if style != "chat":
        raise ValueError(f"unknown prompt style {style!r}")
    messages = to_chat({"instruction": example["instruction"], "input": example["input"]})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ----------------------------------------------------------------------------- parsing

_SG_RE = re.compile(r"Space\s*group\s*:?\s*(\d{1,3})", re.IGNORECASE)
_ORBIT_RE = re.compile(r"^\s*([A-Z][a-z]?)\s+(\d+)\s*([A-Za-z])\s*$")


def _json_objects(text: str):
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except (json.JSONDecodeError, RecursionError, ValueError):
            continue
        if isinstance(obj, dict):
            yield obj


def parse_output(text: str) -> tuple[int | None, list[tuple[str, str]]]:
    """``(space-group number or None, [(element, letter), ...])`` from model output.

    Tolerant: the space group comes from the first ``Space group: N`` line, the orbits from
    the lines ``Element <multiplicity><letter>``; when either is missing, from the first JSON
    object with ``space_group`` / ``wyckoff``. Other text is ignored. Nothing is validated
    (numbers outside 1-230 give None).
    """
    if not isinstance(text, str):
        return None, []
    sg: int | None = None
    match = _SG_RE.search(text)
    if match:
        sg = int(match.group(1))
    orbits = []
    for line in text.splitlines():
        m = _ORBIT_RE.match(line)
        if m:
            orbits.append((m.group(1), m.group(3)))
    if sg is None or not orbits:
        for obj in _json_objects(text):
            group = obj.get("space_group")
            number = group.get("number") if isinstance(group, dict) else group
            wyckoff = obj.get("wyckoff")
            if sg is None and isinstance(number, int) and not isinstance(number, bool):
                sg = number
            if not orbits and isinstance(wyckoff, list):
                for w in wyckoff:
                    if (
                        isinstance(w, dict)
                        and isinstance(w.get("element"), str)
                        and isinstance(w.get("letter"), str)
                    ):
                        orbits.append((w["element"], w["letter"]))
            if sg is not None and orbits:
                break
    if sg is not None and not 1 <= sg <= 230:
        sg = None
    return sg, orbits
