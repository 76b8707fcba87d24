"""The message function's variants: the projected form is the reference's per-edge MLP on the
concatenation (the same function), invariances hold for every variant, and the network
without attention still conditions on the property."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax.data.batching import sharded_batch  # noqa: E402
from unimdm_jax.model import CrystalDiT, ModelConfig  # noqa: E402
from unimdm_jax.model.message_passing import CrystalMessagePassing  # noqa: E402

REFERENCE_EDGE = dict(message_layers=2, num_frequencies=8, first_frequency=0)


def _fully_connected(n):
    senders, receivers = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    keep = senders != receivers
    return jnp.asarray(senders[keep]), jnp.asarray(receivers[keep])


@pytest.fixture(scope="module")
def layer_inputs():
    rng = np.random.default_rng(0)
    n, hidden = 5, 16
    senders, receivers = _fully_connected(n)
    return dict(
        h=jnp.asarray(rng.normal(size=(n, hidden)), jnp.float32),
        frac_coords=jnp.asarray(rng.uniform(size=(n, 3)), jnp.float32),
        k_per_node=jnp.asarray(np.tile(rng.normal(size=(1, 6)), (n, 1)), jnp.float32),
        senders=senders,
        receivers=receivers,
        edge_mask=jnp.ones(senders.shape, bool),
    )


def test_two_layer_message_is_the_reference_mlp_on_the_concatenation(layer_inputs):
    """Written out as DiffCSP's CSPLayer does it: concatenate [h_i, h_j, k, psi_FT(0..n-1)] per
    edge, Linear, SiLU, Linear, SiLU, mean over senders; the projected layer gives the same."""
    layer = CrystalMessagePassing(16, num_frequencies=8, message_layers=2, first_frequency=0)
    inputs = layer_inputs
    params = layer.init(jax.random.PRNGKey(1), **inputs)
    ours = layer.apply(params, **inputs)

    p = params["params"]
    mean, var = inputs["h"].mean(-1, keepdims=True), inputs["h"].var(-1, keepdims=True)
    h_norm = (inputs["h"] - mean) / np.sqrt(var + 1e-6) * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
    s, r = np.asarray(inputs["senders"]), np.asarray(inputs["receivers"])
    delta = np.mod(np.asarray(inputs["frac_coords"])[s] - np.asarray(inputs["frac_coords"])[r], 1.0)
    angles = 2 * np.pi * delta[..., None] * np.arange(0, 8)  # frequencies 0..7
    fourier = np.concatenate([np.sin(angles), np.cos(angles)], -1).reshape(len(s), -1)
    concat = np.concatenate(
        [np.asarray(h_norm)[r], np.asarray(h_norm)[s], np.asarray(inputs["k_per_node"])[r], fourier], -1
    )
    w1 = np.concatenate(
        [
            p["from_receiver"]["kernel"],
            p["from_sender"]["kernel"],
            p["from_lattice"]["kernel"],
            p["from_fourier"]["kernel"],
        ],
        0,
    )
    silu = lambda x: x / (1 + np.exp(-x))  # noqa: E731
    m = silu(concat @ w1 + p["from_receiver"]["bias"])
    m = silu(m @ p["message_1"]["kernel"] + p["message_1"]["bias"])
    n = inputs["h"].shape[0]
    aggregated = np.stack([m[r == i].mean(0) for i in range(n)])
    aggregated = aggregated @ p["message_out"]["kernel"] + p["message_out"]["bias"]
    # flax names the update's outer Dense first (Dense_0), the inner one second (Dense_1)
    hidden = silu(np.concatenate([h_norm, aggregated], -1) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    expected = np.asarray(inputs["h"]) + hidden @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("variant", [{}, REFERENCE_EDGE])
def test_every_variant_is_invariant_to_periodic_translation_and_permutation(layer_inputs, variant):
    layer = CrystalMessagePassing(16, **{"num_frequencies": 4, **variant})
    inputs = layer_inputs
    params = layer.init(jax.random.PRNGKey(2), **inputs)
    base = np.asarray(layer.apply(params, **inputs))
    shifted = dict(inputs, frac_coords=jnp.mod(inputs["frac_coords"] + jnp.asarray([0.37, -0.61, 2.2]), 1.0))
    np.testing.assert_allclose(np.asarray(layer.apply(params, **shifted)), base, atol=2e-5)
    order = np.asarray([3, 0, 4, 1, 2])
    inverse = np.argsort(order)
    permuted = dict(
        inputs,
        h=inputs["h"][order],
        frac_coords=inputs["frac_coords"][order],
        senders=jnp.asarray(inverse)[inputs["senders"]],
        receivers=jnp.asarray(inverse)[inputs["receivers"]],
    )
    np.testing.assert_allclose(np.asarray(layer.apply(params, **permuted)), base[order], atol=2e-5)


def test_network_without_attention_has_no_attention_block_and_still_reads_the_property(fixture_dataset):
    dataset, _ = fixture_dataset
    config = ModelConfig(hidden=32, num_layers=2, num_heads=2, attention=False, **REFERENCE_EDGE)
    graphs = jax.tree_util.tree_map(lambda x: x[0], sharded_batch(dataset, np.arange(4), 1))
    model = CrystalDiT(config)
    num_graphs = graphs.globals["spacegroup"].shape[0]
    args = (graphs, graphs.nodes["frac_coords"], jnp.zeros((num_graphs, 6)), jnp.full((num_graphs,), 500))
    cond = jnp.ones((num_graphs, 1), bool)
    params = model.init(jax.random.PRNGKey(0), *args, jnp.zeros((num_graphs, 1)), cond)
    assert not any(name.startswith("dit_block") for name in params["params"])
    _, low = model.apply(params, *args, jnp.full((num_graphs, 1), 0.5), cond)  # lattice noise: the coordinate
    # head starts at zero
    _, high = model.apply(params, *args, jnp.full((num_graphs, 1), 6.0), cond)
    assert float(jnp.abs(low - high).max()) > 1e-6
    with_attention = CrystalDiT(dataclasses.replace(config, attention=True))
    assert any(
        name.startswith("dit_block")
        for name in with_attention.init(jax.random.PRNGKey(0), *args, jnp.zeros((num_graphs, 1)), cond)[
            "params"
        ]
    )
