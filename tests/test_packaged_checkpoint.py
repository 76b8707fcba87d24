"""The checkpoint shipped inside the package: small, pickle-free, documented, loadable."""

from __future__ import annotations

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax.checkpoint import PACKAGED, load_model  # noqa: E402

SHIPPED = (
    sorted(p for p in PACKAGED.iterdir() if (p / "model.safetensors").exists()) if PACKAGED.exists() else []
)


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_is_small_documented_and_runs(folder, fixture_dataset):
    from unimdm_jax import lattice
    from unimdm_jax.config import property_columns
    from unimdm_jax.data.batching import graphs_from_dataset

    assert (folder / "model.safetensors").stat().st_size < 25 * 2**20
    model, params, config, card = load_model(folder)
    for key in ("data", "training", "model"):
        assert key in card, key
    assert card["training"]["command"] and card["training"]["hardware"] and card["training"]["steps"] > 0

    dataset, _ = fixture_dataset
    graphs = jax.tree_util.tree_map(jnp.asarray, graphs_from_dataset(dataset, np.arange(4)))
    num_graphs = graphs.globals["spacegroup"].shape[0]
    columns = list(property_columns(config.model, dataset.property_names))
    k = lattice.lattice_to_k(lattice.lattice_params_to_matrix(graphs.globals["lattice_parameters"]))
    if config.task == "property":  # the property oracle: (graphs, frac_coords, k) -> (G, P)
        values = model.apply(params, graphs, graphs.nodes["frac_coords"], k)
        assert values.shape == (num_graphs, len(columns)) and np.all(np.isfinite(np.asarray(values)))
        return
    scores, eps = model.apply(
        params,
        graphs,
        graphs.nodes["frac_coords"],
        k,
        jnp.full((num_graphs,), 500),
        graphs.globals["properties"][:, columns],
        graphs.globals["property_mask"][:, columns],
    )
    assert np.all(np.isfinite(np.asarray(scores))) and np.all(np.isfinite(np.asarray(eps)))
