"""The property oracle: symmetry invariances, gradients, learning, export round trip, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax.config import TrainConfig  # noqa: E402
from unimdm_jax.data.batching import sharded_batch  # noqa: E402
from unimdm_jax.model import OracleConfig  # noqa: E402
from unimdm_jax.oracle import Oracle, graphs_from_structures  # noqa: E402
from unimdm_jax.train import init_state, prepare_config, train  # noqa: E402

TINY = TrainConfig(
    task="property",
    model=OracleConfig(hidden=32, num_layers=1, num_frequencies=4),
    batch_size=8,
    learning_rate=3e-3,
    warmup_steps=1,
    total_steps=30,
    ema_decay=0.5,  # so that the EMA parameters of a 30-step run have moved
    fixed_budget=True,  # one compiled shape per run
)


@pytest.fixture(scope="module")
def structures(fixture_csv):
    from unimdm_jax.data.io import read_rows, structure_from_cif

    return [structure_from_cif(row.cif) for row in read_rows([fixture_csv], limit=6)]


@pytest.fixture(scope="module")
def oracle(fixture_dataset):
    """An untrained tiny oracle: the invariances are properties of the architecture."""
    dataset, _ = fixture_dataset
    config = prepare_config(TINY, dataset)
    model, state = init_state(config, sharded_batch(dataset, np.arange(2), 1))
    return Oracle(model, state.params, config, {})


def _predict(oracle, structures):
    return oracle.predict_structures(structures, batch_size=16, standardize=False)


def test_predictions_are_invariant_to_atom_order_and_periodic_translation(oracle, structures):
    from pymatgen.core import Structure

    structure = next(s for s in structures if len(s) >= 3)
    order = np.random.default_rng(0).permutation(len(structure))
    permuted = Structure.from_sites([structure[i] for i in order])
    translated = structure.copy()
    translated.translate_sites(
        list(range(len(structure))), [0.31, -0.17, 0.42], frac_coords=True, to_unit_cell=True
    )
    moved_one_atom = structure.copy()
    moved_one_atom.translate_sites([0], [0.05, 0.0, 0.0], frac_coords=True)

    values = _predict(oracle, [structure, permuted, translated, moved_one_atom])
    np.testing.assert_allclose(values[1], values[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values[2], values[0], rtol=1e-5, atol=1e-5)
    # the invariances are not vacuous: moving one atom relative to the others changes the output
    assert np.abs(values[3] - values[0]).max() > 1e-4


def test_predictions_are_invariant_to_rotating_or_reflecting_the_lattice(oracle, structures):
    """Rotate / mirror the Cartesian crystal with pymatgen; the k-vector computed from the new
    lattice matrix (eigh-based matrix log) must give the same prediction."""
    from pymatgen.core.operations import SymmOp

    from unimdm_jax import lattice

    structure = structures[1]
    rotated = structure.copy()
    rotated.apply_operation(SymmOp.from_axis_angle_and_translation([1.0, 2.0, -0.5], 37.0))
    mirrored = structure.copy()
    mirrored.apply_operation(SymmOp.reflection([0.3, -1.0, 0.4]))
    assert not np.allclose(rotated.lattice.matrix, structure.lattice.matrix, atol=1e-3)

    graphs = jax.tree_util.tree_map(jnp.asarray, graphs_from_structures([structure] * 3))
    matrices = np.zeros((graphs.globals["mask"].shape[0], 3, 3), np.float32)
    matrices[:] = np.eye(3)
    matrices[:3] = [s.lattice.matrix for s in (structure, rotated, mirrored)]
    k = lattice.lattice_to_k(jnp.asarray(matrices))
    values = np.asarray(oracle.apply(oracle.params, graphs, graphs.nodes["frac_coords"], k))
    np.testing.assert_allclose(values[1], values[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(values[2], values[0], rtol=1e-4, atol=1e-4)


def test_supercell_gives_the_same_prediction_after_standardization(oracle, structures):
    """The network reads fractional coordinates, so a supercell is a different input; the
    structure API first reduces every input to its conventional standard cell."""
    structure = structures[2]
    supercell = structure * (2, 1, 1)
    values = oracle.predict_structures([structure, supercell], batch_size=16)
    np.testing.assert_allclose(values[1], values[0], rtol=1e-4, atol=1e-4)


def test_a_diverged_cell_gets_nan_not_a_crash(oracle, structures):
    """A sampler run off to NaN (unbounded guidance does) gives a NaN row, and spglib, which
    segfaults on such a cell, is never called; the other rows are the same as alone."""
    from pymatgen.core import Lattice, Structure

    broken = Structure(Lattice(np.full((3, 3), np.nan)), ["Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    alone = oracle.predict_structures(structures[:2], batch_size=16)
    mixed = oracle.predict_structures([structures[0], broken, structures[1]], batch_size=16)
    assert np.isnan(mixed[1]).all()
    np.testing.assert_allclose(mixed[[0, 2]], alone, rtol=1e-5, atol=1e-5)


def test_gradients_wrt_coordinates_and_lattice_are_finite(oracle, structures):
    graphs = jax.tree_util.tree_map(jnp.asarray, graphs_from_structures(structures[:4]))
    from unimdm_jax.objective import clean_k

    def predicted_sum(frac_coords, k, column):
        return oracle.apply(oracle.params, graphs, frac_coords, k)[:4, column].sum()

    for column in range(len(oracle.property_names)):
        grad_x, grad_k = jax.jit(jax.grad(predicted_sum, argnums=(0, 1)), static_argnums=2)(
            graphs.nodes["frac_coords"], clean_k(graphs), column
        )
        assert np.all(np.isfinite(np.asarray(grad_x))) and np.all(np.isfinite(np.asarray(grad_k)))
        assert np.abs(np.asarray(grad_k)[:4]).max() > 0 and np.abs(np.asarray(grad_x)).max() > 0


def test_band_gap_is_never_negative(oracle, fixture_dataset):
    dataset, _ = fixture_dataset
    assert np.all(oracle.predict_dataset(dataset.select(np.arange(40)), batch_size=40)[:, 0] >= 0)


def test_training_reduces_the_loss_and_export_round_trips(fixture_dataset, tmp_path, monkeypatch):
    import csv

    import unimdm_jax.data.preprocess as preprocess
    from unimdm_jax.checkpoint import main as checkpoint_main
    from unimdm_jax.oracle import load_oracle

    dataset, _ = fixture_dataset
    # one batch = the whole set: every step sees the same 16 crystals with the same padded
    # shape (jit compiles once), and the loss logged at step s is that of the parameters
    # before update s, so step 1 is the untrained loss and step 30 the loss after 29 updates
    small = dataset.select(np.arange(16))
    monkeypatch.setattr(preprocess, "load_policy_split", lambda name, root=None, **kw: (small, []))
    config = dataclasses.replace(TINY, batch_size=16, checkpoint_every=30, log_every=1, eval_every=30)
    state = train(config, tmp_path / "run", progress=False)

    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    losses = [float(r["loss"]) for r in rows if r["split"] == "train"]
    assert len(losses) == 30 and losses[-1] < 0.8 * losses[0], losses
    assert [r for r in rows if r["split"] == "holdout"][0]["mae_band_gap"]

    assert (
        checkpoint_main(["export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "export")])
        == 0
    )
    card = json.loads((tmp_path / "export" / "model_card.json").read_text())
    assert card["task"] == "property" and "selection_mae" in card["training"]
    exported, from_workdir = load_oracle(tmp_path / "export"), load_oracle(tmp_path / "run")
    prepared = prepare_config(config, small)
    assert exported.config == from_workdir.config == prepared
    expected = Oracle(exported.model, jax.device_get(state.ema_params), prepared, {}).predict_dataset(
        small, batch_size=16
    )
    np.testing.assert_array_equal(exported.predict_dataset(small, batch_size=16), expected)
    np.testing.assert_allclose(
        from_workdir.predict_dataset(small, batch_size=16), expected, rtol=1e-5, atol=1e-6
    )


def test_shipped_oracle_beats_the_training_mean_on_the_fixture(fixture_dataset):
    """The fixture is drawn from the holdout, which the shipped oracle never trained on."""
    from unimdm_jax.oracle import load_oracle

    dataset, _ = fixture_dataset
    shipped = load_oracle()
    assert shipped.property_names == ("band_gap", "formation_energy_per_atom")
    predictions = shipped.predict_dataset(dataset, batch_size=len(dataset))  # one batch, one compile
    targets = dataset.properties[:, [dataset.property_names.index(p) for p in shipped.property_names]]
    model_mae = np.nanmean(np.abs(predictions - targets), axis=0)
    mean_mae = np.nanmean(np.abs(np.asarray(shipped.config.model.target_mean) - targets), axis=0)
    assert np.all(predictions[:, 0] >= 0)
    assert np.all(model_mae < 0.5 * mean_mae), (model_mae, mean_mae)


def test_old_diffusion_config_without_task_still_loads():
    from unimdm_jax.checkpoint import PACKAGED, config_from_dict
    from unimdm_jax.model import ModelConfig

    data = json.loads((PACKAGED / "dit_mp20_cpu" / "config.json").read_text())
    # the config as exported before the trainer had tasks (and warm starts): those keys absent
    data = {k: v for k, v in data.items() if k not in ("task", "coord_noise", "init_from")}
    config = config_from_dict(data)
    assert config.task == "diffusion" and isinstance(config.model, ModelConfig)
    assert config.model.property_ranges == ((0.0, 10.0),)
    oracle_config = dataclasses.replace(
        TINY, model=dataclasses.replace(TINY.model, target_mean=(1.0, -1.0), target_std=(1.5, 1.0))
    )
    assert config_from_dict(json.loads(json.dumps(dataclasses.asdict(oracle_config)))) == oracle_config


@pytest.mark.parametrize("case", ["missing", "corrupt", "not_an_oracle", "unknown_split"])
def test_cli_bad_input_is_one_error_line(case, tmp_path, capsys):
    from unimdm_jax.checkpoint import PACKAGED
    from unimdm_jax.oracle import main

    checkpoint, split = str(tmp_path / "missing"), "test"
    if case == "corrupt":
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not a safetensors file")
        (tmp_path / "ckpt" / "config.json").write_text("{")
        checkpoint = str(tmp_path / "ckpt")
    elif case == "not_an_oracle":
        checkpoint = str(PACKAGED / "dit_mp20_cpu")
    elif case == "unknown_split":
        split = "validation"
    assert main(["evaluate", "--checkpoint", checkpoint, "--split", split, "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_reduced_formula_keys_group_crystals_as_pymatgen_does(fixture_dataset):
    """Two crystals share a key exactly when pymatgen gives them the same reduced formula
    (whatever the number of formula units in their conventional cells)."""
    from pymatgen.core import Composition

    from unimdm_jax.oracle import reduced_formula_keys

    dataset, _ = fixture_dataset
    keys = reduced_formula_keys(dataset.atomic_numbers, dataset.num_atoms)
    offsets = dataset.atom_offsets
    formulas = []
    for start, stop in zip(offsets[:-1], offsets[1:]):
        elements, counts = np.unique(dataset.atomic_numbers[start:stop], return_counts=True)
        formulas.append(Composition({int(z): int(n) for z, n in zip(elements, counts)}).reduced_formula)
    for i in range(len(dataset)):
        for j in range(len(dataset)):
            assert (keys[i] == keys[j]) == (formulas[i] == formulas[j])
    doubled = reduced_formula_keys(np.array([8, 22, 8, 8, 22, 8, 22, 8, 8]), np.array([3, 6]))
    assert doubled[0] == doubled[1] == ((8, 2), (22, 1))


def test_polymorph_ordering_counts_pairs_by_hand():
    from unimdm_jax.oracle import polymorph_ordering

    keys = ["A", "A", "A", "B", "B", "C", "A"]
    targets = [0.0, 1.5, 3.0, 0.0, 0.5, 2.0, np.nan]  # B's pair differs by only 0.5; C is alone
    predictions = [0.0, 2.0, 1.0, 9.0, 0.0, 1.0, 5.0]
    result = polymorph_ordering(predictions, targets, keys, min_difference=1.0)
    # A's pairs (1.5 > 0), (3 > 0), (3 > 1.5): predicted 2 > 0 yes, 1 > 0 yes, 1 > 2 no
    assert result == {"ordering_accuracy": 2 / 3, "pairs": 3, "formulas": 1, "min_difference": 1.0}
    assert polymorph_ordering(predictions, targets, keys, min_difference=5.0)["ordering_accuracy"] is None
