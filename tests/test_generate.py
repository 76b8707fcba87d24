"""End-to-end generation (``unimdm_jax.generation`` / ``python -m unimdm_jax.sample``) with the
embedded Crystal DiT, checked against pymatgen's own symmetry analysis, plus bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
pytest.importorskip("jax")  # unimdm_jax.generation imports JAX

from unimdm_jax import schema  # noqa: E402
from unimdm_jax.generation import (  # noqa: E402
    GenerationError,
    crystal_from_record,
    generate,
    merge_duplicates,
    read_symmetry,
)

REPO = Path(__file__).resolve().parents[1]


def record(sg: int, assignment, band_gap: float | None = 2.0) -> dict:
    table = {p.letter: p.multiplicity for p in schema.wyckoff_positions(sg)}
    counts: dict[str, int] = {}
    for element, letter in assignment:
        counts[element] = counts.get(element, 0) + table[letter]
    data = {
        "schema_version": schema.SCHEMA_VERSION,
        "composition": counts,
        "space_group": {"number": sg, "symbol": schema.space_group_symbol(sg)},
        "wyckoff": [
            {"element": e, "letter": letter, "multiplicity": table[letter]} for e, letter in assignment
        ],
        "properties": [] if band_gap is None else [{"name": "band_gap", "value": band_gap, "unit": "eV"}],
        "provenance": {"source": "user"},
    }
    return data


ROCK_SALT = record(225, [("Na", "a"), ("Cl", "b")], band_gap=5.0)  # Fm-3m, no free parameter
RUTILE = record(136, [("Ti", "a"), ("O", "f")], band_gap=3.0)  # P4_2/mnm, O at (x, x, 0)


def run_sample(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "unimdm_jax.sample", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def test_crystal_from_record_matches_pyxtal_orbits():
    from pyxtal.symmetry import Group

    crystal = crystal_from_record(schema.validate_record(RUTILE))
    assert crystal.num_atoms == 6 and sorted(crystal.atomic_numbers.tolist()) == [8, 8, 8, 8, 22, 22]
    # every atom's operation maps its anchor to its own position, and the operations of the
    # O orbit are pyxtal's operations of 4f
    wp = Group(136).get_wyckoff_position("4f")
    o_ops = crystal.wyckoff_ops[crystal.atomic_numbers == 8]
    assert np.allclose(o_ops, np.stack([op.affine_matrix for op in wp.ops]), atol=1e-6)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    symmetry = folder / "records.jsonl"
    symmetry.write_text(json.dumps(ROCK_SALT) + "\n" + json.dumps(RUTILE) + "\n")
    out = folder / "out"
    result = run_sample(
        "--symmetry", str(symmetry), "-n", "4", "--out", str(out), "--seed", "1", "--no-dedup"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_sample_writes_cifs_and_summaries(generated):
    from pymatgen.core import Structure

    summary = json.loads((generated / "summary.json").read_text())
    rows = list(csv.DictReader(open(generated / "summary.csv")))
    cifs = sorted(generated.glob("*.cif"))
    assert summary["num_sampled"] == 4 and len(rows) == len(cifs) == len(summary["structures"]) == 4
    assert [len(schema.load_records(generated / "symmetry.jsonl"))] == [2]
    for row in rows:
        structure = Structure.from_file(str(generated / row["file"]))
        assert structure.composition.reduced_formula == row["formula"]
        assert float(row["target_band_gap"]) in (5.0, 3.0)


def test_generated_structures_have_the_requested_space_group(generated):
    """pymatgen's symmetry analysis (independent of the sampler) finds the record's group."""
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    rows = json.loads((generated / "summary.json").read_text())["structures"]
    for row in rows:
        structure = Structure.from_file(str(generated / row["file"]))
        assert SpacegroupAnalyzer(structure, symprec=0.01).get_space_group_number() == row["space_group"]
        assert structure.composition.reduced_formula in ("NaCl", "TiO2")
        assert 3.0 < structure.volume / len(structure) < 60.0  # a physical density, not a collapsed cell


def test_oracle_guided_sampling_keeps_the_symmetry_and_a_physical_cell(tmp_path):
    """Classifier guidance with the packaged oracle at a strong scale, through the CLI: the
    safeguards are on by default and the structures keep the record's group (pymatgen)
    and an MP-20-like density."""
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    symmetry = tmp_path / "rutile.json"
    symmetry.write_text(json.dumps(RUTILE))
    out = tmp_path / "out"
    result = run_sample(
        "--symmetry",
        str(symmetry),
        "-n",
        "2",
        "--out",
        str(out),
        "--seed",
        "2",
        "--no-dedup",
        "--band-gap",
        "6.0",
        "--oracle-guidance",
        "10",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["oracle_guidance"] == 10.0 and summary["settings"]["oracle_safeguards"] is True
    for row in summary["structures"]:
        structure = Structure.from_file(str(out / row["file"]))
        assert SpacegroupAnalyzer(structure, symprec=0.01).get_space_group_number() == 136
        assert 3.0 < structure.volume / len(structure) < 60.0


def test_merge_duplicates_uses_structure_matching():
    from pymatgen.core import Lattice, Structure

    salt = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    strained = Structure(Lattice.cubic(5.7), ["Na", "Cl"], [[0.01, 0, 0], [0.5, 0.5, 0.5]])
    caesium_chloride = Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    kept = merge_duplicates([salt, strained, caesium_chloride])
    assert kept == [(0, 2), (2, 1)]


def test_plausibility_flags_inflated_and_overlapping_cells():
    from pymatgen.core import Lattice, Structure

    from unimdm_jax.metrics import is_plausible

    def salt(a, shift=0.0):
        return Structure.from_spacegroup(
            225, Lattice.cubic(a), ["Na", "Cl"], [[shift, 0, 0], [0.5, 0.5, 0.5]]
        )

    assert is_plausible(salt(5.64))  # 22.4 A^3 per atom
    assert not is_plausible(salt(15.0))  # 422 A^3 per atom: an inflated cell
    assert not is_plausible(
        Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    )  # 0.25 A apart
    assert not is_plausible(
        Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.96, 0, 0]])
    )  # 0.2 A via PBC


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--formula", "Xx2O", "--band-gap", "1.0"], "unknown element 'Xx'"),
        (["--formula", "NaCl", "--band-gap", "50"], "outside the range"),
        (
            [
                "--formula",
                "NaCl",
                "--formation-energy",
                "-1.0",
                "--dit-checkpoint",
                "unimdm_jax/checkpoints/dit_mp20_cpu",
            ],
            "conditioned on band_gap",
        ),
        (["--formula", "NaCl", "--formation-energy", "-9.0"], "outside the range"),
        (["--formula", "NaCl", "--band-gap", "1", "-n", "0"], "n must be"),
        (["--formula", "NaCl", "--band-gap", "3:1"], "lo <= hi"),
        (["--formula", "NaCl", "--band-gap", "1:50"], "outside the range"),
        (["--formula", "NaCl", "--band-gap", "one:2"], "two numbers"),
        (["--formula", "NaCl", "--formation-energy", "-9:-8"], "outside the range"),
        (["--formula", "NaCl", "--band-gap", "1", "--steps", "0"], "steps must be a positive integer"),
        (["--formula", "NaCl", "--band-gap", "1", "--steps", "5000"], "at most the 1000 steps"),
        (["--formula", "NaCl", "--target", "density=2.2"], "unknown property 'density'"),
        (["--formula", "NaCl", "--target", "density"], "--target must be NAME=VALUE"),
    ],
)
def test_sample_bad_input_one_line_and_nothing_written(tmp_path, args, fragment):
    out = tmp_path / "out"
    result = run_sample(*args, "--out", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and fragment in lines[0], result.stderr
    assert lines[0].startswith("error: ") and not out.exists()
    assert [p for p in tmp_path.iterdir()] == []  # no staging folder left behind


def test_sample_rejects_invalid_symmetry_file_and_non_empty_output(tmp_path):
    bad = dict(RUTILE, wyckoff=[{"element": "Ti", "letter": "z", "multiplicity": 2}])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = run_sample("--symmetry", str(path), "--out", str(tmp_path / "out"))
    assert (
        result.returncode == 1
        and "invalid symmetry record" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )

    path.write_text("{not json")
    result = run_sample("--symmetry", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ROCK_SALT))
    result = run_sample("--symmetry", str(good), "--out", str(busy))
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]


def test_corrupt_or_missing_checkpoint_is_one_line(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ROCK_SALT))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    (broken / "config.json").write_text(
        (REPO / "unimdm_jax/checkpoints/dit_mp20_cpu/config.json").read_text()
    )
    for folder in (broken, tmp_path / "missing"):
        result = run_sample(
            "--symmetry", str(good), "--dit-checkpoint", str(folder), "--out", str(tmp_path / "o")
        )
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "o").exists()


def test_api_errors_are_generation_errors():
    with pytest.raises(GenerationError, match="either a formula"):
        generate("NaCl", band_gap=1.0, symmetry=ROCK_SALT)
    with pytest.raises(GenerationError, match="holds no record|invalid"):
        read_symmetry([])
    with pytest.raises(GenerationError, match="finite"):
        generate(symmetry=ROCK_SALT, band_gap=float("nan"))
    far = dict(ROCK_SALT, properties=[{"name": "band_gap", "value": 15.0, "unit": "eV"}])
    with pytest.raises(GenerationError, match="outside the range"):  # the record's own target is checked too
        generate(symmetry=far, n=1)


PIPELINES = [  # flag, value, symmetry predictor, Crystal DiT, property: the paper's BG and FM models
    ("--band-gap", 5.0, "small_glm4_bg", "dit_mp20_cpu", "band_gap"),
    ("--formation-energy", -2.0, "small_glm4_fm", "dit_mp20_formation_cpu", "formation_energy_per_atom"),
]


@pytest.mark.parametrize("flag, value, lm, dit, prop", PIPELINES, ids=["band_gap", "formation_energy"])
def test_sample_from_formula_uses_the_language_model(tmp_path, flag, value, lm, dit, prop):
    """The README's main command, smaller: formula + target -> LM hypotheses -> structures,
    with the packaged models conditioned on that target."""
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    for name, card in (
        (lm, REPO / "llm_torch/checkpoints" / lm / "model_card.json"),
        (dit, REPO / "unimdm_jax/checkpoints" / dit / "model_card.json"),
    ):
        if not card.exists():
            pytest.skip(f"{name} is not packaged")
    out = tmp_path / "out"
    result = run_sample("--formula", "NaCl", flag, str(value), "-n", "2", "--top-k", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    hypotheses = schema.load_records(out / "symmetry.jsonl")
    assert summary["settings"]["symmetry_source"] == "language model" and 1 <= len(hypotheses) <= 2
    assert summary["settings"]["crystal_dit"] == dit and summary["settings"]["targets"] == {prop: value}
    assert all(h.composition.reduced_formula == "NaCl" and h.property(prop) == value for h in hypotheses)
    for row in summary["structures"]:
        structure = Structure.from_file(str(out / row["file"]))
        assert structure.composition.reduced_formula == "NaCl"
        assert row["space_group"] in [h.space_group.number for h in hypotheses]
        assert SpacegroupAnalyzer(structure, symprec=0.01).get_space_group_number() == row["space_group"]


def _fake_crystal(hypothesis, energy, predicted_gap, target_gap=3.0):
    from unimdm_jax.generation import GeneratedCrystal

    return GeneratedCrystal(
        structure=None,
        record=None,
        hypothesis=hypothesis,
        targets={"band_gap": target_gap},
        predicted={"band_gap": predicted_gap},
        energy_per_atom=energy,
    )


def test_ranking_orders_by_energy_window_then_property_and_by_each_key():
    from unimdm_jax.generation import ENERGY_WINDOW, GenerationError, ranking_order

    crystals = [
        _fake_crystal(2, -5.00, 1.0),  # lowest energy, far from the target
        _fake_crystal(0, -5.00 + ENERGY_WINDOW / 2, 2.9),  # degenerate with it, closest to the target
        _fake_crystal(1, -4.00, 3.0),  # exact property, 1 eV/atom higher
        _fake_crystal(0, None, 3.0),  # the potential failed
        _fake_crystal(1, -4.50, 0.0),
    ]
    assert ranking_order(crystals, "energy") == [1, 0, 4, 2, 3]
    assert ranking_order(crystals, "property") == [2, 3, 1, 0, 4]
    assert ranking_order(crystals, "score") == [1, 3, 2, 4, 0]
    assert ranking_order(crystals, "none") == [0, 1, 2, 3, 4]
    with pytest.raises(GenerationError):
        ranking_order(crystals, "volume")


def test_sample_relax_writes_raw_and_relaxed_cifs_ranked_by_energy(tmp_path):
    """CHGNet relaxation under FixSymmetry: the relaxed structure keeps the record's space group
    (pymatgen's analysis), its energy is not above the raw one, and the output follows energy."""
    pytest.importorskip("chgnet")
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    symmetry = tmp_path / "records.jsonl"
    symmetry.write_text(json.dumps(ROCK_SALT) + "\n" + json.dumps(RUTILE) + "\n")
    out = tmp_path / "out"
    result = run_sample(
        "--symmetry", str(symmetry), "-n", "4", "--out", str(out), "--seed", "1", "--no-dedup", "--relax"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["structures"]
    assert summary["settings"]["rank"] == "energy" and [r["rank"] for r in rows] == [1, 2, 3, 4]
    relaxed_rows = [r for r in rows if r["relax_ok"]]
    assert relaxed_rows, [r["relax_reason"] for r in rows]
    for row in relaxed_rows:
        relaxed = Structure.from_file(str(out / row["relaxed_file"]))
        assert (out / row["file"]).exists()
        assert SpacegroupAnalyzer(relaxed, symprec=0.1).get_space_group_number() == row["space_group"]
        assert row["energy_per_atom"] <= row["relax_initial_energy_per_atom"] + 1e-3
    energies = [r["energy_per_atom"] for r in relaxed_rows]
    window = summary["settings"]["energy_window"]
    lowest = min(energies)
    outside = [e for e in energies if e > lowest + window]
    assert all(e <= lowest + window for e in energies[: len(energies) - len(outside)])
    assert outside == sorted(outside)
    assert any("CHGNet" in w for w in summary["warnings"])  # the leakage note


def test_negative_target_ranges_parse_on_the_command_line():
    from unimdm_jax.sample import parse_args

    args = parse_args(["--formula", "NaCl", "--formation-energy", "-2.5:-2.0", "--out", "o"])
    assert args.formation_energy == "-2.5:-2.0"
    assert parse_args(["--formula", "NaCl", "--band-gap", "2.5:3.5", "--out", "o"]).band_gap == "2.5:3.5"


def test_target_range_draws_conditions_inside_it_and_judges_hits_against_it(tmp_path, monkeypatch):
    """Each structure's condition is drawn inside the range (what the sampler receives), the summary
    judges the oracle's prediction against the range, and the extended XYZ files read back (ASE) as
    the CIFs' structures."""
    from ase.io import read as ase_read
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    from unimdm_jax import generation

    received = []
    original = generation.sample_dataset

    def spy(*args, **kwargs):
        received.append(np.asarray(kwargs["property_values"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(generation, "sample_dataset", spy)
    result = generate(symmetry=[RUTILE, ROCK_SALT], band_gap="2.0:4.0", n=4, seed=3, deduplicate=False)
    conditions = received[0][:, 0]
    assert conditions.shape == (4,) and np.all((conditions >= 2.0) & (conditions <= 4.0))
    assert len(set(np.round(conditions, 6))) == 4  # drawn per structure, not one value
    assert sorted(c.targets["band_gap"] for c in result.crystals) == pytest.approx(sorted(conditions))
    assert result.settings["target_ranges"] == {"band_gap": [2.0, 4.0]}

    out = result.write(tmp_path / "out")
    rows = json.loads((out / "summary.json").read_text())["structures"]
    for row in rows:
        predicted = row["predicted_band_gap"]
        assert row["target_band_gap_range"] == "2:4"
        assert row["in_range_band_gap"] == (2.0 <= predicted <= 4.0)
        assert row["abs_error_band_gap"] == pytest.approx(max(2.0 - predicted, 0.0, predicted - 4.0))
        atoms = ase_read(str(out / row["file"].replace(".cif", ".extxyz")))
        from_xyz = AseAtomsAdaptor.get_structure(atoms)
        from_cif = Structure.from_file(str(out / row["file"]))
        assert from_xyz.composition == from_cif.composition
        assert np.allclose(from_xyz.lattice.abc, from_cif.lattice.abc, atol=1e-4)
        assert atoms.info["space_group"] == row["space_group"]
    as_atoms = result.to_ase()
    assert [len(a) for a in as_atoms] == [len(c.structure) for c in result.crystals]
    with pytest.raises(ValueError, match="no relaxation"):
        result.crystals[0].to_ase(relaxed=True)


def test_fewer_sampling_steps_keep_the_space_group_and_are_recorded():
    """``steps=50``: the re-spaced sampler still gives the record's space group (pymatgen's
    SpacegroupAnalyzer, independently), and the summary says how many steps ran."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    result = generate(symmetry=RUTILE, n=2, steps=50, progress=False, deduplicate=False)
    assert result.settings["sampling_steps"] == 50 and result.settings["timesteps"] == 1000
    for crystal in result.crystals:
        assert SpacegroupAnalyzer(crystal.structure, symprec=0.1).get_space_group_number() == 136
