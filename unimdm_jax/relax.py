"""Relax crystal structures with the CHGNet universal interatomic potential.

Library API (``load_potential``, ``precheck``, ``single_point_energies``, ``relax``,
``to_summary_row``) and a command line for structures from anywhere::

    python -m unimdm_jax.relax FILE_OR_DIR... --out DIR [--fmax 0.05] [--steps 300]
                                                  [--no-fix-symmetry] [--overwrite]

What a relaxation is, exactly:

- potential: CHGNet 0.3.0 (PyPI ``chgnet``; the wheel ships the pretrained weights, so it
  runs offline), on the CPU unless ``device`` says otherwise, through its ASE calculator
  ``chgnet.model.dynamics.CHGNetCalculator``;
- degrees of freedom: atomic positions and the cell, through ``ase.filters.FrechetCellFilter``
  (the filter CHGNet's own ``StructOptimizer`` uses by default);
- symmetry: with ``fix_symmetry`` (the default) the ASE constraint
  ``ase.constraints.FixSymmetry(atoms, symprec=0.1)`` is set before the optimiser starts.
  It first symmetrizes the structure to the space group spglib finds at that tolerance
  (moving atoms by at most ~``symprec``), then symmetrizes every force, stress and step, so
  the relaxation cannot lower the space group;
- optimiser: ASE ``FIRE`` (default) or ``BFGS``; converged when the largest force of the
  filter (atomic forces and the cell's stress term) is below ``fmax`` (default 0.05 eV/A),
  at most ``steps`` optimiser steps (default 300);
- evaluation: ``batch_size`` structures relax side by side, each with its own optimiser;
  each optimiser step evaluates all their current states in one batched CHGNet call
  (``_relax_lockstep``), and each trajectory is the one ASE's ``Optimizer.run`` follows for
  that structure alone (tested against it). numpy/scipy BLAS runs on one thread meanwhile
  (threadpoolctl): the cell filter's 3x3 algebra is slower when threaded;
- space groups before and after: spglib through pymatgen's ``SpacegroupAnalyzer`` with
  ``symprec=0.1`` (``SYMPREC``), on the structure as given and on the relaxed one.

A structure the potential cannot handle never stops a run; its result has ``ok=False`` and a
one-line ``reason``. Checked before the potential is called (``precheck``): a disordered
site, an element outside CHGNet's training set (Z = 1..94), atoms closer than 0.5 A
(periodic images included), a non-finite cell or a volume per atom outside 1..200 A^3.
After relaxation: a non-finite energy, or a cell whose volume changed by more than 50 %
(``MAX_VOLUME_CHANGE``) is flagged as diverged; a guard also stops an optimiser whose cell
leaves the 1..200 A^3/atom range mid-way. A relaxation that hits the step limit is
``ok=True, converged=False``.

Leakage: CHGNet was trained on MPtrj, the Materials Project relaxation trajectories, which
include the materials of MP-20's test split. Energies and relaxed geometries of MP-20-like
structures are therefore not an independent check of generated structures.

torch, chgnet and ase are imported inside the functions that use them, never at import time:
they are an optional, heavy dependency (the ``relax`` extra), and the JAX core must stay
importable (and cheap to import) without them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pymatgen.core import Structure

#: spglib tolerance (A) for the space groups reported before/after and for FixSymmetry.
SYMPREC = 0.1
#: CHGNet's element set: its atom embedding and its composition (AtomRef) model both have
#: ``max_num_elements = 94`` rows indexed by Z - 1 (chgnet/model/encoders.py,
#: chgnet/model/composition_model.py); all 94 AtomRef weights of 0.3.0 are fitted (non-zero).
MAX_Z = 94
#: atoms closer than this (A, periodic images included) are "on top of each other".
MIN_DISTANCE = 0.5
#: accepted volume per atom (A^3), before and during relaxation.
VOLUME_PER_ATOM_RANGE = (1.0, 200.0)
#: a relative volume change beyond this flags the relaxed cell as diverged.
MAX_VOLUME_CHANGE = 0.5
DEFAULT_FMAX = 0.05
DEFAULT_STEPS = 300
OPTIMIZERS = ("FIRE", "BFGS")
#: torch CPU threads during CHGNet calls (set and restored around them). One thread: the
#: structures are small (tens of atoms), and on a busy 2-core machine two torch threads
#: waiting on each other were 5-100x slower per call than one (measured, see the report).
DEFAULT_THREADS = 1
LEAKAGE_NOTE = (
    "CHGNet was trained on Materials Project relaxation trajectories (MPtrj), which include "
    "MP-20's test materials: its energies and relaxed geometries are not independent of MP-20."
)


@dataclass
class RelaxationResult:
    """One structure's relaxation. Energies in eV/atom, forces in eV/A, volumes in A^3."""

    initial: Structure
    final: Structure | None = None
    energy_per_atom: float = math.nan  # final, CHGNet
    initial_energy_per_atom: float = math.nan  # single point on the structure as given
    volume_change: float = math.nan  # V_final / V_initial - 1
    steps: int = 0
    converged: bool = False
    max_force: float = math.nan  # largest final atomic force (eV/A)
    max_stress: float = math.nan  # largest |component| of the final stress tensor (GPa)
    max_residual: float = math.nan  # what fmax is compared with: the filter's largest force
    spacegroup_initial: int | None = None  # spglib, symprec=SYMPREC
    spacegroup_final: int | None = None
    spacegroup_kept: bool | None = None  # final space group number == initial
    # fewer symmetry operations after than before (same cell, same symprec): symmetry lost.
    # Not the same as "not kept": a perturbed input often relaxes into a higher group.
    symmetry_lowered: bool | None = None
    ok: bool = False
    reason: str | None = None
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


class _Diverged(Exception):
    """Raised by the guard attached to the optimiser when the cell runs away."""


def _failure_reason(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def spacegroup_number(structure: Structure, symprec: float = SYMPREC) -> int | None:
    """spglib's space group number (pymatgen ``SpacegroupAnalyzer``); None if spglib fails."""
    return _symmetry(structure, symprec)[0]


def _symmetry(structure: Structure, symprec: float = SYMPREC) -> tuple[int | None, int | None]:
    """(space group number, number of symmetry operations of this very cell) or Nones."""
    # on use: pulls in scipy.cluster and spglib, which pymatgen.core (imported above) does not
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec)
        return int(sga.get_space_group_number()), len(sga.get_symmetry_operations())
    except Exception:
        return None, None


def precheck(structure: Structure) -> str | None:
    """Why CHGNet cannot handle ``structure`` (one line), or None. Does not call the potential."""
    if not structure.is_ordered:
        return "disordered (partially occupied) site; CHGNet needs an ordered structure"
    if len(structure) == 0:
        return "no atoms"
    for el in sorted({sp.element if hasattr(sp, "element") else sp for sp in structure.species}, key=str):
        z = getattr(el, "Z", None)
        if z is None or not 1 <= z <= MAX_Z:
            return f"element {el} (Z={z}) is outside CHGNet's training set (Z=1..{MAX_Z})"
    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(structure.frac_coords)):
        return "non-finite cell or coordinates"
    vpa = abs(float(np.linalg.det(matrix))) / len(structure)
    lo, hi = VOLUME_PER_ATOM_RANGE
    if not lo <= vpa <= hi:
        return f"volume per atom {vpa:.3g} A^3 outside {lo:g}..{hi:g} A^3"
    centers, points, _, dists = structure.get_neighbor_list(MIN_DISTANCE)
    if len(centers):
        i = int(np.argmin(dists))
        return (
            f"atoms {int(centers[i])} and {int(points[i])} are {float(dists[i]):.2f} A apart "
            f"(< {MIN_DISTANCE} A): on top of each other"
        )
    return None


@functools.lru_cache(maxsize=4)
def load_potential(device: str = "cpu", model_name: str = "0.3.0"):
    """The pretrained ``chgnet.model.CHGNet`` (cached per device), in eval mode."""
    # optional heavy dependency: imported here, not at module import time
    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its parameter count
        model = CHGNet.load(model_name=model_name, use_device=device, verbose=False)
    model.eval()
    # an atom with no neighbour within the 6 A cutoff is an error (caught per structure),
    # not a warning followed by a meaningless energy
    model.graph_converter.set_isolated_atom_response("error")
    return model


@functools.lru_cache(maxsize=4)
def _calculator(device: str = "cpu", model_name: str = "0.3.0"):
    # optional heavy dependency: imported here, not at module import time
    from chgnet.model.dynamics import CHGNetCalculator

    with contextlib.redirect_stdout(io.StringIO()):  # prints "CHGNet will run on cpu"
        return CHGNetCalculator(
            model=load_potential(device, model_name), use_device=device, on_isolated_atoms="error"
        )


def single_point_energies(
    structures: Sequence[Structure],
    *,
    batch_size: int = 16,
    device: str = "cpu",
    num_threads: int | None = DEFAULT_THREADS,
) -> np.ndarray:
    """CHGNet energy per atom (eV/atom) of each structure, batched over structures.

    ``NaN`` where ``precheck`` gives a reason or the graph cannot be built (e.g. an isolated
    atom); the others go through ``CHGNet.predict_graph`` ``batch_size`` at a time.
    """
    model = load_potential(device)
    out = np.full(len(structures), np.nan)
    graphs, index = [], []
    for i, s in enumerate(structures):
        if precheck(s) is not None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graphs.append(model.graph_converter(s))
            index.append(i)
        except Exception:
            continue
    if graphs:
        with warnings.catch_warnings(), _torch_threads(num_threads):
            warnings.simplefilter("ignore")  # torch: "Converting a tensor with requires_grad"
            preds = model.predict_graph(graphs, task="e", batch_size=batch_size)
        if isinstance(preds, dict):
            preds = [preds]
        for i, p in zip(index, preds):
            out[i] = float(np.asarray(p["e"]).reshape(()))
    return out


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run with ``n`` torch CPU threads (None: leave as is); restores the previous number."""
    if n is None:
        yield
        return
    import torch  # optional heavy dependency

    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _blas_threads(n: int):
    """numpy/scipy BLAS limited to ``n`` threads (threadpoolctl); restores them after.

    The cell filter's 3x3 linear algebra is far too small to share: with OpenBLAS's default
    threads, ``scipy.linalg.expm_frechet`` on a 3x3 matrix took 0.8-1.8 ms instead of 0.36 ms
    on this 2-core CPU while another process used the cores (measured).
    """
    from threadpoolctl import threadpool_limits  # installed with the relax extra

    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _structure_from_atoms(atoms) -> Structure:
    return Structure(
        np.array(atoms.cell[:], dtype=float),
        atoms.get_chemical_symbols(),
        np.array(atoms.positions, dtype=float),
        coords_are_cartesian=True,
    )


@functools.cache
def _cached_potential_class():
    """An ASE calculator holding the potential's results for one state of one structure.

    The lock-step loop (``_relax_lockstep``) evaluates the states of many structures in one
    batched CHGNet call and stores each result here (``store``); the optimiser then reads
    energy, forces and stress through the usual ASE calls. A state the batch did not evaluate
    (the ASE ``check_state`` test fails) is computed by CHGNet's own ASE calculator, so the
    cache can only make the loop faster, never change what it computes.
    """

    # optional heavy dependency: the class is built on first use, not at import time
    from ase.calculators.calculator import Calculator, all_changes

    class CachedPotential(Calculator):
        implemented_properties = ["energy", "free_energy", "forces", "stress"]

        def __init__(self, device: str):
            super().__init__()
            self.device = device
            self.fallbacks = 0  # states computed one at a time

        def store(self, atoms, results: dict) -> None:
            self.atoms = atoms.copy()
            self.results = dict(results)

        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            reference = _calculator(self.device)
            reference.calculate(self.atoms.copy(), task="efs")
            self.results = {k: reference.results[k] for k in self.implemented_properties}
            self.fallbacks += 1

    return CachedPotential


@functools.cache
def _memo_filter_class():
    """``FrechetCellFilter`` that computes its forces once per state.

    ASE asks the filter for its forces twice per FIRE step (the convergence test, then the
    step), and each time the filter redoes a 3x3 matrix logarithm and an exponential's Frechet
    derivative (scipy); on this CPU that was a third of a relaxation's time. Same numbers,
    computed once: the memo is keyed on the exact positions and cell.
    """
    # optional heavy dependency: the class is built on first use, not at import time
    from ase.filters import FrechetCellFilter

    class MemoFrechetCellFilter(FrechetCellFilter):
        _memo: tuple | None = None

        def get_forces(self, **kwargs):
            key = (
                self.atoms.positions.tobytes(),
                self.atoms.cell.array.tobytes(),
                tuple(sorted(kwargs.items())),
            )
            if self._memo is None or self._memo[0] != key:
                self._memo = (key, super().get_forces(**kwargs))
            return self._memo[1].copy()

    return MemoFrechetCellFilter


def _predict_efs(graphs: list, *, device: str, batch_size: int) -> list[dict]:
    """CHGNet energy (eV/atom), forces (eV/A) and stress (GPa) of each graph, batched."""
    model = load_potential(device)
    preds = model.predict_graph(graphs, task="efs", batch_size=batch_size)
    return [preds] if isinstance(preds, dict) else list(preds)


class _Trajectory:
    """One structure's ASE optimiser (FrechetCellFilter, FixSymmetry), stepped from outside."""

    def __init__(self, index: int, structure: Structure, *, fix_symmetry, optimizer, fmax, device):
        # optional heavy dependencies: imported here, not at module import time
        from ase.constraints import FixSymmetry
        from ase.optimize import BFGS, FIRE
        from pymatgen.io.ase import AseAtomsAdaptor

        self.index = index
        self.seconds = 0.0  # own optimiser work plus its share of each batched evaluation
        t = time.perf_counter()
        self.atoms = AseAtomsAdaptor.get_atoms(structure)
        self.atoms.calc = _cached_potential_class()(device)
        if fix_symmetry:
            self.atoms.set_constraint(FixSymmetry(self.atoms, symprec=SYMPREC))
        self.filtered = _memo_filter_class()(self.atoms)
        self.opt = {"FIRE": FIRE, "BFGS": BFGS}[optimizer](self.filtered, logfile=None)
        self.opt.fmax = fmax  # what ``Optimizer.run(fmax=...)`` sets before its loop
        self.seconds += time.perf_counter() - t

    def graph(self, model):
        """CHGNet's graph of the current state (positions and cell as the optimiser left them)."""
        return model.graph_converter(_structure_from_atoms(self.atoms))

    def store(self, prediction: dict, extensive: bool) -> None:
        from ase import units

        n = len(self.atoms)
        # the unit conversions of chgnet.model.dynamics.CHGNetCalculator
        energy = float(np.asarray(prediction["e"]).reshape(())) * (n if extensive else 1)
        self.atoms.calc.store(
            self.atoms,
            {
                "energy": energy,
                "free_energy": energy,
                "forces": np.asarray(prediction["f"], dtype=float),
                "stress": np.asarray(prediction["s"], dtype=float) * units.GPa,
            },
        )

    def advance(self, max_steps: int) -> bool:
        """One turn of ``ase.optimize.Dynamics.irun`` at the stored state; True when finished.

        Converged (the filter's largest force below fmax) or at the step limit: finished.
        Otherwise one optimiser step, after which the next state needs the potential.
        """
        t = time.perf_counter()
        try:
            if self.opt.converged():
                return True
            if self.opt.nsteps >= max_steps:
                return True
            self.opt.step()
            self.opt.nsteps += 1
            vpa = self.atoms.get_volume() / len(self.atoms)
            lo, hi = VOLUME_PER_ATOM_RANGE
            if not (np.isfinite(vpa) and lo <= vpa <= hi and np.all(np.isfinite(self.atoms.positions))):
                raise _Diverged(f"diverged cell: volume per atom {vpa:.3g} A^3 left {lo:g}..{hi:g} A^3")
            return False
        finally:
            self.seconds += time.perf_counter() - t

    def fields(self) -> dict[str, Any]:
        """The result's fields at the final (stored) state."""
        from ase import units

        atoms, n = self.atoms, len(self.atoms)
        forces = np.asarray(atoms.get_forces())
        return {
            "final": _structure_from_atoms(atoms),
            "energy_per_atom": float(atoms.get_potential_energy()) / n,
            "steps": int(self.opt.nsteps),
            "converged": bool(self.opt.converged()),
            "max_force": float(np.max(np.linalg.norm(forces, axis=1))) if n else 0.0,
            "max_stress": float(np.max(np.abs(atoms.get_stress(voigt=False)))) / units.GPa,
            "max_residual": float(np.sqrt((np.asarray(self.filtered.get_forces()) ** 2).sum(axis=1).max())),
        }


def _relax_lockstep(
    structures: Sequence[Structure],
    *,
    fmax: float,
    steps: int,
    fix_symmetry: bool,
    optimizer: str,
    device: str,
    batch_size: int,
    done,
) -> None:
    """Relax structures (already prechecked) with one batched potential call per round.

    Up to ``batch_size`` optimisers run side by side; every round evaluates all their current
    states in one ``predict_graph`` call, then advances each optimiser by one step (the same
    sequence of operations as ASE's ``Optimizer.run``, so each trajectory is the one a
    structure would follow alone, up to float round-off of the batched forward). A finished
    structure leaves the pool and the next waiting one takes its place, so the batch stays
    full. ``done(index, fields_or_exception, seconds)`` is called as each one finishes.
    """
    model = load_potential(device)
    extensive = bool(getattr(model, "is_intensive", True))
    waiting = list(enumerate(structures))[::-1]
    active: list[_Trajectory] = []

    def finish(traj: _Trajectory, outcome) -> None:
        active.remove(traj)
        done(traj.index, outcome, traj.seconds)

    while waiting or active:
        while waiting and len(active) < batch_size:
            i, s = waiting.pop()
            try:
                active.append(
                    _Trajectory(
                        i, s, fix_symmetry=fix_symmetry, optimizer=optimizer, fmax=fmax, device=device
                    )
                )
            except Exception as exc:  # noqa: BLE001 - one structure must not stop the run
                done(i, exc, 0.0)
        t = time.perf_counter()
        graphs, ready = [], []
        for traj in list(active):
            try:
                graphs.append(traj.graph(model))
                ready.append(traj)
            except Exception as exc:  # noqa: BLE001 - e.g. an atom left without neighbours
                finish(traj, exc)
        if not ready:
            continue
        try:
            predictions = _predict_efs(graphs, device=device, batch_size=len(graphs))
        except KeyboardInterrupt:
            raise
        except Exception:  # noqa: BLE001 - find the structure that breaks the batch
            predictions = []
            for g in graphs:
                try:
                    predictions.append(_predict_efs([g], device=device, batch_size=1)[0])
                except Exception as exc:  # noqa: BLE001
                    predictions.append(exc)
        share = (time.perf_counter() - t) / len(ready)
        for traj, prediction in zip(ready, predictions):
            traj.seconds += share
            if isinstance(prediction, Exception):
                finish(traj, prediction)
                continue
            try:
                traj.store(prediction, extensive)
                if traj.advance(steps):
                    finish(traj, traj.fields())
            except Exception as exc:  # noqa: BLE001
                finish(traj, exc)


def relax(
    structures: Sequence[Structure] | Structure,
    *,
    fmax: float = DEFAULT_FMAX,
    steps: int = DEFAULT_STEPS,
    fix_symmetry: bool = True,
    optimizer: str = "FIRE",
    device: str = "cpu",
    batch_size: int = 16,
    num_threads: int | None = DEFAULT_THREADS,
    progress=None,
) -> list[RelaxationResult]:
    """Relax every structure with CHGNet (positions and cell); one result per structure.

    Initial energies come from one batched ``single_point_energies`` call. The relaxations run
    one ASE optimiser per structure, ``batch_size`` of them side by side, their states
    evaluated together in one CHGNet call per optimiser step (``_relax_lockstep``).
    ``RelaxationResult.seconds`` is the structure's own optimiser work plus its share of each
    batched evaluation and of the initial single points. Failures of a structure become
    ``ok=False`` with a reason; ``KeyboardInterrupt`` propagates. ``progress(i, result)`` is
    called as each structure finishes (not necessarily in input order).
    """
    if isinstance(structures, Structure):
        structures = [structures]
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    import ase
    from chgnet import __version__ as chgnet_version

    params = {
        "potential": "CHGNet 0.3.0",
        "chgnet_version": chgnet_version,
        "ase_version": ase.__version__,
        "device": device,
        "optimizer": optimizer,
        "cell_filter": "FrechetCellFilter",
        "fix_symmetry": bool(fix_symmetry),
        "symprec": SYMPREC,
        "fmax_eV_per_A": fmax,
        "max_steps": steps,
        "batch_size": batch_size,
        "torch_threads": num_threads,
    }
    load_potential(device)  # not part of the per-structure time
    t0 = time.perf_counter()
    initial_e = single_point_energies(
        structures, batch_size=batch_size, device=device, num_threads=num_threads
    )
    sp_seconds = (time.perf_counter() - t0) / max(len(structures), 1)
    results = [
        RelaxationResult(initial=s, initial_energy_per_atom=float(e), params=params, reason=precheck(s))
        for s, e in zip(structures, initial_e)
    ]
    symmetry_initial: dict[int, tuple[int | None, int | None]] = {}
    symmetry_seconds: dict[int, float] = {}

    def report(i: int, result: RelaxationResult) -> None:
        result.ok = result.reason is None
        if progress is not None:
            progress(i, result)

    def done(k: int, outcome, seconds: float) -> None:
        i = todo[k]
        r = results[i]
        t = time.perf_counter()
        if isinstance(outcome, BaseException):
            r.reason = _failure_reason(outcome)
        else:
            for key, value in outcome.items():
                setattr(r, key, value)
            r.volume_change = r.final.volume / r.initial.volume - 1.0
            if not math.isfinite(r.energy_per_atom):
                r.reason = "non-finite energy after relaxation"
            elif not math.isfinite(r.volume_change) or abs(r.volume_change) > MAX_VOLUME_CHANGE:
                r.reason = (
                    f"diverged cell: volume changed by {100 * r.volume_change:+.0f}% "
                    f"(limit {100 * MAX_VOLUME_CHANGE:.0f}%)"
                )
            else:
                r.spacegroup_initial, ops_initial = symmetry_initial[i]
                r.spacegroup_final, ops_final = _symmetry(r.final)
                if r.spacegroup_initial is not None and r.spacegroup_final is not None:
                    r.spacegroup_kept = r.spacegroup_final == r.spacegroup_initial
                    r.symmetry_lowered = ops_final < ops_initial
        r.seconds = seconds + sp_seconds + symmetry_seconds[i] + time.perf_counter() - t
        report(i, r)

    todo = []
    for i, r in enumerate(results):
        if r.reason is None:
            todo.append(i)
        else:
            r.seconds = sp_seconds
            report(i, r)
    for i in todo:
        t = time.perf_counter()
        symmetry_initial[i] = _symmetry(results[i].initial)
        symmetry_seconds[i] = time.perf_counter() - t
        if results[i].spacegroup_initial is None:
            results[i].spacegroup_initial = symmetry_initial[i][0]
    with warnings.catch_warnings(), _torch_threads(num_threads), _blas_threads(1):
        warnings.simplefilter("ignore")  # pymatgen's per-step constraint warning, torch's
        _relax_lockstep(
            [structures[i] for i in todo],
            fmax=fmax,
            steps=steps,
            fix_symmetry=fix_symmetry,
            optimizer=optimizer,
            device=device,
            batch_size=batch_size,
            done=done,
        )
    return results


def _num(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def to_summary_row(result: RelaxationResult) -> dict[str, Any]:
    """Plain JSON-able fields of a result (NaN -> None)."""
    s = result.initial
    return {
        "formula": s.composition.reduced_formula,
        "n_atoms": len(s),
        "ok": bool(result.ok),
        "reason": result.reason,
        "converged": bool(result.converged),
        "steps": int(result.steps),
        "initial_energy_per_atom": _num(result.initial_energy_per_atom),
        "energy_per_atom": _num(result.energy_per_atom),
        "volume_initial": _num(s.volume),
        "volume_final": _num(result.final.volume) if result.final is not None else None,
        "volume_change": _num(result.volume_change),
        "max_force": _num(result.max_force),
        "max_stress_GPa": _num(result.max_stress),
        "max_residual": _num(result.max_residual),
        "spacegroup_initial": result.spacegroup_initial,
        "spacegroup_final": result.spacegroup_final,
        "spacegroup_kept": result.spacegroup_kept,
        "symmetry_lowered": result.symmetry_lowered,
        "seconds": round(float(result.seconds), 4),
    }


# ----------------------------------------------------------------------------- command line


class CliError(Exception):
    """Bad input: reported as one ``error:`` line, exit code 1."""


def _read_inputs(paths: Sequence[str]) -> list[tuple[str, str, Structure]]:
    """(unique name, source path, structure) for each CIF file / each *.cif in each folder."""
    from pymatgen.io.cif import CifParser  # on use (CLI only): loads pymatgen.symmetry and more

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() == ".cif" and q.is_file())
            if not found:
                raise CliError(f"no *.cif files in folder {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CliError(f"no such file or folder: {p}")
    out, used = [], set()
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structures = CifParser(f).parse_structures(primitive=False)
        except Exception as exc:  # noqa: BLE001
            raise CliError(f"cannot read CIF {f}: {_failure_reason(exc)}") from None
        if not structures:
            raise CliError(f"cannot read CIF {f}: no structure in it")
        for k, s in enumerate(structures):
            base = f.stem if len(structures) == 1 else f"{f.stem}_{k}"
            name, j = base, 1
            while name in used:
                j += 1
                name = f"{base}_{j}"
            used.add(name)
            out.append((name, str(f), s))
    return out


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _write_outputs(tmp: Path, inputs, results, params: dict) -> list[dict]:
    from pymatgen.io.cif import CifWriter  # on use (CLI only): loads pymatgen.symmetry and more

    rows = []
    for (name, source, s), r in zip(inputs, results):
        raw = Path("raw") / f"{name}.cif"
        _write_text(tmp / raw, str(CifWriter(s)))
        relaxed = None
        if r.final is not None and r.ok:
            relaxed = Path("relaxed") / f"{name}.cif"
            _write_text(tmp / relaxed, str(CifWriter(r.final)))
        rows.append(
            {
                "name": name,
                "source": source,
                **to_summary_row(r),
                "raw_cif": str(raw),
                "relaxed_cif": str(relaxed) if relaxed else None,
            }
        )
    columns = list(rows[0]) if rows else []
    with open(tmp / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    summary = {"params": params, "leakage_note": LEAKAGE_NOTE, "rows": rows}
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m unimdm_jax.relax",
        description="Relax CIF structures with CHGNet (positions + cell, FixSymmetry). "
        "Writes DIR/raw/*.cif, DIR/relaxed/*.cif, DIR/summary.csv and DIR/summary.json; "
        "the output folder appears only when the run is complete.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="CIF files or folders of *.cif")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    p.add_argument("--fmax", type=float, default=DEFAULT_FMAX, help="force tolerance, eV/A (default 0.05)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimiser step limit (default 300)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="FIRE")
    p.add_argument("--no-fix-symmetry", action="store_true", help="do not constrain the space group")
    p.add_argument("--device", default="cpu", help="torch device for CHGNet (default cpu)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="structures relaxed side by side, one batched CHGNet call per step (default 16)",
    )
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    tmp: Path | None = None
    previous_sigterm = None
    try:
        # SIGTERM (e.g. a batch system's kill) cleans up like Ctrl-C: nothing half-written
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # not the main thread
        pass
    try:
        if not (args.fmax > 0 and math.isfinite(args.fmax)):
            raise CliError(f"--fmax must be a positive number, not {args.fmax}")
        if args.steps < 0:
            raise CliError(f"--steps must be >= 0, not {args.steps}")
        if out.exists() and not out.is_dir():
            raise CliError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not args.overwrite:
            raise CliError(f"--out {out} exists and is not empty (use --overwrite)")
        inputs = _read_inputs(args.inputs)
        try:
            import chgnet  # noqa: F401  optional heavy dependency
        except ImportError:
            raise CliError("chgnet is not installed (pip install 'unimdm[relax]')") from None

        def report(i, r):
            name = inputs[i][0]
            if r.ok:
                state = "converged" if r.converged else "NOT converged"
                print(
                    f"{name}: {state} in {r.steps} steps, {r.initial_energy_per_atom:.4f} -> "
                    f"{r.energy_per_atom:.4f} eV/atom, dV {100 * r.volume_change:+.1f}%, "
                    f"SG {r.spacegroup_initial} -> {r.spacegroup_final}, {r.seconds:.1f} s",
                    flush=True,
                )
            else:
                print(f"{name}: not relaxed: {r.reason}", flush=True)

        results = relax(
            [s for _, _, s in inputs],
            fmax=args.fmax,
            steps=args.steps,
            fix_symmetry=not args.no_fix_symmetry,
            optimizer=args.optimizer,
            device=args.device,
            batch_size=args.batch_size,
            num_threads=args.threads,
            progress=report,
        )
        parent = out.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
        params = dict(results[0].params) if results else {}
        rows = _write_outputs(tmp, inputs, results, params)
        # publish: the complete folder replaces the output folder in one rename
        if out.is_dir() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out.is_dir():
                out.rmdir()
            os.replace(tmp, out)
        tmp = None
        n_ok = sum(r["ok"] for r in rows)
        n_conv = sum(r["ok"] and r["converged"] for r in rows)
        print(
            f"{len(rows)} structures: {n_ok} relaxed ({n_conv} converged), "
            f"{len(rows) - n_ok} flagged; wrote {out}"
        )
        return 0
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted; nothing written to {out}", file=sys.stderr)
        return 130
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
