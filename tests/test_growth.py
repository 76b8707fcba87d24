"""Growing a Crystal DiT (more layers, more Fourier frequencies, twice the width) keeps its function exactly,
and the grown network can still learn through its new parts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax.checkpoint import config_from_dict  # noqa: E402
from unimdm_jax.config import load_config  # noqa: E402
from unimdm_jax.data.batching import sharded_batch  # noqa: E402
from unimdm_jax.model import CrystalDiT, ModelConfig  # noqa: E402
from unimdm_jax.model.growth import check_growable, grow_params  # noqa: E402

SMALL = ModelConfig(hidden=32, num_layers=2, num_heads=2, num_frequencies=4)
LARGE = dataclasses.replace(SMALL, num_layers=3, num_frequencies=8)


@pytest.fixture(scope="module")
def inputs(fixture_dataset):
    dataset, _ = fixture_dataset
    graphs = jax.tree_util.tree_map(lambda x: x[0], sharded_batch(dataset, np.arange(4), 1))
    num_graphs = graphs.globals["spacegroup"].shape[0]
    rng = np.random.default_rng(0)
    return (
        graphs,
        jnp.asarray(rng.uniform(size=graphs.nodes["frac_coords"].shape), jnp.float32),
        jnp.asarray(rng.normal(size=(num_graphs, 6)), jnp.float32),
        jnp.full((num_graphs,), 300),
        jnp.full((num_graphs, 1), 2.0),
        jnp.ones((num_graphs, 1), bool),
    )


def _trained_looking(params, seed):
    """Random non-zero values everywhere (a fresh init has a zero coordinate head)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [leaf + 0.1 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)]
    )


def _grow_and_check_function(inputs, large, seed=0, atol=1e-5):
    """Grow a trained-looking SMALL network into ``large``, check that it computes the same
    outputs, and return the loss gradients of the grown parameters."""
    small_params = _trained_looking(CrystalDiT(SMALL).init(jax.random.PRNGKey(0), *inputs), 1)
    coords_small, lattice_small = CrystalDiT(SMALL).apply(small_params, *inputs)
    assert float(jnp.abs(coords_small).max()) > 1e-2  # a non-trivial function to preserve

    large_init = CrystalDiT(large).init(jax.random.PRNGKey(2), *inputs)
    grown = {"params": grow_params(small_params["params"], SMALL, large_init["params"], large, seed=seed)}
    coords_large, lattice_large = CrystalDiT(large).apply(grown, *inputs)
    np.testing.assert_allclose(np.asarray(coords_large), np.asarray(coords_small), atol=atol)
    np.testing.assert_allclose(np.asarray(lattice_large), np.asarray(lattice_small), atol=atol)

    def loss(params):
        coords, lattice = CrystalDiT(large).apply(params, *inputs)
        return jnp.sum(coords**2) + jnp.sum(lattice**2)

    return jax.grad(loss)(grown)["params"]


def test_grown_network_computes_the_small_networks_function(inputs):
    # the new parts are live: the loss has a gradient in the new layer and in the new frequencies
    grads = _grow_and_check_function(inputs, LARGE)
    assert float(jnp.abs(grads["message_passing_2"]["Dense_0"]["kernel"]).max()) > 0
    assert float(jnp.abs(grads["dit_block_2"]["Dense_0"]["kernel"]).max()) > 0
    new_rows = np.asarray(grads["message_passing_0"]["from_fourier"]["kernel"])[
        4:8
    ]  # x, sin, frequencies 5..8
    assert np.abs(new_rows).max() > 0


def test_growth_refuses_what_it_cannot_preserve(inputs):
    small_params = CrystalDiT(SMALL).init(jax.random.PRNGKey(0), *inputs)["params"]
    wider = dataclasses.replace(LARGE, hidden=48)
    with pytest.raises(ValueError, match="hidden"):
        grow_params(
            small_params, SMALL, CrystalDiT(wider).init(jax.random.PRNGKey(0), *inputs)["params"], wider
        )
    narrower = dataclasses.replace(LARGE, hidden=SMALL.hidden // 2)
    with pytest.raises(ValueError, match="hidden"):
        grow_params(
            small_params, SMALL, CrystalDiT(narrower).init(jax.random.PRNGKey(0), *inputs)["params"], narrower
        )
    shallower = dataclasses.replace(SMALL, num_layers=1)
    with pytest.raises(ValueError, match="fewer"):
        grow_params(
            small_params,
            SMALL,
            CrystalDiT(shallower).init(jax.random.PRNGKey(0), *inputs)["params"],
            shallower,
        )


@pytest.mark.parametrize("factor", [2, 4])
def test_doubling_the_width_keeps_the_function_and_separates_the_copies(inputs, factor):
    wide = dataclasses.replace(LARGE, hidden=factor * SMALL.hidden)  # wider, deeper, more frequencies at once
    # the two copies of a unit get different gradients (equal shares would keep them copies)
    grads = _grow_and_check_function(inputs, wide, seed=3, atol=1e-4)
    for path in (("message_passing_0", "from_receiver"), ("dit_block_0", "Dense_1"), ("Dense_0",)):
        kernel = grads
        for part in path:
            kernel = kernel[part]
        columns = np.asarray(kernel["kernel"])
        assert np.abs(columns[:, 0::2] - columns[:, 1::2]).max() > 1e-3 * np.abs(columns).max()
    # the query copies too (their shares make the keys' gradients differ, which feeds back)
    key = np.asarray(grads["dit_block_0"]["MultiHeadDotProductAttention_0"]["key"]["kernel"])
    assert np.abs(key[..., 0::2] - key[..., 1::2]).max() > 0


GROWN_CONFIGS = ["dit_mp20_cpu_wide.py", "dit_mp20_gpu_grown.py"]


@pytest.mark.parametrize("name", GROWN_CONFIGS)
def test_grown_configs_can_grow_the_checkpoint_they_name(name):
    """The configs that grow the shipped model still fit it (a changed shipped network would
    otherwise surface hours into a run, or on a lent GPU)."""
    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "configs" / name)
    assert config.init_grow
    shipped = config_from_dict(json.loads((root / config.init_from / "config.json").read_text()))
    check_growable(shipped.model, config.model)  # raises ValueError if it cannot
    assert config.model.hidden > shipped.model.hidden
