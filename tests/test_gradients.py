"""Gradient-based property studies: property sensitivity, embedding gradients, the
property-attention ablation and classifier guidance, checked against finite differences,
closed forms and the unguided sampler."""

from __future__ import annotations

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from unimdm_jax import gradients, guidance, lattice, wyckoff  # noqa: E402
from unimdm_jax.data.batching import Budget, graphs_from_dataset  # noqa: E402
from unimdm_jax.model import CrystalDiT, ModelConfig  # noqa: E402
from unimdm_jax.objective import DiffusionConfig, make_schedules  # noqa: E402
from unimdm_jax.reverse_diffusion import K_LIMIT, sample  # noqa: E402
from unimdm_jax.segments import node_graph_index, segment_mean  # noqa: E402

TINY = ModelConfig(hidden=32, num_layers=1, num_heads=2, num_frequencies=4)
DIFFUSION = DiffusionConfig(timesteps=50)
NUM_CRYSTALS = 8
BUDGET = Budget(nodes=192, edges=4096, graphs=NUM_CRYSTALS + 1)


@pytest.fixture(scope="module", autouse=True)
def _leave_sampler_cache_as_found():
    """tests/test_reverse_diffusion.py counts the sampler's compilations: do not leave ours behind."""
    yield
    sample.clear_cache()


@pytest.fixture(scope="module")
def crystals(fixture_csv):
    """The first 8 crystals of the MP-20 fixture, symmetrized (a few seconds, not the 200)."""
    from unimdm_jax.data.io import read_rows
    from unimdm_jax.data.preprocess import symmetrize_rows

    dataset, _ = symmetrize_rows(read_rows([fixture_csv])[:NUM_CRYSTALS], workers=1, progress=False)
    assert len(dataset) == NUM_CRYSTALS
    return dataset


def _random_weights(rng):
    """Random weights for one variable, by name (numpy: ``model.init`` compiles for ~20 s on
    2 cores). Layer-norm scales 1 and biases 0; every other array N(0, 1 / fan_in), so the
    coordinate head (zero at init) is random too and all outputs depend on the inputs."""

    def draw(path, leaf):
        name = str(path[-1].key)
        if name == "scale":
            return jnp.ones(leaf.shape, leaf.dtype)
        if name == "bias":
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0]), leaf.dtype)

    return draw


@pytest.fixture(scope="module")
def tiny(crystals):
    """A tiny Crystal DiT with random weights and the denoiser's inputs for 8 fixture
    crystals at step t = 20 of 50."""
    dataset = crystals
    graphs = jax.tree_util.tree_map(
        jnp.asarray, graphs_from_dataset(dataset, np.arange(NUM_CRYSTALS), BUDGET)
    )
    model = CrystalDiT(TINY)
    num_graphs = BUDGET.graphs
    k = lattice.lattice_to_k(lattice.lattice_params_to_matrix(graphs.globals["lattice_parameters"]))
    t = jnp.full((num_graphs,), 20)
    properties = jnp.linspace(0.5, 4.5, num_graphs)[:, None]
    use_condition = jnp.ones((num_graphs, 1), bool)
    shapes = jax.eval_shape(
        model.init,
        jax.random.PRNGKey(0),
        graphs,
        graphs.nodes["frac_coords"],
        k,
        t,
        properties,
        use_condition,
    )
    params = jax.tree_util.tree_map_with_path(_random_weights(np.random.default_rng(0)), shapes)
    inputs = (graphs, graphs.nodes["frac_coords"], k, t, properties, use_condition)
    return model, params, inputs


@pytest.fixture(scope="module")
def apply(tiny):
    """The tiny model's apply, jitted once (eager Flax compiles every op for these shapes)."""
    model, _, _ = tiny
    return jax.jit(model.apply, static_argnames=("property_attention",))


def _real(graphs):
    return np.asarray(graphs.nodes["mask"]), np.asarray(graphs.globals["mask"])


def test_init_adds_no_variables_and_the_zero_perturbation_is_the_plain_network(tiny, apply):
    model, params, inputs = tiny
    graphs, x, k, t, properties, use_condition = inputs
    assert set(params) == {"params"}  # the gradient hook is not a variable of init (or of training)
    plain = apply(params, *inputs)
    zeros = jnp.zeros((k.shape[0], 1, TINY.hidden))
    hooked = apply({**params, "perturbations": {"property_tokens": zeros}}, *inputs)
    explicit = apply(params, *inputs, property_attention=True)
    for a, b, c in zip(plain, hooked, explicit):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("name", ["dit_mp20_cpu", "dit_mp20_formation_cpu"])
def test_packaged_checkpoint_outputs_do_not_depend_on_the_hooks(crystals, name):
    """On the shipped weights: a zero perturbation of the property tokens and an explicit
    property_attention=True give exactly the default outputs, and the ablation changes them."""
    from unimdm_jax.checkpoint import PACKAGED, load_model
    from unimdm_jax.config import property_columns

    folder = PACKAGED / name
    if not (folder / "model.safetensors").exists():
        pytest.skip(f"{name} is not packaged")
    dataset = crystals
    model, params, config, _ = load_model(folder)
    graphs = jax.tree_util.tree_map(jnp.asarray, graphs_from_dataset(dataset, np.arange(4)))
    num_graphs = graphs.globals["spacegroup"].shape[0]
    columns = list(property_columns(config.model, dataset.property_names))
    k = lattice.lattice_to_k(lattice.lattice_params_to_matrix(graphs.globals["lattice_parameters"]))
    inputs = (
        graphs,
        graphs.nodes["frac_coords"],
        k,
        jnp.full((num_graphs,), 500),
        graphs.globals["properties"][:, columns],
        graphs.globals["property_mask"][:, columns],
    )
    apply = jax.jit(model.apply, static_argnames="property_attention")
    plain = apply(params, *inputs)
    zeros = jnp.zeros((num_graphs, len(columns), config.model.hidden))
    hooked = apply({**params, "perturbations": {"property_tokens": zeros}}, *inputs)
    explicit = apply(params, *inputs, property_attention=True)
    ablated = apply(params, *inputs, property_attention=False)
    for a, b, c in zip(plain, hooked, explicit):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    assert not np.allclose(np.asarray(plain[1]), np.asarray(ablated[1]))


def test_property_sensitivity_matches_a_central_difference(tiny, apply):
    model, params, inputs = tiny
    graphs, x, k, t, properties, use_condition = inputs
    node_mask, graph_mask = _real(graphs)
    sensitivity = gradients.property_sensitivity(model, params, *inputs)
    assert sensitivity.coord_score.shape == (x.shape[0], 3, 1) and sensitivity.lattice_noise.shape == (
        k.shape[0],
        6,
        1,
    )

    step = 1e-2  # eV; the radial basis varies on its width (10 / 63 eV)
    plus = apply(params, graphs, x, k, t, properties + step, use_condition)
    minus = apply(params, graphs, x, k, t, properties - step, use_condition)
    for derivative, hi, lo in zip((sensitivity.coord_score, sensitivity.lattice_noise), plus, minus):
        central = (np.asarray(hi) - np.asarray(lo)) / (2 * step)
        derivative = np.asarray(derivative[..., 0])
        assert np.abs(derivative).max() > 1e-3  # the property does steer this network
        np.testing.assert_allclose(derivative, central, rtol=1e-2, atol=1e-2 * np.abs(central).max())

    # the summaries are the per-crystal RMS over real atoms and the Euclidean norm
    node_graph = np.asarray(node_graph_index(graphs.n_node, x.shape[0]))
    d_scores = np.asarray(sensitivity.coord_score[..., 0])
    for g in np.nonzero(graph_mask)[0]:
        atoms = (node_graph == g) & node_mask
        np.testing.assert_allclose(
            sensitivity.coord_norm[g, 0], np.sqrt(np.mean(np.sum(d_scores[atoms] ** 2, 1))), rtol=1e-5
        )
        np.testing.assert_allclose(
            sensitivity.lattice_norm[g, 0], np.linalg.norm(sensitivity.lattice_noise[g, :, 0]), rtol=1e-5
        )


def test_ablation_and_dropped_condition_remove_the_property_exactly(tiny, apply):
    model, params, inputs = tiny
    graphs, x, k, t, properties, use_condition = inputs
    ablated = gradients.property_sensitivity(model, params, *inputs, property_attention=False)
    dropped = gradients.property_sensitivity(
        model, params, graphs, x, k, t, properties, jnp.zeros_like(use_condition)
    )
    for sensitivity in (ablated, dropped):
        assert not np.any(np.asarray(sensitivity.coord_score)) and not np.any(
            np.asarray(sensitivity.lattice_noise)
        )

    # without the path the outputs ignore the value and whether the condition is dropped
    result = gradients.attention_ablation(model, params, *inputs)
    other = gradients.attention_ablation(model, params, graphs, x, k, t, properties + 3.0, ~use_condition)
    np.testing.assert_array_equal(
        np.asarray(result.ablated_coord_score), np.asarray(other.ablated_coord_score)
    )
    np.testing.assert_array_equal(
        np.asarray(result.ablated_lattice_noise), np.asarray(other.ablated_lattice_noise)
    )
    # ... while with it they depend on the property, and the differences say by how much
    _, graph_mask = _real(graphs)
    assert np.all(np.asarray(result.coord_difference)[graph_mask] > 0)
    np.testing.assert_allclose(
        result.lattice_difference,
        np.linalg.norm(np.asarray(result.lattice_noise - result.ablated_lattice_noise), axis=1),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(result.coord_score), np.asarray(apply(params, *inputs)[0]), rtol=1e-5, atol=1e-5
    )  # another compilation: float rounding only


def test_embedding_gradient_matches_a_directional_difference(tiny, apply):
    model, params, inputs = tiny
    graphs, x, k, t, properties, use_condition = inputs
    result = gradients.embedding_gradient(model, params, *inputs)
    assert result.gradient.shape == (k.shape[0], 1, TINY.hidden)

    def energies(perturbation):  # per-crystal sum of squared coordinate scores
        scores, _ = apply({**params, "perturbations": {"property_tokens": perturbation}}, *inputs)
        node_graph = node_graph_index(graphs.n_node, scores.shape[0])
        return np.asarray(jax.ops.segment_sum(jnp.sum(scores**2, 1), node_graph, num_segments=k.shape[0]))

    direction = jax.random.normal(jax.random.PRNGKey(2), result.gradient.shape)
    step = 1e-2
    central = (energies(step * direction) - energies(-step * direction)) / (2 * step)
    predicted = np.sum(
        np.asarray(result.gradient * direction), axis=(1, 2)
    )  # crystal g only sees its own tokens
    np.testing.assert_allclose(result.summary, energies(jnp.zeros_like(direction)), rtol=1e-6)
    np.testing.assert_allclose(predicted, central, rtol=2e-2, atol=2e-2 * np.abs(central).max())
    assert np.abs(central).max() > 0

    ablated = gradients.embedding_gradient(model, params, *inputs, property_attention=False)
    assert not np.any(np.asarray(ablated.gradient))


# --------------------------------------------------------------------------------------
# Classifier guidance with stand-in oracles of known gradient
# --------------------------------------------------------------------------------------
def _crystal_mean(values, graphs, num_graphs):
    return segment_mean(
        values, node_graph_index(graphs.n_node, values.shape[0]), num_graphs, graphs.nodes["mask"]
    )


def quadratic_oracle(params, graphs, frac_coords, k):
    """Column 0: mean_i |x_i - c|^2 + |k - m|^2; column 1: a constant (never guided)."""
    num_graphs = k.shape[0]
    coords = _crystal_mean(jnp.sum((frac_coords - params["c"]) ** 2, axis=1), graphs, num_graphs)
    value = coords + jnp.sum((k - params["m"]) ** 2, axis=1)
    return jnp.stack([jnp.zeros_like(value), value], axis=1)


def test_oracle_guidance_is_the_gradient_of_the_gaussian_log_likelihood(tiny):
    _, _, inputs = tiny
    graphs, x, k, *_ = inputs
    node_mask, graph_mask = _real(graphs)
    oracle_params = {"c": jnp.asarray([0.3, 0.5, 0.7]), "m": jnp.linspace(-0.5, 0.5, 6)}
    targets = np.linspace(0.0, 2.0, k.shape[0]).astype(np.float32)
    targets[1] = np.nan  # this crystal is left unguided
    sigma = 0.4
    guide = guidance.oracle_guidance(quadratic_oracle, oracle_params, targets, 1, sigma, keep_volume=False)
    grad_x, grad_k = jax.jit(guide)(graphs, x, k)
    # the default, volume-preserving guide is the same gradient without its k_6 (log volume) part
    kept_x, kept_k = jax.jit(guidance.oracle_guidance(quadratic_oracle, oracle_params, targets, 1, sigma))(
        graphs, x, k
    )
    np.testing.assert_array_equal(np.asarray(kept_x), np.asarray(grad_x))
    np.testing.assert_array_equal(np.asarray(kept_k)[:, :5], np.asarray(grad_k)[:, :5])
    assert not np.any(np.asarray(kept_k)[:, 5]) and np.any(np.asarray(grad_k)[:, 5])

    # closed form: d/dz [-(o - y)^2 / (2 sigma^2)] = -(o - y) / sigma^2 * do/dz
    x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
    node_graph = np.asarray(node_graph_index(graphs.n_node, x.shape[0]))
    counts = np.bincount(node_graph[node_mask], minlength=k.shape[0])
    c, m = np.asarray(oracle_params["c"], np.float64), np.asarray(oracle_params["m"], np.float64)
    value = np.bincount(node_graph[node_mask], np.sum((x[node_mask] - c) ** 2, 1), k.shape[0]) / np.maximum(
        counts, 1
    )
    value += np.sum((k - m) ** 2, 1)
    weight = np.where(graph_mask & np.isfinite(targets), -(value - np.nan_to_num(targets)) / sigma**2, 0.0)
    expected_x = (
        weight[node_graph, None] * 2 * (x - c) / np.maximum(counts, 1)[node_graph, None] * node_mask[:, None]
    )
    expected_k = weight[:, None] * 2 * (k - m)
    np.testing.assert_allclose(np.asarray(grad_x), expected_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_k), expected_k, rtol=1e-4, atol=1e-5)
    assert not np.any(np.asarray(grad_k)[1]) and np.any(np.asarray(grad_k)[0])


def test_anchor_space_gradient_is_the_chain_rule_through_the_wyckoff_operations(tiny):
    _, _, inputs = tiny
    graphs, x, *_ = inputs
    ops, anchor, node_mask = graphs.nodes["wyckoff_ops"], graphs.nodes["anchor"], graphs.nodes["mask"]
    atom_gradients = jax.random.normal(jax.random.PRNGKey(3), x.shape) * node_mask[:, None]
    moved = np.asarray(guidance.anchor_space_gradient(ops, anchor, atom_gradients))

    # the derivative of <g, x(x_a)> along each anchor's free directions, by jax.grad through apply_ops
    free = wyckoff.project_to_anchor_space(
        ops,
        jnp.arange(x.shape[0]),
        jax.grad(lambda anchors: jnp.sum(atom_gradients * wyckoff.apply_ops(ops, anchor, anchors)))(x),
    )
    np.testing.assert_allclose(
        moved, np.asarray(wyckoff.push_forward(ops, anchor, free)), rtol=1e-5, atol=1e-5
    )
    # and the result moves every orbit rigidly: atom i by R_i times its anchor's step
    np.testing.assert_allclose(
        moved, np.asarray(wyckoff.push_forward(ops, anchor, jnp.asarray(moved))), rtol=1e-5, atol=1e-5
    )


def standin_property(params, graphs, frac_coords, k):
    """a * mean_i sum_d sin^2(2 pi x_id) + b * k_6 (k_6: log volume / sqrt 3, free in every
    crystal family); periodic in x like the real oracle."""
    coords = _crystal_mean(jnp.sum(jnp.sin(2 * jnp.pi * frac_coords) ** 2, axis=1), graphs, k.shape[0])
    return (params["a"] * coords + params["b"] * k[:, 5])[:, None]


def test_classifier_guidance_steers_sampling_and_keeps_the_symmetry(tiny, crystals):
    model, params, inputs = tiny
    graphs, *_ = inputs
    dataset = crystals
    node_mask, graph_mask = _real(graphs)
    schedules = make_schedules(DIFFUSION)
    condition = jnp.full((BUDGET.graphs, 1), 1.5)
    use = jnp.ones((BUDGET.graphs, 1), bool)

    def run(classifier=None, scale=0.0, max_shift=np.inf):
        return sample(
            params,
            model,
            graphs,
            jax.random.PRNGKey(7),
            schedules,
            DIFFUSION,
            condition,
            use,
            classifier=classifier,
            classifier_scale=scale,
            classifier_max_lattice_shift=max_shift,
        )

    def guide(a, b, target, keep_volume=False):
        return guidance.oracle_guidance(
            standin_property,
            {"a": jnp.float32(a), "b": jnp.float32(b)},
            jnp.full((BUDGET.graphs,), target),
            0,
            1.0,
            keep_volume=keep_volume,
        )

    def coords_part(x, k):
        return np.asarray(standin_property({"a": 1.0, "b": 0.0}, graphs, x, k)[:, 0])[graph_mask]

    x0, k0 = run()
    # scale 0: the same chain as without a classifier (up to float rounding of another compile)
    x_zero, k_zero = run(guide(1.0, 1.0, 2.0), 0.0)
    np.testing.assert_allclose(np.asarray(x_zero), np.asarray(x0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(k_zero), np.asarray(k0), atol=1e-4)

    # lattice: guide k_6 to 2
    x_lat, k_lat = run(guide(0.0, 1.0, 2.0), 10.0)
    unguided_error = np.abs(np.asarray(k0[:, 5]) - 2.0)[graph_mask].mean()
    guided_error = np.abs(np.asarray(k_lat[:, 5]) - 2.0)[graph_mask].mean()
    assert guided_error < 0.25 * unguided_error and guided_error < 1.0
    # volume-preserving guidance (the default) cannot move k_6, the log volume / sqrt 3: a
    # property of the volume alone leaves the chain unguided
    x_kept, k_kept = run(guide(0.0, 1.0, 2.0, keep_volume=True), 10.0)
    np.testing.assert_allclose(np.asarray(k_kept), np.asarray(k0), atol=1e-4)
    np.testing.assert_allclose(np.asarray(x_kept), np.asarray(x0), atol=1e-5)

    # coordinates: guide the periodic function to its minimum 0 and to its maximum 3
    samples = {target: run(guide(1.0, 0.0, target), 100.0) for target in (0.0, 3.0)}
    low, high = coords_part(*samples[0.0]), coords_part(*samples[3.0])
    unguided = coords_part(x0, k0)
    assert np.abs(low - 0.0).mean() < np.abs(unguided - 0.0).mean()
    assert np.abs(high - 3.0).mean() < np.abs(unguided - 3.0).mean()
    assert np.all(high >= low - 1e-5) and np.sum(high - low) > 1.0

    # every guided state is still on its Wyckoff orbits and in its crystal family
    ops, anchor = graphs.nodes["wyckoff_ops"], graphs.nodes["anchor"]
    for x, k in [(x_lat, k_lat), *samples.values()]:
        x, k = np.asarray(x), np.asarray(k)
        rebuilt = np.asarray(wyckoff.apply_ops(ops, anchor, jnp.asarray(x)))
        assert np.abs((rebuilt - x + 0.5) % 1.0 - 0.5)[node_mask].max() < 1e-5
        for row in range(NUM_CRYSTALS):
            mask, bias = lattice.family_mask_and_bias(int(dataset.spacegroup[row]))
            np.testing.assert_allclose(k[row][mask == 0], bias[mask == 0], atol=1e-6)


class PointMassDenoiser(nn.Module):
    """The exact denoiser of lattices concentrated at k = 0: k_t = sqrt(1 - abar_t) eps, so
    eps_hat = k_t / sqrt(1 - abar_t); coordinate scores are zero. Linear in k, so two chains
    with the same noise differ by a deterministic recursion (see the test)."""

    alphas_cumprod: tuple

    @nn.compact
    def __call__(self, graphs, x, k, t, properties, use_condition):
        abar = jnp.asarray(self.alphas_cumprod)[t][:, None]
        return jnp.zeros_like(x), k / jnp.sqrt(1.0 - abar)


def test_lattice_guidance_shift_is_bounded_by_one_noise_norm_per_step(tiny):
    _, _, inputs = tiny
    graphs, *_ = inputs
    _, graph_mask = _real(graphs)
    schedules = make_schedules(DIFFUSION)
    ddpm = jax.tree_util.tree_map(np.asarray, schedules.ddpm)
    model = PointMassDenoiser(tuple(float(a) for a in ddpm.alphas_cumprod))
    condition, use = jnp.zeros((BUDGET.graphs, 1)), jnp.zeros((BUDGET.graphs, 1), bool)
    # a runaway pull on k_6 (the log volume), as an oracle far from its data gives
    runaway = guidance.oracle_guidance(
        standin_property,
        {"a": jnp.float32(0.0), "b": jnp.float32(1e4)},
        jnp.full((BUDGET.graphs,), 1e6),
        0,
        1.0,
        keep_volume=False,
    )
    max_shift = 0.05

    def run(classifier=None, bound=np.inf):
        _, k = sample(
            {},
            model,
            graphs,
            jax.random.PRNGKey(3),
            schedules,
            DIFFUSION,
            condition,
            use,
            classifier=classifier,
            classifier_scale=1.0,
            classifier_max_lattice_shift=bound,
        )
        return np.asarray(k[:, 5], np.float64)[graph_mask]

    unguided, held, raw = run(), run(runaway, max_shift), run(runaway)
    # With eps_hat linear in k and the same noise, d = k_guided - k_unguided follows
    #   d_{t-1} = d_t (1 - beta_t / (1 - abar_t)) / sqrt(alpha_t)
    #             + beta_t / (sqrt(alpha_t) sqrt(1 - abar_t)) shift_t,
    # and a saturated bound gives shift_t = max_shift * sqrt(free components) at every step.
    free = np.asarray(schedules.k_mask)[np.asarray(graphs.globals["spacegroup"])].sum(1)[graph_mask]
    d = np.zeros_like(unguided)
    for t in range(DIFFUSION.timesteps, 0, -1):
        beta, alpha, abar = ddpm.betas[t], ddpm.alphas[t], ddpm.alphas_cumprod[t]
        d = d * (1 - beta / (1 - abar)) / np.sqrt(alpha) + beta / (
            np.sqrt(alpha) * np.sqrt(1 - abar)
        ) * max_shift * np.sqrt(free)
    assert np.all(np.abs(unguided + d) < 0.5 * K_LIMIT)  # the closed form is not cut by the sampler's clip
    np.testing.assert_allclose(held - unguided, d, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(raw, K_LIMIT)  # unbounded, the cell runs to the clip


def orbit_pull(direction, graphs, x, k):
    """A classifier that pulls every atom along its Wyckoff operation's image of one huge vector
    (R_i d: a pull the same for all atoms, d, would cancel over most orbits: sum_i R_i = 0)."""
    pull = jnp.einsum("nij,j->ni", wyckoff.rotation(graphs.nodes["wyckoff_ops"]), direction)
    return pull, jnp.zeros(k.shape)


def test_coordinate_guidance_shift_is_bounded_per_orbit_by_one_score_norm(tiny):
    _, _, inputs = tiny
    graphs, *_ = inputs
    node_mask, _ = _real(graphs)
    schedules = make_schedules(DIFFUSION)
    model = PointMassDenoiser(tuple(float(a) for a in np.asarray(schedules.ddpm.alphas_cumprod)))
    condition, use = jnp.zeros((BUDGET.graphs, 1)), jnp.zeros((BUDGET.graphs, 1), bool)
    direction = np.array([1.0, 0.3, -0.2])
    pull = jax.tree_util.Partial(orbit_pull, jnp.asarray(1e6 * direction, jnp.float32))
    max_shift, step_lr = 0.05, 1e-5

    def run(classifier=None, bound=np.inf):
        x, _ = sample(
            {},
            model,
            graphs,
            jax.random.PRNGKey(5),
            schedules,
            DIFFUSION,
            condition,
            use,
            step_lr=step_lr,
            classifier=classifier,
            classifier_scale=1.0,
            classifier_max_coordinate_shift=bound,
        )
        return np.asarray(x, np.float64)

    unguided, held, raw = run(), run(pull, max_shift), run(pull)
    # Coordinate scores are zero and the noise is the same, so the guided chain is the unguided
    # one plus the sum of the corrector and predictor drifts of the (saturated) guidance:
    #   atom i moves by sum_t (g_t + sigma_t^2 - sigma_{t-1}^2) * max_shift sqrt(d_a sigma_norm_t) u_i,
    # u_i = R_i v_a / |v_a| with v_a the anchor's free part of the pull (the chain rule through the
    # orbit: sum_{j in orbit} R_j^T R_j d, projected) and d_a = rank R_a its free directions.
    ops, anchor = np.asarray(graphs.nodes["wyckoff_ops"], np.float64), np.asarray(graphs.nodes["anchor"])
    rotations = ops[:, :3, :3]
    pulled = (
        np.einsum("nji,nj->ni", rotations, np.einsum("nij,j->ni", rotations, direction)) * node_mask[:, None]
    )
    per_anchor = np.zeros_like(pulled)
    np.add.at(per_anchor, anchor, pulled)
    free_dims = np.array([np.linalg.matrix_rank(r, tol=1e-6) for r in rotations])
    projector = np.einsum("nij,njk->nik", rotations, np.linalg.pinv(rotations))
    v = np.einsum("nij,nj->ni", projector, per_anchor)  # anchor rows meaningful
    atom_pull = np.einsum("nij,nj->ni", rotations, v[anchor])
    anchor_norm = np.linalg.norm(atom_pull, axis=1)[anchor]
    sigmas, norms = (
        np.asarray(schedules.ve.sigmas, np.float64),
        np.asarray(schedules.ve.sigmas_norm, np.float64),
    )
    displacement = np.zeros_like(unguided)
    for t in range(DIFFUSION.timesteps, 0, -1):
        drift = step_lr * (sigmas[t] / DIFFUSION.sigma_begin) ** 2 + sigmas[t] ** 2 - sigmas[t - 1] ** 2
        scale = max_shift * np.sqrt(free_dims[anchor] * norms[t]) / np.maximum(anchor_norm, 1e-300)
        displacement += drift * scale[:, None] * atom_pull
    moving = node_mask & (anchor_norm > 1e-6)
    assert moving.sum() >= 10 and np.abs(displacement[moving]).max() > 0.02  # the test has something to check

    def periodic_difference(a, b):
        return (a - b + 0.5) % 1.0 - 0.5

    np.testing.assert_allclose(
        periodic_difference(held, unguided)[node_mask], displacement[node_mask], atol=2e-4
    )
    # unbounded, a pull of 1e6 throws the atoms around (no relation to the bounded drift), but
    # fixed sites (no free direction: inf * 0 in the bound) stay finite
    assert np.isfinite(raw[node_mask]).all()
    assert np.abs(periodic_difference(raw, unguided)[moving] - displacement[moving]).max() > 0.05
