"""unimdm_jax.relax: CHGNet relaxation checked against independent facts.

The physics tests need the ``relax`` extra (chgnet) and are skipped without it; the
import-hygiene and bad-input CLI tests run everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from unimdm_jax import relax as R

A_EXP_NACL = 5.64  # experimental rock-salt NaCl lattice parameter (A), room temperature
A_START = A_EXP_NACL * 1.08


def nacl(a: float = A_START) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def si_primitive(a: float = 5.43 * 1.03) -> Structure:
    s = Structure.from_spacegroup("Fd-3m", Lattice.cubic(a), ["Si"], [[0, 0, 0]])
    return s.get_primitive_structure()


def on_top() -> Structure:
    s = nacl()
    s.append("Na", [0.0, 0.0, 0.005])  # 0.03 A from the Na at the origin
    return s


def curium_oxide() -> Structure:
    # Cm (Z=96): a real element in pymatgen's periodic table, outside CHGNet's Z=1..94
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.8), ["Cm", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def chgnet_batch():
    """One relax() call over [strained NaCl, atoms on top of each other, CmO, strained Si]."""
    pytest.importorskip("chgnet")
    structures = [nacl(), on_top(), curium_oxide(), si_primitive()]
    return structures, R.relax(structures, fmax=0.05, steps=300)


def test_import_does_not_load_torch_chgnet_or_ase():
    code = (
        "import sys, unimdm_jax.relax; "
        "print(sorted(m for m in ('torch', 'chgnet', 'ase') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_precheck_needs_no_potential():
    assert R.precheck(nacl()) is None
    assert "on top of each other" in R.precheck(on_top())
    assert "Cm" in R.precheck(curium_oxide()) and "Z=1..94" in R.precheck(curium_oxide())
    huge = nacl(a=40.0)  # 8000 A^3 / 8 atoms = 8000 A^3/atom
    assert "volume per atom" in R.precheck(huge)


def test_element_set_matches_the_model():
    pytest.importorskip("chgnet")
    model = R.load_potential()
    assert model.atom_embedding.embedding.num_embeddings == R.MAX_Z
    assert model.composition_model.fc.in_features == R.MAX_Z


def test_strained_nacl_relaxes_towards_experiment(chgnet_batch):
    _, results = chgnet_batch
    r = results[0]
    assert r.ok and r.reason is None
    assert r.converged and 0 < r.steps <= 300
    assert r.max_residual < 0.05 and r.max_force < 0.05
    # FrechetCellFilter's cell "force" is V * stress / N (N = exp_cell_factor): converged
    # below fmax means |stress| < fmax * N / V (eV/A^3), 1 eV/A^3 = 160.2 GPa
    assert r.max_stress < 0.05 * len(r.final) / r.final.volume * 160.22
    assert r.energy_per_atom < r.initial_energy_per_atom
    assert r.spacegroup_initial == 225 and r.spacegroup_final == 225 and r.spacegroup_kept
    assert r.symmetry_lowered is False
    a = r.final.lattice.a
    assert r.final.lattice.abc == pytest.approx((a, a, a), abs=1e-4)  # still cubic
    assert abs(a - A_EXP_NACL) < abs(A_START - A_EXP_NACL)
    assert abs(a - A_EXP_NACL) / A_EXP_NACL < 0.03
    assert r.volume_change == pytest.approx((a / A_START) ** 3 - 1, abs=1e-6)


def test_unhandled_structures_are_flagged_and_the_others_still_relax(chgnet_batch):
    _, results = chgnet_batch
    assert not results[1].ok and "on top of each other" in results[1].reason
    assert not results[2].ok and "outside CHGNet's training set" in results[2].reason
    for r in (results[1], results[2]):
        assert r.final is None and r.steps == 0
    si = results[3]
    assert si.ok and si.converged and si.spacegroup_final == 227
    rows = [R.to_summary_row(r) for r in results]
    json.dumps(rows, allow_nan=False)  # plain JSON, no NaN
    assert rows[2]["energy_per_atom"] is None and rows[2]["reason"] == results[2].reason


def test_batched_single_points_equal_one_at_a_time(chgnet_batch):
    structures, _ = chgnet_batch
    batched = R.single_point_energies(structures, batch_size=16)
    single = [R.single_point_energies([s])[0] for s in structures]
    for b, s in zip(batched, single):
        assert (b != b and s != s) or abs(b - s) < 1e-4  # NaN for the flagged ones
    assert batched[0] == batched[0] and batched[1] != batched[1]  # ok one finite, flagged NaN
    # the ASE calculator used for relaxation gives the same energy
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structures[0])
    atoms.calc = R._calculator()
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(batched[0], abs=1e-4)


def test_step_limit_is_reported_as_not_converged():
    pytest.importorskip("chgnet")
    (r,) = R.relax([nacl()], steps=2)
    assert r.ok and not r.converged and r.steps == 2
    assert r.max_residual > 0.05 and r.max_stress > 0.1  # the cell is still under strain


# ------------------------------------------------------------------------------ CLI


def _write_cifs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nacl(a=5.64 * 1.03).get_primitive_structure().to(filename=str(folder / "nacl.cif"))
    si_primitive().to(filename=str(folder / "si.cif"))
    return folder


def test_cli_relaxes_a_folder(tmp_path, capsys):
    pytest.importorskip("chgnet")
    src = _write_cifs(tmp_path / "in")
    out = tmp_path / "out"
    assert R.main([str(src), "--out", str(out), "--steps", "100"]) == 0
    assert sorted(p.name for p in (out / "relaxed").iterdir()) == ["nacl.cif", "si.cif"]
    assert sorted(p.name for p in (out / "raw").iterdir()) == ["nacl.cif", "si.cif"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"]["fmax_eV_per_A"] == 0.05 and summary["params"]["fix_symmetry"]
    assert "MP-20" in summary["leakage_note"]
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    for col in (
        "name",
        "ok",
        "reason",
        "converged",
        "steps",
        "energy_per_atom",
        "volume_change",
        "spacegroup_initial",
        "spacegroup_final",
        "spacegroup_kept",
        "relaxed_cif",
    ):
        assert col in header
    assert [r["name"] for r in summary["rows"]] == ["nacl", "si"]
    assert all(r["ok"] for r in summary["rows"])
    relaxed = Structure.from_file(out / "relaxed" / "si.cif")
    assert len(relaxed) == 2
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left behind
    # an existing non-empty output folder needs --overwrite
    assert R.main([str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "--overwrite" in err[-1]


def test_cli_unreadable_cif_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("this is not a CIF\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "unimdm_jax.relax", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.cif" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_missing_input_and_non_empty_out(tmp_path, capsys):
    out = tmp_path / "out"
    assert R.main([str(tmp_path / "nope.cif"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith("error: no such file")
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    src = tmp_path / "in"
    src.mkdir()
    si_primitive().to(filename=str(src / "si.cif"))
    assert R.main([str(src), "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "x"


def test_cli_interrupted_run_leaves_nothing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("chgnet")
    src = _write_cifs(tmp_path / "in")
    out = tmp_path / "out"
    real = R._predict_efs
    calls = []

    def interrupt_second(*args, **kwargs):  # the second batched potential call of the relaxation
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "_predict_efs", interrupt_second)
    assert R.main([str(src), "--out", str(out), "--steps", "50"]) == 130
    assert len(calls) == 2
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no partial/temporary folder
    assert "interrupted" in capsys.readouterr().err


def test_cli_interrupted_while_writing_leaves_nothing(tmp_path, monkeypatch):
    pytest.importorskip("chgnet")
    src = _write_cifs(tmp_path / "in")
    out = tmp_path / "out"
    real = R._write_text
    calls = []

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # raw/nacl.cif and relaxed/nacl.cif are already written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "_write_text", interrupt_third)
    assert R.main([str(src), "--out", str(out), "--steps", "5"]) == 130
    assert len(calls) == 3
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_diverged_cell_is_flagged(monkeypatch):
    pytest.importorskip("chgnet")
    s = si_primitive()

    def runaway(trajectory):  # a relaxation that doubled the volume
        final = s.copy()
        final.scale_lattice(2 * s.volume)
        return {
            "final": final,
            "energy_per_atom": -1.0,
            "steps": 7,
            "converged": True,
            "max_force": 0.0,
            "max_stress": 0.0,
            "max_residual": 0.0,
        }

    monkeypatch.setattr(R._Trajectory, "fields", runaway)
    (r,) = R.relax([s])
    assert not r.ok and r.reason.startswith("diverged cell") and "+100%" in r.reason


def test_cli_without_chgnet_is_one_line_error(tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    src.mkdir()
    si_primitive().to(filename=str(src / "si.cif"))
    monkeypatch.setitem(sys.modules, "chgnet", None)  # import chgnet -> ImportError
    out = tmp_path / "out"
    assert R.main([str(src), "--out", str(out)]) == 1
    assert "chgnet is not installed" in capsys.readouterr().err
    assert not out.exists()


def _ase_reference(structure: Structure, *, fmax: float, steps: int):
    """ASE's own loop on one structure: CHGNet's ASE calculator, FixSymmetry, FrechetCellFilter,
    FIRE.run -- what the batched lock-step relaxation must reproduce."""
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = CHGNetCalculator(model=R.load_potential(), use_device="cpu")
    atoms.set_constraint(FixSymmetry(atoms, symprec=R.SYMPREC))
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = opt.run(fmax=fmax, steps=steps)
    return atoms, opt.nsteps, bool(converged)


def test_batched_lockstep_follows_ase_own_loop(monkeypatch):
    """Three structures relaxed side by side (one CHGNet call per optimiser step for all of
    them) end where ASE's FIRE.run takes each one alone, and the batch really is shared."""
    pytest.importorskip("chgnet")
    rattled_si = si_primitive()
    rattled_si.perturb(0.05, seed=1)  # breaks Fd-3m: atomic forces as well as cell stress
    structures = [nacl(), rattled_si, nacl(A_EXP_NACL * 0.96)]
    calls = []
    real = R._predict_efs

    def counting(graphs, **kwargs):
        calls.append(len(graphs))
        return real(graphs, **kwargs)

    monkeypatch.setattr(R, "_predict_efs", counting)
    results = R.relax(structures, fmax=0.05, steps=60, batch_size=3)
    assert all(r.ok for r in results)
    # one call per round, all three structures in it until one finishes
    assert len(calls) == max(r.steps for r in results) + 1
    assert calls[0] == 3 and sum(calls) == sum(r.steps + 1 for r in results)
    for s, r in zip(structures, results):
        atoms, nsteps, converged = _ase_reference(s, fmax=0.05, steps=60)
        assert abs(r.steps - nsteps) <= 2 and r.converged == converged
        assert r.energy_per_atom == pytest.approx(atoms.get_potential_energy() / len(atoms), abs=2e-4)
        assert np.allclose(r.final.lattice.matrix, np.array(atoms.cell[:]), atol=5e-3)


def test_cached_potential_computes_a_state_it_was_not_given():
    """The lock-step cache answers only for the state it stored; any other state is computed
    by CHGNet's own ASE calculator (never a stale answer)."""
    pytest.importorskip("chgnet")
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(nacl())
    calc = R._cached_potential_class()("cpu")
    atoms.calc = calc
    stale = {
        "energy": 123.0,
        "free_energy": 123.0,
        "forces": np.zeros((len(atoms), 3)),
        "stress": np.zeros(6),
    }
    calc.store(atoms, stale)
    assert atoms.get_potential_energy() == 123.0 and calc.fallbacks == 0  # the stored state
    atoms.positions[0] += 0.01  # another state
    reference = AseAtomsAdaptor.get_atoms(nacl())
    reference.positions[0] += 0.01
    reference.calc = R._calculator()
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-5)
    assert calc.fallbacks == 1
