"""Sampler behaviour: Wyckoff constraints and crystal families hold exactly, one compile
per padded shape, and jit/vmap/grad work on the denoiser."""

from __future__ import annotations

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax import lattice, wyckoff  # noqa: E402
from unimdm_jax.config import TrainConfig  # noqa: E402
from unimdm_jax.data.batching import Budget, graphs_from_dataset, sharded_batch  # noqa: E402
from unimdm_jax.model import ModelConfig  # noqa: E402
from unimdm_jax.objective import DiffusionConfig, make_schedules  # noqa: E402
from unimdm_jax.reverse_diffusion import sample  # noqa: E402
from unimdm_jax.train import init_state  # noqa: E402

CONFIG = TrainConfig(
    model=ModelConfig(hidden=32, num_layers=1, num_heads=2, num_frequencies=4),
    diffusion=DiffusionConfig(timesteps=30),
)


@pytest.fixture(scope="module")
def sampled(fixture_dataset):
    dataset, _ = fixture_dataset
    model, state = init_state(CONFIG, sharded_batch(dataset, np.arange(2), 1))
    budget = Budget(nodes=1024, edges=24576, graphs=33)
    # Count only this fixture's compilations: other test modules (any order) sample too.
    sample.clear_cache()
    schedules = make_schedules(CONFIG.diffusion)
    outputs = []
    for start in (0, 32):
        indices = np.arange(start, start + 32)
        graphs = jax.tree_util.tree_map(jnp.asarray, graphs_from_dataset(dataset, indices, budget))
        condition = jnp.ones((33, 1)) * 1.5
        x, k = sample(
            state.params,
            model,
            graphs,
            jax.random.PRNGKey(start),
            schedules,
            CONFIG.diffusion,
            condition,
            jnp.ones((33, 1), bool),
            guidance_scale=0.5,
        )
        outputs.append((indices, graphs, np.asarray(x), np.asarray(k)))
    return dataset, outputs


def test_samples_satisfy_wyckoff_constraints_exactly(sampled):
    dataset, outputs = sampled
    for _indices, graphs, x, _ in outputs:
        nodes = graphs.nodes
        rebuilt = np.asarray(wyckoff.apply_ops(nodes["wyckoff_ops"], nodes["anchor"], jnp.asarray(x)))
        mask = np.asarray(nodes["mask"])
        gap = np.abs((rebuilt - x + 0.5) % 1.0 - 0.5)[mask]
        assert gap.max() < 1e-5
        assert np.all((x[mask] >= 0) & (x[mask] < 1))


def test_sampled_lattices_belong_to_the_crystal_family(sampled):
    dataset, outputs = sampled
    for indices, _, _, k in outputs:
        for row, i in enumerate(indices):
            mask, bias = lattice.family_mask_and_bias(int(dataset.spacegroup[i]))
            np.testing.assert_allclose(k[row][mask == 0], bias[mask == 0], atol=1e-6)


def test_sampler_compiles_once_per_padded_shape(sampled):
    assert sample._cache_size() == 1


def test_denoiser_supports_jit_vmap_and_grad(fixture_dataset):
    dataset, _ = fixture_dataset
    model, state = init_state(CONFIG, sharded_batch(dataset, np.arange(2), 1))
    graphs = jax.tree_util.tree_map(jnp.asarray, graphs_from_dataset(dataset, np.arange(4)))
    num_graphs = graphs.globals["spacegroup"].shape[0]
    k = lattice.lattice_to_k(lattice.lattice_params_to_matrix(graphs.globals["lattice_parameters"]))
    t = jnp.full((num_graphs,), 10)

    def lattice_output(band_gap):
        _, eps = model.apply(
            state.params,
            graphs,
            graphs.nodes["frac_coords"],
            k,
            t,
            jnp.full((num_graphs, 1), band_gap),
            jnp.ones((num_graphs, 1), bool),
        )
        return eps[0].sum()

    gradient = jax.jit(jax.grad(lattice_output))(2.0)
    assert np.isfinite(gradient)
    batched = jax.vmap(lattice_output)(jnp.linspace(0.0, 4.0, 3))
    assert batched.shape == (3,) and np.all(np.isfinite(batched))


def test_respaced_sampling_is_the_same_chain_at_full_length_and_stays_on_the_orbits(fixture_dataset):
    from unimdm_jax.objective import respace_schedules

    dataset, _ = fixture_dataset
    model, state = init_state(CONFIG, sharded_batch(dataset, np.arange(2), 1))
    indices = np.arange(8)
    graphs = jax.tree_util.tree_map(jnp.asarray, graphs_from_dataset(dataset, indices, Budget(256, 4096, 9)))
    schedules = make_schedules(CONFIG.diffusion)
    condition, use = jnp.ones((9, 1)), jnp.ones((9, 1), bool)
    args = (state.params, model, graphs, jax.random.PRNGKey(3))
    plain = sample(*args, schedules, CONFIG.diffusion, condition, use)
    same = sample(
        *args, respace_schedules(schedules, CONFIG.diffusion.timesteps), CONFIG.diffusion, condition, use
    )
    for a, b in zip(plain, same):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x, _ = sample(*args, respace_schedules(schedules, 10), CONFIG.diffusion, condition, use)
    rebuilt = np.asarray(wyckoff.apply_ops(graphs.nodes["wyckoff_ops"], graphs.nodes["anchor"], x))
    mask = np.asarray(graphs.nodes["mask"])
    assert np.abs((rebuilt - np.asarray(x) + 0.5) % 1.0 - 0.5)[mask].max() < 1e-5
