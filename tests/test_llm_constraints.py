"""Validity layer: compositions, Wyckoff feasibility, repair and the output grammar (no torch)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from llm_torch.constraints import (
    CompositionError,
    CompositionSpec,
    InfeasibleError,
    OutputGrammar,
    TokenTrie,
    best_assignment,
    check_assignment,
    feasible_assignments,
    feasible_space_groups,
    is_feasible,
    make_record,
    parse_composition,
    repair,
)
from llm_torch.prompts import (
    build_example,
    format_output,
    positions_line,
    space_group_line,
)
from unimdm_jax.schema import validate_record, wyckoff_positions

# ----------------------------------------------------------------------------- independent facts


def test_rock_salt_and_wurtzite():
    assert is_feasible(225, {"Na": 4, "Cl": 4})  # rock salt: Na 4a, Cl 4b
    assert not is_feasible(
        225, {"Na": 1, "Cl": 1}
    )  # a primitive-cell count cannot fill Fm-3m's F-centred cell
    assert not is_feasible(225, {"Na": 2, "Cl": 2})
    assert is_feasible(186, {"Zn": 2, "O": 2})  # wurtzite: Zn 2b, O 2b (2b has a free z)
    assert feasible_assignments(225, {"Na": 4, "Cl": 4}) == [
        (("Na", "a"), ("Cl", "b")),
        (("Na", "b"), ("Cl", "a")),
    ]
    assert (("Zn", "b"), ("O", "b")) in feasible_assignments(186, {"Zn": 2, "O": 2})


def test_fixed_points_are_used_once():
    # Fm-3m has only two 4-fold positions (4a, 4b), both fixed points: three 4-atom species do not fit
    assert not is_feasible(225, {"Na": 4, "Cl": 4, "K": 4})
    assert feasible_assignments(225, {"Na": 4, "Cl": 4, "K": 4}) == []
    # Pm-3m: 1a and 1b are the only 1-fold positions -> X1 Y1 Z1 is impossible, X1 Y1 possible (CsCl)
    assert is_feasible(221, {"Cs": 1, "Cl": 1})
    assert not is_feasible(221, {"Cs": 1, "Cl": 1, "Br": 1})
    # P-1 has eight fixed points 1a-1h and the general position 2i: nine odd counts cannot all be placed
    eight = {e: 1 for e in ["H", "Li", "Be", "B", "C", "N", "O", "F"]}
    assert is_feasible(2, eight)
    assert not is_feasible(2, {**eight, "Na": 1})
    assert is_feasible(2, {**eight, "Na": 2})
    # perovskite SrTiO3 in Pm-3m: Sr 1a, Ti 1b, O 3c
    assert (("Sr", "a"), ("Ti", "b"), ("O", "c")) in feasible_assignments(
        221, {"Sr": 1, "Ti": 1, "O": 3}, limit=None
    )


def test_every_composition_fits_p1_and_feasible_groups():
    spec = parse_composition("Li4Fe4P4O16")
    groups = feasible_space_groups(spec)
    assert (
        1 in groups and 62 in groups and 225 not in groups
    )  # Fm-3m: no 16-fold orbit for a 4-atom species set
    assert feasible_space_groups({"Na": 1, "Cl": 1})[0] == 1


def test_check_assignment():
    assert check_assignment(
        62,
        {"Li": 4, "Fe": 4, "P": 4, "O": 16},
        [("Li", "a"), ("Fe", "c"), ("P", "c"), ("O", "c"), ("O", "c"), ("O", "d")],
    )
    assert not check_assignment(
        62, {"Li": 4, "Fe": 4, "P": 4, "O": 16}, [("Li", "a"), ("Li", "a"), ("P", "c"), ("O", "d")]
    )
    assert not check_assignment(225, {"Na": 4, "Cl": 4}, [("Na", "a"), ("Cl", "a")])  # 4a twice
    assert not check_assignment(225, {"Na": 4, "Cl": 4}, [("Na", "z"), ("Cl", "b")])


# ----------------------------------------------------------------------------- compositions


def test_parse_composition_modes():
    reduced = parse_composition("LiFePO4")
    assert reduced.mode == "reduced" and reduced.counts == (1, 1, 1, 4)
    assert reduced.options[:2] == ((1, 1, 1, 4), (2, 2, 2, 8))
    assert max(sum(o) for o in reduced.options) <= 80
    cell = parse_composition("Li4Fe4P4O16")
    assert cell.mode == "cell" and cell.options == ((4, 4, 4, 16),)
    assert parse_composition("Li4 Fe4 P4 O16") == cell
    assert parse_composition("NaCl", "cell").options == ((1, 1),)
    assert parse_composition("Na4Cl4", "reduced").counts == (1, 1)
    assert parse_composition("Ca(OH)2").count_dict == {"Ca": 1, "O": 2, "H": 2}
    assert parse_composition("OLiO").count_dict == {"O": 2, "Li": 1}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Xx2O", "unknown element 'Xx'"),
        ("", "empty formula"),
        ("   ", "empty formula"),
        ("Li0O", ">= 1"),
        ("Li0.5O", "whole numbers"),
        ("li2O", "unexpected 'l'"),
        ("Na(Cl", "unbalanced"),
        ("H300", "at most 200"),
        ("H999999999999999999O", "too large"),
        ("H150O60", "at most 200"),
        ("2NaCl", "without an element"),
        ("NaCl$", "unexpected '$'"),
    ],
)
def test_parse_composition_errors(text, fragment):
    with pytest.raises(CompositionError) as info:
        parse_composition(text)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_reduced_formula_too_big():
    with pytest.raises(CompositionError):
        parse_composition("H40O41", "reduced")
    assert parse_composition("H81", "reduced").counts == (1,)


# ----------------------------------------------------------------------------- repair


def test_repair_keeps_valid_and_fixes_invalid():
    counts = {"Li": 4, "Fe": 4, "P": 4, "O": 16}
    good = [("Li", "a"), ("Fe", "c"), ("P", "c"), ("O", "c"), ("O", "c"), ("O", "d")]
    result = repair(62, counts, good)
    assert not result.repaired and Counter(result.assignment) == Counter(good)
    broken = [("Li", "a"), ("Li", "a"), ("Fe", "z"), ("Xx", "c"), ("P", "c"), ("O", "d"), ("O", "d")]
    result = repair(62, counts, broken)
    assert result.repaired
    assert check_assignment(62, counts, result.assignment)
    assert ("Li", "a") in result.kept and ("P", "c") in result.kept and Counter(result.kept)[("O", "d")] == 2
    validate_record(result.to_record([("band_gap", 3.7)]))
    with pytest.raises(InfeasibleError):
        repair(225, {"Na": 1, "Cl": 1}, [])


def test_solver_assignment_rock_salt():
    assert best_assignment(225, {"Na": 4, "Cl": 4}).assignment == (("Na", "a"), ("Cl", "b"))
    reduced = best_assignment(221, parse_composition("SrTiO3"))
    assert Counter(reduced.assignment) == Counter([("Sr", "a"), ("Ti", "b"), ("O", "c")])


# ----------------------------------------------------------------------------- property tests

ELEMENTS = ["Li", "Na", "O", "Fe", "Si", "Cl"]


@st.composite
def random_records(draw):
    sg = draw(st.integers(1, 230))
    positions = [p for p in wyckoff_positions(sg) if p.multiplicity <= 48]
    n_elements = draw(st.integers(1, 4))
    elements = ELEMENTS[:n_elements]
    used, orbits, total = set(), [], 0
    for element in elements:
        for _ in range(draw(st.integers(1, 3))):
            choices = [
                p
                for p in positions
                if not (p.dof == 0 and p.letter in used) and total + p.multiplicity <= 200
            ]
            if not choices:
                break
            p = draw(st.sampled_from(choices))
            if p.dof == 0:
                used.add(p.letter)
            orbits.append((element, p.letter))
            total += p.multiplicity
    placed = {e for e, _ in orbits}
    orbits = [o for o in orbits if o[0] in placed]
    counts: dict[str, int] = {}
    mult = {p.letter: p.multiplicity for p in positions}
    for e, letter in orbits:
        counts[e] = counts.get(e, 0) + mult[letter]
    proposal = draw(
        st.lists(
            st.tuples(st.sampled_from(elements), st.sampled_from([p.letter for p in positions])), max_size=6
        )
    )
    return sg, counts, orbits, proposal


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_records())
def test_random_valid_records_are_feasible_and_repairs_validate(case):
    sg, counts, orbits, proposal = case
    if not orbits:
        return
    record = make_record(sg, counts, orbits, [("band_gap", 1.0)])  # a valid record from the tables
    assert is_feasible(sg, counts)
    assert check_assignment(sg, counts, orbits)
    assert feasible_assignments(sg, counts, limit=1)
    own = repair(sg, counts, orbits)
    assert not own.repaired and Counter(own.assignment) == Counter(orbits)
    fixed = repair(sg, counts, proposal)
    validate_record(fixed.to_record([("band_gap", 1.0)]))
    assert fixed.counts == counts
    # the grammar accepts the record's own answer
    grammar = OutputGrammar(CompositionSpec.from_counts(counts), [sg])
    assert grammar.accepts(format_output(sg, orbits, list(counts)))
    del record


# ----------------------------------------------------------------------------- grammar


@pytest.fixture(scope="module")
def records(fixture_dataset):
    dataset, _ = fixture_dataset
    return [dataset[i].to_record() for i in range(0, len(dataset), 5)]


def test_grammar_accepts_true_answers(records):
    for record in records:
        counts = dict(record.composition.counts)
        output = build_example(record)["output"]
        assert OutputGrammar(CompositionSpec.from_counts(counts)).accepts(output)
        reduced = OutputGrammar(CompositionSpec.from_counts(counts, "reduced"), [record.space_group.number])
        assert reduced.accepts(output)


def test_grammar_rejects_invalid_answers():
    grammar = OutputGrammar({"Na": 4, "Cl": 4})
    assert 225 in grammar.groups and grammar.accepts(format_output(225, [("Na", "a"), ("Cl", "b")]))
    assert not grammar.accepts(format_output(225, [("Na", "a"), ("Cl", "a")]))  # 4a twice
    assert not grammar.accepts(
        format_output(225, [("Cl", "b"), ("Na", "a")]).replace("Na 4a\nCl 4b", "Cl 4b\nNa 4a")
    )
    assert grammar.consume("Space group: 2") is not None  # prefix of 2, 20-29, 200-230
    small = OutputGrammar({"Na": 1, "Cl": 1})
    assert small.consume(space_group_line(225)) is None  # infeasible group
    assert small.consume(space_group_line(221) + "\n" + positions_line(221) + "\nNa 1a\nCl 1a") is None
    assert small.accepts(format_output(221, [("Na", "a"), ("Cl", "b")]))


def test_allowed_tokens_on_a_character_vocabulary():
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    texts = {i + 2: ch for i, ch in enumerate(chars)}
    texts[200] = "Space group: 22"
    texts[201] = "Na 4"
    trie = TokenTrie(texts, eos_token_id=1)
    grammar = OutputGrammar({"Na": 4, "Cl": 4})
    state = grammar.consume("")
    allowed = {texts[i] for i in grammar.allowed_tokens(*state, trie)}
    assert allowed == {"S", "Space group: 22"}
    state = grammar.consume(space_group_line(225) + "\n" + positions_line(225) + "\n")
    allowed = {texts[i] for i in grammar.allowed_tokens(*state, trie)}
    assert allowed == {"N", "Na 4"}  # Na first; Fm-3m needs Na on 4a or 4b
    state = grammar.consume(space_group_line(225) + "\n" + positions_line(225) + "\nNa 4")
    assert {texts[i] for i in grammar.allowed_tokens(*state, trie)} == {"a", "b"}
    done = format_output(225, [("Na", "a"), ("Cl", "b")])
    assert grammar.allowed_tokens(*grammar.consume(done), trie) == [1]  # only EOS
