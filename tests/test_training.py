"""Trainer behaviour: data-parallel equivalence, resumption, learning, export round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax.config import TrainConfig  # noqa: E402
from unimdm_jax.data.batching import sharded_batch  # noqa: E402
from unimdm_jax.model import ModelConfig  # noqa: E402
from unimdm_jax.objective import DiffusionConfig  # noqa: E402
from unimdm_jax.train import init_state, make_train_step  # noqa: E402

TINY = TrainConfig(
    model=ModelConfig(hidden=32, num_layers=1, num_heads=2, num_frequencies=4),
    diffusion=DiffusionConfig(timesteps=50),
    batch_size=8,
    learning_rate=3e-3,
    warmup_steps=1,
    total_steps=100,
    fixed_budget=True,  # one compiled shape per run (the tests' time is mostly compiling)
)


def _mesh(n):
    from jax.sharding import Mesh

    return Mesh(np.asarray(jax.devices()[:n]), ("data",))


def _step_once(dataset, indices, num_shards, config=TINY, budget=None):
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = _mesh(num_shards)
    batch = sharded_batch(dataset, indices, num_shards, budget)
    model, state = init_state(config, sharded_batch(dataset, indices[:2], 1))
    step = make_train_step(model, config, (0,), mesh)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    new_state, metrics = step(state, jax.device_put(batch, NamedSharding(mesh, P("data"))))
    return jax.device_get(new_state.params), {k: float(v) for k, v in metrics.items()}


def test_two_device_step_equals_one_device_step(fixture_dataset):
    if len(jax.devices()) < 2:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=2 (set in conftest)")
    dataset, _ = fixture_dataset
    indices = np.arange(8)
    params_1, metrics_1 = _step_once(dataset, indices, 1)
    params_2, metrics_2 = _step_once(dataset, indices, 2)
    for name in ("loss", "coord_loss", "lattice_loss", "grad_norm"):
        assert metrics_2[name] == pytest.approx(metrics_1[name], rel=1e-4, abs=1e-6), name
    leaves_1, leaves_2 = jax.tree_util.tree_leaves(params_1), jax.tree_util.tree_leaves(params_2)
    for a, b in zip(leaves_1, leaves_2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_padding_to_the_largest_budget_leaves_the_step_unchanged(fixture_dataset):
    """fixed_budget pads more (one compiled shape); the padding is masked, so a step computes the
    same loss and the same new parameters as with the smallest budget that fits."""
    from unimdm_jax.data.batching import largest_budget

    dataset, _ = fixture_dataset
    indices = np.arange(8)
    params_tight, metrics_tight = _step_once(dataset, indices, 1)
    budget = largest_budget(dataset, 8)
    assert budget.nodes > sharded_batch(dataset, indices).nodes["mask"].shape[1]  # padded further
    params_loose, metrics_loose = _step_once(dataset, indices, 1, budget=budget)
    for name in ("loss", "coord_loss", "lattice_loss", "grad_norm"):
        assert metrics_loose[name] == pytest.approx(metrics_tight[name], rel=1e-4, abs=1e-6), name
    for a, b in zip(jax.tree_util.tree_leaves(params_tight), jax.tree_util.tree_leaves(params_loose)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.fixture
def four_step_config(fixture_dataset, monkeypatch):
    """A 4-step run checkpointing every 2 steps, on 48 fixture crystals as every policy split."""
    import unimdm_jax.data.preprocess as preprocess

    dataset, _ = fixture_dataset
    small = dataset.select(np.arange(48))
    monkeypatch.setattr(preprocess, "load_policy_split", lambda name, root=None, **kw: (small, []))
    return dataclasses.replace(
        TINY, total_steps=4, checkpoint_every=2, log_every=1, eval_every=1000, eval_batches=1
    )


def test_training_resumes_with_same_data_order(four_step_config, tmp_path):
    """4 steps in one go == 2 steps, a restart from the checkpoint, then 2 more; the train
    state file keeps both segments."""
    from unimdm_jax.checkpoint import TRAIN_STATE_FILE, train_state_segments
    from unimdm_jax.train import train

    config = four_step_config
    straight = train(config, tmp_path / "straight", progress=False)
    train(dataclasses.replace(config, total_steps=2), tmp_path / "resumed", progress=False)
    resumed = train(config, tmp_path / "resumed", progress=False)
    assert int(resumed.step) == int(straight.step) == 4
    for a, b in zip(jax.tree_util.tree_leaves(straight.params), jax.tree_util.tree_leaves(resumed.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) >= 5  # header + one row per step (+ eval)
    assert list((tmp_path / "resumed" / "tensorboard").iterdir()), "no TensorBoard event files"
    segments = train_state_segments(tmp_path / "resumed" / TRAIN_STATE_FILE)
    assert [(s["from_step"], s["to_step"]) for s in segments] == [(0, 2), (2, 4)]


def test_training_resumes_on_another_machine_from_the_train_state_file(four_step_config, tmp_path):
    """4 steps in one go == 2 steps, then 2 more in a new, empty work dir (another machine) that
    has only the first run's train_state.safetensors; the file keeps both segments."""
    from unimdm_jax.checkpoint import TRAIN_STATE_FILE, CheckpointError, train_state_segments
    from unimdm_jax.train import train

    config = four_step_config
    straight = train(config, tmp_path / "straight", progress=False)
    train(dataclasses.replace(config, total_steps=2), tmp_path / "first", progress=False)
    committed = tmp_path / "committed.safetensors"
    committed.write_bytes((tmp_path / "first" / TRAIN_STATE_FILE).read_bytes())
    resumed = train(
        dataclasses.replace(config, resume_from=str(committed)), tmp_path / "second", progress=False
    )
    assert int(resumed.step) == 4
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    segments = train_state_segments(tmp_path / "second" / TRAIN_STATE_FILE)
    assert [(s["from_step"], s["to_step"]) for s in segments] == [(0, 2), (2, 4)]
    wider = dataclasses.replace(
        config, model=dataclasses.replace(config.model, hidden=48), resume_from=str(committed)
    )
    with pytest.raises(CheckpointError, match="shape"):
        train(wider, tmp_path / "third", progress=False)


def test_loss_decreases_when_overfitting_a_batch(fixture_dataset):
    """A tiny model fitting one fixed batch must reduce its loss, measured before and after
    training at the same 8 fixed noise draws (so the comparison is not noise-level luck)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from unimdm_jax.objective import diffusion_loss, make_schedules

    dataset, _ = fixture_dataset
    mesh = _mesh(1)
    batch = jax.device_put(sharded_batch(dataset, np.arange(8), 1), NamedSharding(mesh, P("data")))
    model, state = init_state(TINY, batch)
    schedules = make_schedules(TINY.diffusion)
    graphs = jax.tree_util.tree_map(lambda x: x[0], batch)
    no_dropout = dataclasses.replace(TINY.diffusion, condition_dropout=0.0)

    @jax.jit
    def held_out_loss(params):
        losses = [
            diffusion_loss(params, model, graphs, jax.random.PRNGKey(1000 + i), schedules, no_dropout, (0,))[
                0
            ]
            for i in range(8)
        ]
        return jnp.mean(jnp.stack(losses))

    before = float(held_out_loss(state.params))
    step = make_train_step(model, TINY, (0,), mesh)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    for _ in range(80):
        state, _ = step(state, batch)
    after = float(held_out_loss(jax.device_get(state.params)))
    assert after < 0.8 * before, (before, after)


def test_export_and_load_round_trip(fixture_dataset, tmp_path):
    from unimdm_jax.checkpoint import CheckpointError, export, load_model

    dataset, _ = fixture_dataset
    model, state = init_state(TINY, sharded_batch(dataset, np.arange(2), 1))
    export(state.ema_params, TINY, tmp_path / "ckpt", {"data": "fixture"})
    loaded_model, params, config, card = load_model(tmp_path / "ckpt")
    assert config == TINY and card == {"data": "fixture"}
    for a, b in zip(jax.tree_util.tree_leaves(state.ema_params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), b)
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing")


def test_warm_start_copies_weights_across_properties_and_refuses_other_shapes(fixture_dataset, tmp_path):
    """init_from: a band-gap model's weights initialise a formation-energy model (its property
    embedding renamed), params and EMA equal the source, the optimizer starts at zero; a model
    of another width is refused with a one-line error."""
    from unimdm_jax.checkpoint import export, flatten
    from unimdm_jax.train import warm_start

    dataset, _ = fixture_dataset
    example = sharded_batch(dataset, np.arange(2), 1)
    source = dataclasses.replace(TINY, seed=1)
    _, trained = init_state(source, example)
    export(trained.ema_params, source, tmp_path / "bg", {"data": "fixture"})

    fm_model = dataclasses.replace(
        TINY.model, properties=("formation_energy_per_atom",), property_ranges=((-5.5, 0.5),)
    )
    fm = dataclasses.replace(TINY, model=fm_model)
    _, fresh = init_state(fm, example)
    warm = warm_start(fresh, fm, tmp_path / "bg")
    assert "property_formation_energy_per_atom" in warm.params["params"]
    expected = {
        k.replace("property_band_gap", "property_formation_energy_per_atom"): v
        for k, v in flatten(jax.device_get(trained.ema_params["params"])).items()
    }
    for params in (warm.params, warm.ema_params):
        got = flatten(jax.device_get(params["params"]))
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value)
    moments = [x for x in jax.tree_util.tree_leaves(warm.opt_state) if np.ndim(x) > 0]
    assert moments and all(not np.any(np.asarray(x)) for x in moments)

    wider = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, hidden=48))
    _, other = init_state(wider, example)
    with pytest.raises(ValueError, match="do not match"):
        warm_start(other, wider, tmp_path / "bg")


def test_a_large_train_state_is_split_into_files_under_the_limit_and_read_back(tmp_path):
    """A state over the size limit is written as a main file plus the part files it names, each
    under the limit (one array over it alone in its file); reading gives the same arrays; a later,
    smaller save removes the earlier parts; a missing part is a one-line CheckpointError."""
    from unimdm_jax.checkpoint import (
        CheckpointError,
        load_train_state,
        save_train_state,
        train_state_files,
        train_state_segments,
    )

    rng = np.random.default_rng(0)
    state = {
        "step": np.asarray(7, np.int32),
        "params": {f"w{i}": rng.normal(size=(50, 40)).astype(np.float32) for i in range(6)},  # 8,000 B each
        "big": rng.normal(size=(100, 100)).astype(np.float32),  # 40,000 B: over the limit alone
    }
    path = tmp_path / "state" / "train_state.safetensors"
    save_train_state(state, path, [{"from_step": 0, "to_step": 7}], max_file_bytes=20_000)
    files = train_state_files(path)
    assert len(files) == 4 and all(f.is_file() for f in files)  # big | w0 w1 | w2 w3 | w4 w5 step (key order)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(f.name for f in files)
    sizes = {f.name: f.stat().st_size for f in files}
    assert sum(size > 20_000 + 1_000 for size in sizes.values()) == 1, sizes  # only big's file (+ header)
    template = jax.tree_util.tree_map(np.zeros_like, state)
    loaded = load_train_state(template, path)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    assert train_state_segments(path) == [{"from_step": 0, "to_step": 7}]

    save_train_state(state, path, max_file_bytes=10**9)  # one file now: the old parts go
    assert list(path.parent.iterdir()) == [path] and train_state_files(path) == [path]
    save_train_state(state, path, max_file_bytes=20_000)
    train_state_files(path)[2].unlink()
    with pytest.raises(CheckpointError, match="names the part .* which is missing"):
        load_train_state(template, path)
