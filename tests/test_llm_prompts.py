"""Prompt template, output format and parser of the symmetry predictor (no torch needed)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from llm_torch.atomic_facts import atomic_facts, format_facts
from llm_torch.prompts import (
    INSTRUCTION,
    build_example,
    format_output,
    parse_output,
    prompt_text,
    to_chat,
)
from unimdm_jax.schema import validate_record


@pytest.fixture(scope="module")
def records(fixture_dataset):
    dataset, _ = fixture_dataset
    return [dataset[i].to_record(source="mp_20") for i in range(len(dataset))]


def test_atomic_facts_from_table():
    fe = atomic_facts("Fe")
    assert fe.electronegativity == pytest.approx(1.83)
    assert fe.atomic_radius == pytest.approx(1.40)
    assert {2, 3} <= set(fe.oxidation_states)
    assert format_facts(atomic_facts("He")).endswith("oxidation states n/a")
    with pytest.raises(ValueError):
        atomic_facts("Xx")


@pytest.mark.parametrize("property_name", ["band_gap", "formation_energy"])
def test_round_trip_on_fixture_records(records, property_name):
    for record in records:
        example = build_example(record, property_name=property_name)
        assert set(example) == {"instruction", "input", "output"}
        assert example["instruction"] == INSTRUCTION
        counts = record.composition.counts
        assert (
            "Atoms in the conventional cell: " + " ".join(f"{e}{n}" for e, n in counts.items())
            in example["input"]
        )
        for element in counts:
            assert format_facts(atomic_facts(element)) in example["input"]
        unit = "eV/atom" if property_name == "formation_energy" else "eV"
        assert example["input"].splitlines()[-1].endswith(unit)
        sg, orbits = parse_output(example["output"])
        assert sg == record.space_group.number
        assert Counter(orbits) == Counter((w.element, w.letter) for w in record.wyckoff)
        # the closing JSON object is the record's space group + Wyckoff list
        obj = json.loads(example["output"].splitlines()[-1])
        assert obj["space_group"] == {"number": sg, "symbol": record.space_group.symbol}
        assert Counter((w["element"], w["letter"], w["multiplicity"]) for w in obj["wyckoff"]) == Counter(
            (w.element, w.letter, w.multiplicity) for w in record.wyckoff
        )


def test_output_format_lines():
    text = format_output(
        62, [("O", "d"), ("Li", "a"), ("O", "c"), ("Fe", "c"), ("P", "c"), ("O", "c")], ["Li", "Fe", "P", "O"]
    )
    lines = text.splitlines()
    assert lines[0] == "Space group: 62 (Pnma)"
    assert lines[1] == "Wyckoff positions (label:free parameters): 4a:0 4b:0 4c:2 8d:3"
    assert lines[2:8] == ["Li 4a", "Fe 4c", "P 4c", "O 4c", "O 4c", "O 8d"]  # canonical order
    assert json.loads(lines[8])["wyckoff"][0] == {"element": "Li", "letter": "a", "multiplicity": 4}


def test_reduced_mode_hides_cell_counts(records):
    example = build_example(records[0], composition_mode="reduced")
    assert "free (a multiple of the reduced formula)" in example["input"]
    assert records[0].composition.formula.split()[0] not in example["input"].split("\n")[1]


def test_parse_output_tolerates_junk(records):
    output = build_example(records[3])["output"]
    expected = parse_output(output)
    assert parse_output("Sure! Here you go:\n" + output + "\nHope this helps. }{") == expected
    json_only = "blah " + output.splitlines()[-1] + " trailing"
    assert Counter(parse_output(json_only)[1]) == Counter(expected[1])
    assert parse_output(json_only)[0] == expected[0]
    assert parse_output("nothing useful here") == (None, [])
    assert parse_output("Space group: 999\nNa 4a") == (None, [("Na", "a")])
    assert parse_output(None) == (None, [])


def test_chat_form_and_prompt_text(records):
    example = build_example(records[0])
    messages = to_chat(example)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == example["instruction"] + "\n\n" + example["input"]
    assert messages[2]["content"] == example["output"]
    text = prompt_text(example, style="plain")
    assert text.startswith("### Instruction:\n") and text.endswith("### Response:\n")
    assert example["output"] not in text


def test_build_example_validates_record(records):
    bad = records[0].to_dict()
    bad["wyckoff"] = bad["wyckoff"][:-1]
    with pytest.raises(ValueError):
        build_example(bad)
    validate_record(records[0])


def test_composition_modes_of_the_training_data(records):
    from llm_torch.dataset import examples_from_records

    mixed = list(examples_from_records(records, "band_gap", composition_mode="mixed"))
    both = list(examples_from_records(records, "band_gap", composition_mode="both"))
    assert len(both) == 2 * len(mixed)
    # every crystal once per mode, same answer in both; mixed takes exactly one of the two
    by_id = {}
    for row in both:
        by_id.setdefault(row["meta"]["id"], {})[row["meta"]["composition_mode"]] = row
    assert all(
        set(v) == {"cell", "reduced"} and v["cell"]["output"] == v["reduced"]["output"]
        for v in by_id.values()
    )
    assert all(
        row["input"] == by_id[row["meta"]["id"]][row["meta"]["composition_mode"]]["input"] for row in mixed
    )
    assert {row["meta"]["composition_mode"] for row in mixed} == {"cell", "reduced"}
    with pytest.raises(ValueError, match="composition mode"):
        list(examples_from_records(records, "band_gap", composition_mode="half"))
