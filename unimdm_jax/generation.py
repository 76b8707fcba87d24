"""End-to-end generation: composition + target property -> symmetry hypotheses -> crystals.

The Python API behind ``python -m unimdm_jax.sample`` (see ``unimdm_jax/sample.py``)::

    from unimdm_jax.generation import generate
    result = generate("LiFePO4", band_gap=3.0, n=8)            # stage 1 (LM) + stage 2 (Crystal DiT)
    result = generate(symmetry="record.json", n=4)             # skip the LM: sample under given records
    for crystal in result.crystals:
        crystal.structure, crystal.record, crystal.predicted    # pymatgen Structure, schema record, oracle

Steps: (1) the symmetry predictor (``llm_torch``) proposes its top-k JSON symmetry schema
records, or the user gives them; (2) the Crystal DiT samples ``n`` structures spread over those
records (rank 1 first, round robin), each under its space group and Wyckoff positions and
conditioned on the target; (3) duplicates are merged with StructureMatcher (stol=0.5,
angle_tol=10, ltol=0.3, as in ``unimdm_jax.metrics``); (4) the property oracle, when one is
packaged, predicts each structure's properties so the distance to the target can be read off.

Every user error raises :class:`GenerationError` with a one-line message before anything is
written. Targets outside the range a model was trained on are refused unless
``allow_extrapolation=True`` (then a warning is recorded in the result).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llm_torch.constraints import CompositionError, parse_composition
from llm_torch.predict import InputError, Predictor, make_input, resolve_model_dir
from unimdm_jax import schema
from unimdm_jax.checkpoint import PACKAGED, CheckpointError, load_model
from unimdm_jax.data.preprocess import CrystalDataset
from unimdm_jax.data.symmetry import SymmetryError, WyckoffSite, build_crystal
from unimdm_jax.dataset_sampling import sample_dataset
from unimdm_jax.errors import one_line
from unimdm_jax.metrics import is_plausible, is_sane, structure_matcher
from unimdm_jax.model.crystal_dit import NUM_ELEMENTS
from unimdm_jax.oracle import load_oracle
from unimdm_jax.relax import LEAKAGE_NOTE, relax as relax_structures, single_point_energies
from unimdm_jax.schema import KNOWN_PROPERTY_UNITS, atomic_number, canonical_property

DEFAULT_DIT = "dit_mp20_cpu"
# the packaged Crystal DiT conditioned on each property (the paper's BG and FM models)
DEFAULT_DITS = {"band_gap": "dit_mp20_cpu", "formation_energy_per_atom": "dit_mp20_formation_cpu"}
DEFAULT_ORACLE = "oracle_mp20_cpu"
MAX_STRUCTURES = 10_000


class GenerationError(ValueError):
    """Bad input or a missing/corrupt model: the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")).strip())


@dataclasses.dataclass
class GeneratedCrystal:
    """One generated structure (after merging duplicates) and where it came from."""

    structure: Any  # pymatgen Structure (conventional cell of the record's space group)
    record: Any  # unimdm_jax.schema.SymmetryRecord it was sampled under
    hypothesis: int  # index into GenerationResult.records (0 = best ranked)
    targets: dict[str, float]  # the condition (empty: unconditional); drawn per structure for a range
    predicted: dict[str, float] = dataclasses.field(default_factory=dict)  # oracle predictions
    sane: bool = True  # finite lattice, volume per atom > 0.1 A^3
    # metrics.is_plausible: MP-20-like volume per atom, no atoms closer than 0.5 A
    plausible: bool = True
    copies: int = 1  # generated structures merged into this one
    # CHGNet (``unimdm_jax.relax``): the relaxation (``relax=True``) or None; the energy per atom
    # used for ranking (the relaxed one, or a single point of the raw structure for rank="energy")
    relaxation: Any = None
    energy_per_atom: float | None = None
    # targets asked for as a range (lo, hi): hits are judged against the range, not the drawn value
    target_ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def relaxed(self):
        """The relaxed structure, or None (not relaxed, or the potential could not handle it)."""
        return self.relaxation.final if self.relaxation is not None and self.relaxation.ok else None

    @property
    def distance_to_target(self) -> dict[str, float]:
        """Oracle prediction's distance to the target value, or to the target range (0 inside)."""
        distances = {}
        for name, value in self.targets.items():
            if name not in self.predicted:
                continue
            predicted = self.predicted[name]
            if name in self.target_ranges:
                lo, hi = self.target_ranges[name]
                distances[name] = max(lo - predicted, 0.0, predicted - hi)
            else:
                distances[name] = abs(predicted - value)
        return distances

    def to_ase(self, relaxed: bool = False):
        """The structure (or its relaxation, ``relaxed=True``) as ``ase.Atoms``, with the summary in
        ``atoms.info`` (the ``relax`` extra installs ASE)."""
        from pymatgen.io.ase import AseAtomsAdaptor  # ASE on use: an optional dependency

        structure = self.relaxed if relaxed else self.structure
        if structure is None:
            raise ValueError("this structure has no relaxation (generate with relax=True)")
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.info.update({k: v for k, v in self.summary().items() if _is_info_value(v)})
        atoms.info["relaxed"] = bool(relaxed)
        return atoms

    def summary(self) -> dict[str, Any]:
        lattice = self.structure.lattice
        row = {
            "formula": self.structure.composition.reduced_formula,
            "cell_formula": self.structure.composition.formula.replace(" ", ""),
            "space_group": self.record.space_group.number,
            "space_group_symbol": self.record.space_group.symbol,
            "wyckoff": " ".join(f"{w.element}:{w.multiplicity}{w.letter}" for w in self.record.wyckoff),
            "a": lattice.a,
            "b": lattice.b,
            "c": lattice.c,
            "alpha": lattice.alpha,
            "beta": lattice.beta,
            "gamma": lattice.gamma,
            "volume": lattice.volume,
            "num_atoms": len(self.structure),
            "hypothesis_rank": self.hypothesis + 1,
            "hypothesis_score": self.record.provenance.score,
            "hypothesis_source": self.record.provenance.source,
            "copies": self.copies,
            "sane": self.sane,
            "plausible": self.plausible,
        }
        for name, value in self.targets.items():
            row[f"target_{name}"] = value
            if name in self.target_ranges:
                row[f"target_{name}_range"] = "{:g}:{:g}".format(*self.target_ranges[name])
        for name, value in self.predicted.items():
            row[f"predicted_{name}"] = value
        for name, value in self.distance_to_target.items():
            row[f"abs_error_{name}"] = value
            if name in self.target_ranges:
                row[f"in_range_{name}"] = value == 0.0
        if self.energy_per_atom is not None or self.relaxation is not None:
            row["energy_per_atom"] = self.energy_per_atom
        if self.relaxation is not None:
            r = self.relaxation
            row.update(
                relax_ok=r.ok,
                relax_reason=r.reason,
                relax_converged=r.converged,
                relax_steps=r.steps,
                relax_initial_energy_per_atom=r.initial_energy_per_atom,
                relax_volume_change=r.volume_change,
                relax_spacegroup=r.spacegroup_final,
                relax_spacegroup_kept=r.spacegroup_kept,
            )
        return row


@dataclasses.dataclass
class GenerationResult:
    crystals: list[GeneratedCrystal]
    records: list[Any]  # the symmetry hypotheses, best first
    num_sampled: int
    settings: dict[str, Any]
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def structures(self):
        return [c.structure for c in self.crystals]

    def to_ase(self, relaxed: bool = False) -> list:
        """The structures in rank order as ``ase.Atoms`` (``relaxed=True``: the relaxed ones,
        skipping those the potential could not relax)."""
        return [c.to_ase(relaxed) for c in self.crystals if not relaxed or c.relaxed is not None]

    def write(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """One CIF and one extended XYZ (ASE) per structure + ``summary.json``, ``summary.csv``,
        ``symmetry.jsonl``; ``*_relaxed.cif`` / ``*_relaxed.extxyz`` for relaxed structures.

        Written into a temporary sibling folder and renamed at the end, so a failure never
        leaves a half-written ``out_dir``."""
        out_dir = Path(out_dir)
        check_output_dir(out_dir, overwrite)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            rows = []
            for number, crystal in enumerate(self.crystals, start=1):
                row = crystal.summary()
                name = f"{number:03d}_{row['formula']}_sg{row['space_group']}.cif"
                crystal.structure.to(filename=str(staging / name))
                _write_extxyz(staging / (name[: -len(".cif")] + ".extxyz"), crystal, relaxed=False)
                relaxed_name = None
                if crystal.relaxed is not None:
                    relaxed_name = name[: -len(".cif")] + "_relaxed.cif"
                    crystal.relaxed.to(filename=str(staging / relaxed_name))
                    _write_extxyz(staging / (relaxed_name[: -len(".cif")] + ".extxyz"), crystal, relaxed=True)
                relaxed = {"relaxed_file": relaxed_name} if crystal.relaxation is not None else {}
                rows.append({"rank": number, "file": name, **relaxed, **row})
            summary = {
                "settings": self.settings,
                "num_sampled": self.num_sampled,
                "num_unique": len(rows),
                "warnings": self.warnings,
                "structures": rows,
            }
            (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
            _write_csv(staging / "summary.csv", rows)
            (staging / "symmetry.jsonl").write_text("".join(r.to_json() + "\n" for r in self.records))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return out_dir


def _is_info_value(value) -> bool:
    """What extended XYZ can hold in its comment line: numbers, booleans and short strings."""
    return isinstance(value, (bool, int, float, str, np.floating, np.integer)) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


def _write_extxyz(path: Path, crystal: GeneratedCrystal, relaxed: bool) -> None:
    try:
        from ase.io import write as ase_write
    except ImportError:  # ASE comes with the relax extra; CIFs are written regardless
        return
    ase_write(str(path), crystal.to_ase(relaxed), format="extxyz")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def check_output_dir(out_dir: str | Path, overwrite: bool) -> None:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GenerationError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise GenerationError(
            f"output folder {out_dir} exists and is not empty (pass --overwrite to replace it)"
        )


# ============================================================================ inputs


def parse_target(name: str, value):
    """A target value or range: a number, a string ``"x"`` or ``"lo:hi"``, or a pair ``(lo, hi)``.

    Returns a float, or a ``(lo, hi)`` tuple with lo < hi (``lo == hi`` is the value itself)."""
    if isinstance(value, str) and ":" in value:
        value = tuple(value.split(":", 1))
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise GenerationError(f"{name} range must be two numbers lo:hi, got {value!r}")
        try:
            lo, hi = float(value[0]), float(value[1])
        except (TypeError, ValueError):
            raise GenerationError(f"{name} range must be two numbers lo:hi, got {value!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise GenerationError(f"{name} range must be finite with lo <= hi, got {lo:g}:{hi:g}")
        return lo if lo == hi else (lo, hi)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise GenerationError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise GenerationError(f"{name} must be finite, got {value!r}")
    return value


def canonical_targets(band_gap=None, formation_energy=None, **others) -> dict[str, float | tuple]:
    """{canonical property name: finite float, or a (lo, hi) range} of the given targets."""
    targets = {}
    for name, value in {
        "band_gap": band_gap,
        "formation_energy_per_atom": formation_energy,
        **others,
    }.items():
        if value is None:
            continue
        try:
            canonical = canonical_property(name)  # the one alias table, shared with stage 1
        except ValueError as error:
            raise GenerationError(
                f"{error}; a property of your own needs a Crystal DiT trained on it (--dit-checkpoint)"
            ) from None
        targets[canonical] = parse_target(canonical, value)
    return targets


def validate_formula(formula, composition_mode: str = "auto"):
    """The parsed composition (``llm_torch.constraints.CompositionSpec``, pure Python) or a
    one-line error: unknown element, malformed or absurd formula."""
    if not isinstance(formula, str):
        raise GenerationError(f"formula must be a string, got {type(formula).__name__}")
    try:
        return parse_composition(formula, composition_mode)
    except CompositionError as error:
        raise GenerationError(f"formula: {error}") from None


def read_symmetry(path_or_records) -> list:
    """Validated schema records from a file (JSON, JSON list or JSONL) or record objects/dicts."""
    try:
        if isinstance(path_or_records, (str, os.PathLike)):
            path = Path(path_or_records)
            if not path.is_file():
                raise GenerationError(f"symmetry file {path}: no such file")
            records = schema.load_records(path)
        else:
            items = path_or_records if isinstance(path_or_records, (list, tuple)) else [path_or_records]
            records = [schema.validate_record(r) for r in items]
    except schema.SchemaError as error:
        raise GenerationError(f"invalid symmetry record: {error}") from None
    except OSError as error:
        raise GenerationError(f"cannot read symmetry file: {error}") from None
    if not records:
        raise GenerationError("the symmetry file holds no record")
    return records


def check_in_range(
    targets: dict[str, float | tuple],
    ranges: dict[str, tuple[float, float]],
    what: str,
    allow_extrapolation: bool,
    notes: list[str],
) -> None:
    for name, target in targets.items():
        if name not in ranges:
            continue
        lo, hi = ranges[name]
        ends = target if isinstance(target, tuple) else (target,)
        if all(lo <= value <= hi for value in ends):
            continue
        shown = ":".join(f"{value:g}" for value in ends)
        message = (
            f"target {name} = {shown} {KNOWN_PROPERTY_UNITS.get(name, '')} is outside the range "
            f"{lo:g}..{hi:g} that {what} was trained on"
        )
        if not allow_extrapolation:
            raise GenerationError(message + " (pass --allow-extrapolation to sample anyway)")
        notes.append(message)


# ============================================================================ models


@dataclasses.dataclass
class CrystalDiTModel:
    model: Any
    params: Any
    config: Any
    card: dict
    name: str

    @property
    def properties(self) -> tuple[str, ...]:
        return tuple(self.config.model.properties)

    @property
    def trained_ranges(self) -> dict[str, tuple[float, float]]:
        """The range each conditioning property's embedding covers (the config's ``property_ranges``)."""
        declared = dict(zip(self.config.model.properties, self.config.model.property_ranges))
        return {name: tuple(declared[name]) for name in self.properties}


def default_dit_path(targets: dict[str, float] | Sequence[str] = ()) -> Path:
    """The packaged Crystal DiT for the target property (band gap when there is none, or no
    packaged model conditioned on it)."""
    for name in targets:
        if name in DEFAULT_DITS and (PACKAGED / DEFAULT_DITS[name]).exists():
            return PACKAGED / DEFAULT_DITS[name]
    return PACKAGED / DEFAULT_DIT


def load_crystal_dit(path: str | Path | None = None) -> CrystalDiTModel:
    """An exported Crystal DiT (default: the packaged ``dit_mp20_cpu``), loaded once per process
    and folder (a screen's rows share it)."""
    return _load_crystal_dit(Path(path).resolve() if path is not None else default_dit_path())


@functools.lru_cache(maxsize=4)
def _load_crystal_dit(path: Path) -> CrystalDiTModel:
    try:
        model, params, config, card = load_model(path)
    except CheckpointError as error:
        raise GenerationError(str(error)) from None
    if getattr(config, "task", "diffusion") != "diffusion":
        raise GenerationError(f"{path} is not a Crystal DiT checkpoint")
    return CrystalDiTModel(model, params, config, card, path.name)


def load_oracle_or_none(path: str | Path | None = None):
    """The packaged property oracle, or None when this installation has none (loaded once per
    process and folder)."""
    return _load_oracle_or_none(Path(path).resolve() if path is not None else PACKAGED / DEFAULT_ORACLE)


@functools.lru_cache(maxsize=4)
def _load_oracle_or_none(path: Path):
    if not path.exists():
        return None
    try:
        return load_oracle(path)
    except CheckpointError as error:
        raise GenerationError(str(error)) from None


def predict_symmetry(
    formula: str,
    targets: dict[str, float],
    top_k: int = 3,
    *,
    model_dir=None,
    composition_mode: str = "auto",
    device: str = "cpu",
    seed: int = 0,
):
    """Stage 1: the top-k symmetry hypotheses (validated schema records) of the language model."""
    if len(targets) != 1:
        raise GenerationError("the symmetry predictor takes exactly one target: band_gap or formation_energy")
    ((name, value),) = targets.items()
    try:
        item = make_input(formula, {name: value}, mode=composition_mode, id=formula.strip(), where="formula")
        folder = resolve_model_dir(name, model_dir, flag="--symmetry-model")
    except InputError as error:
        raise GenerationError(str(error)) from None
    try:
        predictor = _load_predictor(Path(folder).resolve(), _torch_device(device))
    except ImportError as error:  # the optional [llm] extra (torch, transformers) is missing
        raise GenerationError(
            f"the symmetry predictor needs the [llm] extra ({error}); or pass a symmetry record"
        ) from None
    except (OSError, RuntimeError, ValueError) as error:
        raise GenerationError(f"cannot load symmetry model {folder}: {one_line(error)}") from None
    if predictor.property_name and predictor.property_name != name:
        raise GenerationError(
            f"symmetry model {folder.name} is conditioned on {predictor.property_name}, not {name}"
        )
    prediction = predictor.predict(item.spec, name, value, top_k=top_k, seed=seed)
    records = prediction.records(predictor.model_name, item.id)
    if not records:
        raise GenerationError(f"{formula}: no space group admits a Wyckoff assignment of this composition")
    return records, predictor


@functools.lru_cache(maxsize=4)
def _load_predictor(folder: Path, device: str):
    """The symmetry predictor of a model folder, loaded once per process (a screen's rows share it)."""
    return Predictor.from_dir(folder, device)


def _torch_device(device: str) -> str:
    return {"gpu": "cuda"}.get(device, device)


# ============================================================================ stage 2


def crystal_from_record(record, index: int = 0):
    """A :class:`~unimdm_jax.data.symmetry.SymmetrizedCrystal` with the record's atoms and
    Wyckoff operations. Coordinates and lattice are placeholders: the sampler draws both from
    the prior, so only the composition, the operations and the space group matter."""
    sites = tuple(
        WyckoffSite(w.element, w.letter, w.multiplicity, (0.0, 0.0, 0.0), ()) for w in record.wyckoff
    )
    try:
        return build_crystal(f"hypothesis-{index}", record.space_group.number, (1, 1, 1, 90, 90, 90), sites)
    except SymmetryError as error:
        raise GenerationError(str(error)) from None


def sample_under_records(
    dit: CrystalDiTModel,
    records: Sequence,
    counts: Sequence[int],
    conditions: np.ndarray,
    *,
    seed: int = 0,
    guidance_scale: float = 0.0,
    step_lr: float = 1e-5,
    batch_size: int = 32,
    progress: bool = True,
    steps: int | None = None,
    oracle=None,
    oracle_property: str | None = None,
    oracle_targets: Sequence[float] | None = None,
    oracle_scale: float = 0.0,
    oracle_sigma: float = 0.5,
    oracle_safeguards: bool = True,
):
    """Stage 2: ``counts[i]`` structures under ``records[i]``, conditioned on ``conditions``
    (one row per record, or one per structure in record order; columns = the DiT's properties,
    NaN = unconditional). ``oracle_targets`` likewise: one per record or one per structure.

    Classifier guidance with the property oracle's gradient (``unimdm_jax.guidance``) when
    ``oracle_scale > 0``: ``oracle_targets[i]`` is the wanted value of ``oracle_property`` under
    record i, ``oracle_sigma`` the width of the Gaussian likelihood around it,
    ``oracle_safeguards`` as in :func:`generate`.

    Returns ``[(structure, record_index), ...]`` in record order."""
    crystals, owner = [], []
    templates = [crystal_from_record(r, i) for i, r in enumerate(records)]
    for index, (template, count) in enumerate(zip(templates, counts)):
        crystals += [template] * int(count)
        owner += [index] * int(count)
    if not crystals:
        return []
    # property columns: the DiT's (a user's own property too); the values come from conditions
    dataset = CrystalDataset.from_crystals(
        crystals, [f"hypothesis:{i}" for i in owner], tuple(dit.config.model.properties)
    )

    def per_structure(values):
        values = np.asarray(values, np.float64)
        if len(values) == len(records):  # one row per record (the same thing when every count is 1)
            return values[owner]
        if len(values) != len(owner):
            raise ValueError(f"{len(values)} rows for {len(records)} records and {len(owner)} structures")
        return values

    values = per_structure(conditions)
    guidance = {}
    if oracle_scale > 0:
        guidance = dict(
            oracle_apply=oracle.apply,
            oracle_params=oracle.params,
            oracle_targets=per_structure(oracle_targets),
            oracle_property_index=list(oracle.property_names).index(oracle_property),
            classifier_scale=oracle_scale,
            classifier_sigma=oracle_sigma,
            classifier_safeguards=oracle_safeguards,
        )
    structures, _ = sample_dataset(
        dit.model,
        dit.params,
        dit.config,
        dataset,
        batch_size=min(batch_size, len(crystals)),
        seed=seed,
        guidance_scale=guidance_scale,
        step_lr=step_lr,
        steps=steps,
        property_values=values,
        progress=progress,
        **guidance,
    )
    return list(zip(structures, owner))


def merge_duplicates(structures: Sequence, processes: int | None = None) -> list[tuple[int, int]]:
    """Indices of the distinct structures and how many copies each stands for (StructureMatcher
    of ``unimdm_jax.metrics``; insane cells are never merged)."""
    sane = [i for i, s in enumerate(structures) if is_sane(s)]
    groups: dict[int, int] = {}
    if sane:
        matcher = structure_matcher()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                grouped = matcher.group_structures([structures[i] for i in sane])
            except Exception:  # noqa: BLE001 - spglib on odd cells: keep all
                grouped = [[structures[i]] for i in sane]
        by_id = {id(structures[i]): i for i in sane}
        for group in grouped:
            groups[by_id[id(group[0])]] = len(group)
    for i, _s in enumerate(structures):
        if i not in sane:
            groups[i] = 1
    return sorted(groups.items())


# ============================================================================ the API


@dataclasses.dataclass(frozen=True)
class Options:
    """How structures are generated, apart from the request itself (formula, target, n, top-k):
    the arguments of :func:`generate` of the same names, shared by all rows of a screen
    (``unimdm_jax.screening``)."""

    seed: int = 0
    guidance_scale: float = 0.0
    step_lr: float = 1e-5
    steps: int | None = None  # sampling steps (re-spaced schedules); None: the trained T
    dit_checkpoint: Any = None
    symmetry_model: Any = None
    oracle_checkpoint: Any = None
    composition_mode: str = "auto"
    device: str = "cpu"
    unconditional: bool = False
    allow_extrapolation: bool = False
    deduplicate: bool = True
    batch_size: int = 32
    oracle_guidance: float = 0.0
    oracle_sigma: float = 0.5
    oracle_safeguards: bool = True
    relax: bool = False
    rank: str | None = None
    relax_fmax: float = 0.05
    relax_steps: int = 300

    def checked(self) -> Options:
        """The options with the default ranking resolved, or a one-line GenerationError."""
        for name, value in (
            ("guidance scale", self.guidance_scale),
            ("oracle guidance", self.oracle_guidance),
        ):
            if not math.isfinite(value) or value < 0:
                raise GenerationError(f"{name} must be >= 0, got {value!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise GenerationError(f"steps must be a positive integer, got {self.steps!r}")
        if not math.isfinite(self.oracle_sigma) or self.oracle_sigma <= 0:
            raise GenerationError(f"oracle sigma must be > 0, got {self.oracle_sigma!r}")
        rank = self.rank if self.rank is not None else ("energy" if self.relax else "none")
        if rank not in RANKINGS:
            raise GenerationError(f"rank must be one of {', '.join(RANKINGS)}, got {rank!r}")
        if self.relax and (
            not math.isfinite(self.relax_fmax) or self.relax_fmax <= 0 or int(self.relax_steps) < 1
        ):
            raise GenerationError(
                f"relaxation needs fmax > 0 and steps >= 1, got {self.relax_fmax!r}, {self.relax_steps!r}"
            )
        if self.relax or rank == "energy":
            try:  # chgnet: optional (the relax extra), checked before minutes of sampling
                import chgnet  # noqa: F401
            except ImportError:
                raise GenerationError(
                    "relaxation and energy ranking need CHGNet: pip install 'unimdm[relax]'"
                ) from None
        return dataclasses.replace(self, rank=rank)


@dataclasses.dataclass
class Request:
    """One request after validation and stage 1: the symmetry hypotheses and what stage 2 samples
    under them (``counts[i]`` structures under ``records[i]``, one condition row per structure)."""

    formula: str | None
    targets: dict[str, float]  # a range's centre for a ranged target
    target_ranges: dict[str, tuple[float, float]]
    n: int
    top_k: int
    records: list
    counts: list[int]
    drawn: dict[str, np.ndarray]  # per structure, record order: each target's value
    condition: np.ndarray  # (sum(counts), the DiT's properties), NaN = unconditional
    dit: CrystalDiTModel
    oracle: Any
    oracle_property: str | None  # oracle guidance: the property it steers (None: off)
    symmetry_given: bool
    notes: list[str]


def generate(
    formula: str | None = None,
    *,
    band_gap: float | tuple[float, float] | str | None = None,
    formation_energy: float | tuple[float, float] | str | None = None,
    properties: dict | None = None,
    n: int = 8,
    top_k: int = 3,
    symmetry=None,
    seed: int = 0,
    guidance_scale: float = 0.0,
    step_lr: float = 1e-5,
    steps: int | None = None,
    dit_checkpoint=None,
    symmetry_model=None,
    oracle_checkpoint=None,
    composition_mode: str = "auto",
    device: str = "cpu",
    unconditional: bool = False,
    allow_extrapolation: bool = False,
    deduplicate: bool = True,
    batch_size: int = 32,
    oracle_guidance: float = 0.0,
    oracle_sigma: float = 0.5,
    oracle_safeguards: bool = True,
    relax: bool = False,
    rank: str | None = None,
    relax_fmax: float = 0.05,
    relax_steps: int = 300,
    progress: bool = True,
    log=None,
) -> GenerationResult:
    """Generate crystals for a composition and a target property (see the module docstring).

    ``formula`` + one target: the language model proposes ``top_k`` symmetry records; or
    ``symmetry`` (a file path, a record, or a list of records) skips it. ``n`` structures are
    sampled in all, spread round robin over the records (best first). ``unconditional=True``
    samples with the null condition (the model's unconditional mode, for comparisons);
    ``steps`` S < T samples in S predictor-corrector steps with the schedules re-spaced
    (``objective.respace_schedules``; None: the trained T);
    ``guidance_scale`` w > 0 is classifier-free guidance: (1 + w) cond - w uncond.
    ``oracle_guidance`` s > 0 adds classifier guidance: s times the gradient of the Gaussian
    log-likelihood of the target under the property oracle (width ``oracle_sigma``) with
    respect to the coordinates and the lattice, at every step. With ``oracle_safeguards``
    (default) its lattice part leaves the cell volume alone and moves the predicted lattice noise
    by at most one noise norm per step, and its coordinate part moves each Wyckoff orbit's score
    by at most one score norm (``guidance.oracle_guidance``, ``reverse_diffusion.sample``); ``False`` is
    the unguarded form of Dhariwal & Nichol.

    ``properties``: targets by property name, for a Crystal DiT (``dit_checkpoint``) and a symmetry
    model (``symmetry_model``) trained on a property of your own, e.g. ``{"density": 3.0}``
    (``notebooks/05_your_own_data.ipynb``); the checkpoints' configs register its unit.

    A target is a value or a range: ``band_gap=(2.5, 3.5)`` (or ``"2.5:3.5"``) draws each
    structure's condition uniformly inside the range (seeded by ``seed``), the symmetry predictor
    is asked for the range's centre, and the summary judges the oracle's prediction against the
    range (``in_range_<property>``; ``abs_error_<property>`` is the distance to the range, 0 inside).

    ``relax=True`` relaxes every structure with CHGNet (``unimdm_jax.relax``: positions and cell,
    space group kept by FixSymmetry, ``relax_fmax`` eV/A, at most ``relax_steps`` steps; the
    ``relax`` extra); the oracle then predicts the relaxed structures. ``rank`` orders the
    result (``ranking_order``): "energy" (default with ``relax``; without it, CHGNet single
    points of the raw structures), "property", "score" or "none" (default without ``relax``).
    """
    started = time.perf_counter()
    options = Options(
        seed=seed,
        guidance_scale=guidance_scale,
        step_lr=step_lr,
        steps=steps,
        dit_checkpoint=dit_checkpoint,
        symmetry_model=symmetry_model,
        oracle_checkpoint=oracle_checkpoint,
        composition_mode=composition_mode,
        device=device,
        unconditional=unconditional,
        allow_extrapolation=allow_extrapolation,
        deduplicate=deduplicate,
        batch_size=batch_size,
        oracle_guidance=oracle_guidance,
        oracle_sigma=oracle_sigma,
        oracle_safeguards=oracle_safeguards,
        relax=relax,
        rank=rank,
        relax_fmax=relax_fmax,
        relax_steps=relax_steps,
    ).checked()
    request = prepare_request(
        formula,
        band_gap=band_gap,
        formation_energy=formation_energy,
        properties=properties,
        n=n,
        top_k=top_k,
        symmetry=symmetry,
        options=options,
        log=log,
    )
    sampled = sample_requests([request], options, progress=progress)[0]
    return finish_request(request, sampled, options, log=log, started=started)


def prepare_request(
    formula: str | None = None,
    *,
    band_gap=None,
    formation_energy=None,
    properties: dict | None = None,
    n: int = 8,
    top_k: int = 3,
    symmetry=None,
    options: Options | None = None,
    log=None,
) -> Request:
    """Validate one request and run stage 1 (or read the given symmetry): a :class:`Request`."""
    options = options or Options()
    say = log or (lambda message: None)
    notes: list[str] = []
    if not isinstance(n, int) or not 1 <= n <= MAX_STRUCTURES:
        raise GenerationError(f"n must be an integer between 1 and {MAX_STRUCTURES}, got {n!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise GenerationError(f"top_k must be a positive integer, got {top_k!r}")
    if properties is not None and not isinstance(properties, dict):
        raise GenerationError(f"properties must be a dict of name -> target, got {type(properties).__name__}")
    if properties and options.dit_checkpoint is not None:
        load_crystal_dit(options.dit_checkpoint)  # registers the unit of a property of your own
    targets = canonical_targets(band_gap, formation_energy, **(properties or {}))
    # a range (lo, hi): each structure's condition is drawn uniformly inside it, hits are judged
    # against it, and its centre stands for it where one value is needed (the symmetry predictor)
    target_ranges = {name: value for name, value in targets.items() if isinstance(value, tuple)}
    targets = {name: (v[0] + v[1]) / 2 if isinstance(v, tuple) else v for name, v in targets.items()}
    if symmetry is None and formula is None:
        raise GenerationError("give a formula and a target property, or a symmetry record")
    if symmetry is not None and formula is not None:
        raise GenerationError(
            "give either a formula (the language model proposes the symmetry) or a symmetry record, not both"
        )

    if formula is not None:
        validate_formula(formula, options.composition_mode)

    records = read_symmetry(symmetry) if symmetry is not None else None
    # with a given record and no target, the record's own target picks the packaged model
    wanted = targets or ([p.name for p in records[0].properties] if records else [])
    dit = load_crystal_dit(
        options.dit_checkpoint if options.dit_checkpoint is not None else default_dit_path(wanted)
    )
    unsupported = [t for t in targets if t not in dit.properties]
    if unsupported and not options.unconditional:
        raise GenerationError(
            f"the Crystal DiT {dit.name} is conditioned on {', '.join(dit.properties)}, not "
            f"{unsupported[0]}; pass a checkpoint trained on it"
        )
    if options.steps is not None and options.steps > dit.config.diffusion.timesteps:
        raise GenerationError(
            f"steps must be at most the {dit.config.diffusion.timesteps} steps {dit.name} was trained with, "
            f"got {options.steps}"
        )
    where = f"the Crystal DiT {dit.name}"
    check_in_range(
        {**targets, **target_ranges}, dit.trained_ranges, where, options.allow_extrapolation, notes
    )

    if records is not None:
        if not targets:  # the record's own target
            targets = {p.name: p.value for p in records[0].properties if p.name in dit.properties}
            check_in_range(targets, dit.trained_ranges, where, options.allow_extrapolation, notes)
        _check_elements(records)
        say(f"symmetry: {len(records)} record(s) given")
    else:
        if not targets:
            raise GenerationError("give a target: band_gap or formation_energy")
        records, _ = predict_symmetry(
            formula,
            targets,
            top_k,
            model_dir=options.symmetry_model,
            composition_mode=options.composition_mode,
            device=options.device,
            seed=options.seed,
        )
        _check_elements(records)
        say(
            "symmetry: "
            + "; ".join(
                f"#{i + 1} {r.space_group} {' '.join(str(w) for w in r.wyckoff)}"
                for i, r in enumerate(records)
            )
        )

    counts = [n // len(records) + (1 if i < n % len(records) else 0) for i in range(len(records))]
    # one target value per structure (in record order): drawn inside a range, else the value
    drawn_rng = np.random.default_rng(options.seed)
    drawn = {
        name: drawn_rng.uniform(*target_ranges[name], size=sum(counts))
        if name in target_ranges
        else np.full(sum(counts), value)
        for name, value in targets.items()
    }
    condition = np.full((sum(counts), len(dit.properties)), np.nan)
    if not options.unconditional:
        for column, name in enumerate(dit.properties):
            if name in drawn:
                condition[:, column] = drawn[name]
    oracle = load_oracle_or_none(options.oracle_checkpoint)
    oracle_property = None
    if options.oracle_guidance > 0:
        wanted = [name for name in targets if oracle is not None and name in oracle.property_names]
        if not wanted:
            raise GenerationError("oracle guidance needs a property oracle and a target it predicts")
        oracle_property = wanted[0]
    return Request(
        formula,
        targets,
        target_ranges,
        n,
        top_k,
        records,
        counts,
        drawn,
        condition,
        dit,
        oracle,
        oracle_property,
        symmetry is not None,
        notes,
    )


def sample_requests(requests: Sequence[Request], options: Options, progress: bool = True) -> list[list]:
    """Stage 2 for several requests at once: their structures pooled into full batches of one
    padded shape (one compilation), then split back. The requests must share the Crystal DiT and the
    oracle guidance. Returns per request ``[(structure, record index), ...]`` in record order."""
    if not requests:
        return []
    first = requests[0]
    if any(r.dit is not first.dit or r.oracle_property != first.oracle_property for r in requests):
        raise ValueError("pooled requests must share the Crystal DiT and the oracle guidance")
    records = [record for r in requests for record in r.records]
    guided = {}
    if first.oracle_property is not None:
        guided = dict(
            oracle=first.oracle,
            oracle_property=first.oracle_property,
            oracle_targets=np.concatenate([r.drawn[first.oracle_property] for r in requests]),
            oracle_scale=options.oracle_guidance,
            oracle_sigma=options.oracle_sigma,
            oracle_safeguards=options.oracle_safeguards,
        )
    pooled = sample_under_records(
        first.dit,
        records,
        [c for r in requests for c in r.counts],
        np.concatenate([r.condition for r in requests]),
        seed=options.seed,
        guidance_scale=options.guidance_scale,
        step_lr=options.step_lr,
        steps=options.steps,
        batch_size=options.batch_size,
        progress=progress,
        **guided,
    )
    out, structure_start, record_start = [], 0, 0
    for r in requests:
        size = sum(r.counts)
        out.append([(s, i - record_start) for s, i in pooled[structure_start : structure_start + size]])
        structure_start += size
        record_start += len(r.records)
    return out


def finish_request(
    request: Request, sampled: list, options: Options, log=None, started: float | None = None
) -> GenerationResult:
    """Merge duplicates, relax, predict properties, rank: the :class:`GenerationResult` of one request."""
    say = log or (lambda message: None)
    records, notes = request.records, list(request.notes)
    if options.deduplicate:
        kept = merge_duplicates([s for s, _ in sampled])
    else:
        kept = [(i, 1) for i in range(len(sampled))]
    crystals = [
        GeneratedCrystal(
            sampled[i][0],
            records[sampled[i][1]],
            sampled[i][1],
            {name: float(values[i]) for name, values in request.drawn.items()},
            sane=is_sane(sampled[i][0]),
            plausible=is_plausible(sampled[i][0]),
            copies=copies,
            target_ranges=dict(request.target_ranges),
        )
        for i, copies in kept
    ]
    implausible = sum(not c.plausible for c in crystals)
    if implausible:
        notes.append(
            f"{implausible} of {len(crystals)} structures are implausible (volume per atom outside "
            f"MP-20's range or atoms closer than 0.5 A): see the 'plausible' column"
        )

    if options.relax and crystals:
        say(
            f"relaxing {len(crystals)} structure(s) with CHGNet "
            f"(fmax {options.relax_fmax} eV/A, {options.relax_steps} steps)"
        )
        results = relax_structures(
            [c.structure for c in crystals], fmax=options.relax_fmax, steps=int(options.relax_steps)
        )
        for crystal, outcome in zip(crystals, results):
            crystal.relaxation = outcome
            crystal.energy_per_atom = outcome.energy_per_atom if outcome.ok else None
        failed = sum(not r.ok for r in results)
        if failed:
            notes.append(f"{failed} of {len(results)} relaxations failed: see the relax_reason column")
        notes.append(LEAKAGE_NOTE)
    elif options.rank == "energy" and crystals:
        energies = single_point_energies([c.structure for c in crystals])
        for crystal, energy in zip(crystals, energies):
            crystal.energy_per_atom = float(energy) if math.isfinite(energy) else None
        notes.append(LEAKAGE_NOTE)

    oracle = request.oracle
    if oracle is not None and crystals:
        sane = [c for c in crystals if c.sane]
        if sane:
            predictions = np.asarray(
                oracle.predict_structures([c.relaxed if c.relaxed is not None else c.structure for c in sane])
            )
            for crystal, row in zip(sane, predictions):
                crystal.predicted = {name: float(v) for name, v in zip(oracle.property_names, row)}
    elif oracle is None:
        notes.append("no property oracle packaged: predicted properties are not reported")

    settings = {
        "formula": request.formula,
        "targets": request.targets,
        "target_ranges": {name: list(bounds) for name, bounds in request.target_ranges.items()},
        "n": request.n,
        "top_k": request.top_k,
        "seed": options.seed,
        "guidance_scale": options.guidance_scale,
        "oracle_guidance": options.oracle_guidance,
        "oracle_sigma": options.oracle_sigma,
        "oracle_safeguards": options.oracle_safeguards,
        "step_lr": options.step_lr,
        "unconditional": options.unconditional,
        "crystal_dit": request.dit.name,
        "timesteps": request.dit.config.diffusion.timesteps,
        "sampling_steps": options.steps or request.dit.config.diffusion.timesteps,
        "oracle": None if oracle is None else getattr(oracle, "name", DEFAULT_ORACLE),
        "symmetry_source": "given" if request.symmetry_given else "language model",
        "relax": {"fmax": options.relax_fmax, "steps": int(options.relax_steps)} if options.relax else None,
        "rank": options.rank,
        "energy_window": ENERGY_WINDOW if options.rank == "energy" else None,
        "seconds": None if started is None else round(time.perf_counter() - started, 1),
    }
    crystals = [crystals[i] for i in ranking_order(crystals, options.rank)]
    return GenerationResult(crystals, records, len(sampled), settings, notes)


RANKINGS = ("energy", "property", "score", "none")
#: rank="energy": structures within this many eV/atom of the lowest energy count as
#: degenerate and are ordered by the distance of the oracle's property to the target. CHGNet's
#: energy error is ~30 meV/atom (its paper's MPtrj test MAE), so polymorphs closer than this are
#: not told apart by the potential, and the target property is the better tie-break.
ENERGY_WINDOW = 0.03


def ranking_order(crystals: Sequence[GeneratedCrystal], rank: str, energy_window: float = ENERGY_WINDOW):
    """Indices of ``crystals`` in the order ``rank`` asks for (stable; ties keep sampling order).

    - ``energy``: lowest CHGNet energy per atom first; those within ``energy_window`` of the
      lowest are ordered by their summed distance to the targets (oracle), the rest by energy;
      structures without an energy (the potential could not handle them) last;
    - ``property``: smallest summed distance of the oracle's predictions to the targets first
      (structures without predictions last);
    - ``score``: the symmetry hypothesis' rank (the predictor's score), then sampling order;
    - ``none``: sampling order.
    """
    if rank not in RANKINGS:
        raise GenerationError(f"rank must be one of {', '.join(RANKINGS)}, got {rank!r}")
    indices = list(range(len(crystals)))

    def distance(i):
        d = crystals[i].distance_to_target
        return sum(d.values()) if d else math.inf

    if rank == "none":
        return indices
    if rank == "score":
        return sorted(indices, key=lambda i: crystals[i].hypothesis)
    if rank == "property":
        return sorted(indices, key=distance)
    energies = [crystals[i].energy_per_atom for i in indices]
    finite = [e for e in energies if e is not None and math.isfinite(e)]
    if not finite:
        return indices
    lowest = min(finite)

    def energy_key(i):
        e = energies[i]
        if e is None or not math.isfinite(e):
            return (2, 0.0, 0.0)
        if e <= lowest + energy_window:
            return (0, distance(i), e)
        return (1, e, 0.0)

    return sorted(indices, key=energy_key)


def _check_elements(records) -> None:
    for record in records:
        for element in record.composition.counts:
            if atomic_number(element) >= NUM_ELEMENTS:
                raise GenerationError(
                    f"element {element} (Z={atomic_number(element)}) is beyond the Crystal DiT's "
                    f"element table (Z < {NUM_ELEMENTS})"
                )
