"""Gradient-based property studies of the Crystal DiT (issue 5), as pure JAX functions.

- ``property_sensitivity``: d(outputs)/d(property value), forward mode (``jax.jvp``).
- ``embedding_gradient``: gradient of a scalar summary of the outputs with respect to the
  embedded property tokens (the model's ``perturbations/property_tokens`` hook).
- ``attention_ablation``: outputs with and without the property attention path.
- ``oracle_guidance``: grad_x, grad_k of the Gaussian log-likelihood of a target under a
  property oracle, the classifier of classifier guidance (``sampler.sample(classifier=...)``).

Arguments follow ``CrystalDiT.__call__``: ``model`` (the Flax module, static), ``params``
(``{"params": ...}``), ``graphs`` (a padded batch), ``frac_coords`` (N, 3), ``k`` (G, 6),
``t`` (G,) int steps, ``properties`` (G, P) in physical units, ``use_condition`` (G, P) bool.
Crystals do not interact in the network (attention, message passing and pooling stay inside
a crystal), so one forward or backward pass over the batch gives every crystal's own
derivatives. Rows of padding graphs and padding atoms are meaningless.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from unimdm_jax import lattice, wyckoff
from unimdm_jax.model.crystal_dit import PERTURBATIONS, PROPERTY_TOKENS, node_graph_index

__all__ = [
    "PropertySensitivity",
    "EmbeddingGradient",
    "AttentionAblation",
    "property_sensitivity",
    "embedding_gradient",
    "attention_ablation",
    "oracle_guidance",
    "gaussian_log_likelihood_gradients",
    "anchor_space_gradient",
]


class PropertySensitivity(NamedTuple):
    coord_score: jax.Array  # (N, 3, P) d s_theta(x)_i / d y_p (the network's normalised score)
    lattice_noise: jax.Array  # (G, 6, P) d eps_theta / d y_p
    coord_norm: jax.Array  # (G, P) sqrt(mean over the crystal's atoms of |d s_i / d y_p|^2)
    lattice_norm: jax.Array  # (G, P) |d eps / d y_p|


class EmbeddingGradient(NamedTuple):
    summary: jax.Array  # (G,) sum over the crystal's atoms of |s_theta(x)_i|^2
    gradient: jax.Array  # (G, P, D) d summary_g / d (property tokens of crystal g)


class AttentionAblation(NamedTuple):
    coord_score: jax.Array  # (N, 3) with the property attention path
    lattice_noise: jax.Array  # (G, 6)
    ablated_coord_score: jax.Array  # (N, 3) property tokens masked out of the attention
    ablated_lattice_noise: jax.Array  # (G, 6)
    coord_difference: jax.Array  # (G,) sqrt(mean over the crystal's atoms of |s_i - s_i^ablated|^2)
    lattice_difference: jax.Array  # (G,) |eps - eps^ablated|


def _crystal_atom_mean(values, graphs, num_graphs: int):
    """Mean over each crystal's real atoms of per-atom values (N, ...) -> (G, ...)."""
    mask = graphs.nodes["mask"].astype(values.dtype).reshape((-1,) + (1,) * (values.ndim - 1))
    node_graph = node_graph_index(graphs.n_node, values.shape[0])
    total = jax.ops.segment_sum(values * mask, node_graph, num_segments=num_graphs)
    count = jax.ops.segment_sum(mask, node_graph, num_segments=num_graphs)
    return total / jnp.maximum(count, 1.0)


@functools.partial(jax.jit, static_argnames=("model", "property_attention"))
def property_sensitivity(model, params, graphs, frac_coords, k, t, properties, use_condition,
                         property_attention: bool = True) -> PropertySensitivity:
    """Derivatives of both outputs with respect to each property value, by forward mode:
    one ``jax.jvp`` per property p with the tangent e_p on every crystal's value (crystals
    are independent, so the result is each crystal's d output / d y_p). Exactly zero where
    the condition is dropped (null token) or with ``property_attention=False``."""
    properties = jnp.asarray(properties, jnp.float32)

    def outputs(values):
        return model.apply(params, graphs, frac_coords, k, t, values, use_condition,
                           property_attention=property_attention)

    def directional(tangent):
        return jax.jvp(outputs, (properties,), (tangent,))[1]

    num_properties = properties.shape[1]
    tangents = jnp.broadcast_to(jnp.eye(num_properties, dtype=properties.dtype)[:, None, :],
                                (num_properties,) + properties.shape)  # (P, G, P): e_p on every row
    d_scores, d_eps = jax.vmap(directional)(tangents)  # (P, N, 3), (P, G, 6)
    d_scores, d_eps = jnp.moveaxis(d_scores, 0, -1), jnp.moveaxis(d_eps, 0, -1)
    num_graphs = k.shape[0]
    coord_norm = jnp.sqrt(_crystal_atom_mean(jnp.sum(d_scores**2, axis=1), graphs, num_graphs))
    return PropertySensitivity(d_scores, d_eps, coord_norm, jnp.linalg.norm(d_eps, axis=1))


@functools.partial(jax.jit, static_argnames=("model", "property_attention"))
def embedding_gradient(model, params, graphs, frac_coords, k, t, properties, use_condition,
                       property_attention: bool = True) -> EmbeddingGradient:
    """Gradient of each crystal's coordinate-score energy with respect to its embedded
    property tokens (after the null-token substitution, so a dropped condition gives the
    gradient with respect to the null token).

    Summary: E_g = sum_{i in g} |s_theta(x)_i|^2, the squared norm of the network's
    (normalised) coordinate score over the crystal's atoms, i.e. how hard the denoiser pushes
    the atoms at step t. dE_g / d tokens is read from the model's perturbation hook
    (``perturbations/property_tokens``, evaluated at zero); since crystals do not interact,
    the gradient of sum_g E_g with respect to crystal g's tokens is dE_g / d tokens_g."""
    num_graphs = k.shape[0]
    hidden = model.config.hidden
    zeros = jnp.zeros((num_graphs, properties.shape[1], hidden), jnp.float32)

    def total_energy(perturbation):
        variables = {**params, PERTURBATIONS: {PROPERTY_TOKENS: perturbation}}
        scores, _ = model.apply(variables, graphs, frac_coords, k, t, properties, use_condition,
                                property_attention=property_attention)
        per_crystal = jax.ops.segment_sum(jnp.sum(scores**2, axis=1), node_graph_index(graphs.n_node, scores.shape[0]),
                                          num_segments=num_graphs)  # padding atoms score 0 (masked head)
        return jnp.sum(per_crystal), per_crystal

    gradient, summary = jax.grad(total_energy, has_aux=True)(zeros)
    return EmbeddingGradient(summary, gradient)


@functools.partial(jax.jit, static_argnames=("model",))
def attention_ablation(model, params, graphs, frac_coords, k, t, properties, use_condition) -> AttentionAblation:
    """The outputs with and without the property attention path (``property_attention``
    False masks the property tokens out of every block's attention) and how far apart they
    are per crystal: how much the property steers the denoiser at step t."""
    scores, eps = model.apply(params, graphs, frac_coords, k, t, properties, use_condition)
    ablated_scores, ablated_eps = model.apply(params, graphs, frac_coords, k, t, properties, use_condition,
                                              property_attention=False)
    coord_difference = jnp.sqrt(_crystal_atom_mean(jnp.sum((scores - ablated_scores) ** 2, axis=1), graphs,
                                                   k.shape[0]))
    return AttentionAblation(scores, eps, ablated_scores, ablated_eps, coord_difference,
                             jnp.linalg.norm(eps - ablated_eps, axis=1))


# --------------------------------------------------------------------------------------
# Classifier guidance
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _GaussianOracleGradients:
    """grad_{x, k} log p(y | x, k) for p(y | x, k) = N(y; oracle(x, k)_p, sigma^2), with
    the oracle's function and column static (a hashable value: guidance with the same
    ``oracle_apply`` object and column shares one compiled sampler); the arrays come in as
    arguments (``Partial`` leaves)."""

    oracle_apply: Callable[..., Any]
    property_index: int
    keep_volume: bool = True

    def __call__(self, oracle_params, targets, sigma, graphs, frac_coords, k):
        grad_x, grad_k = gaussian_log_likelihood_gradients(self.oracle_apply, oracle_params, targets,
                                                           self.property_index, sigma, graphs, frac_coords, k)
        if self.keep_volume:
            grad_k = lattice.without_volume_change(grad_k)
        return grad_x, grad_k


def gaussian_log_likelihood_gradients(oracle_apply, oracle_params, targets, property_index: int, sigma,
                                      graphs, frac_coords, k):
    """(grad_x (N, 3), grad_k (G, 6)) of

        log p(y | x, k) = - sum_g (oracle(x, k)_{g, p} - y_g)^2 / (2 sigma^2),

    the sum running over real crystals with a finite target (NaN target = no guidance for
    that crystal; padding graphs are excluded through ``globals['mask']``)."""
    targets = jnp.asarray(targets, jnp.float32)
    guided = jnp.isfinite(targets) & graphs.globals["mask"]
    safe_targets = jnp.where(guided, targets, 0.0)  # keeps NaN out of the unselected branch's gradient

    def log_likelihood(x, lattice_k):
        predicted = oracle_apply(oracle_params, graphs, x, lattice_k)[:, property_index]
        residual = jnp.where(guided, predicted - safe_targets, 0.0)
        return -jnp.sum(residual**2) / (2.0 * sigma**2)

    return jax.grad(log_likelihood, argnums=(0, 1))(frac_coords, k)


def anchor_space_gradient(ops, anchor, atom_gradients):
    """Per-atom gradients of a function of all atom positions, turned into the gradient with
    respect to the coordinates the diffusion moves (each orbit's anchor, within its free
    directions), pushed back to the atoms so the result satisfies the Wyckoff constraints.

    Chain rule through x_i = R_i x_a + t_i: d f / d x_a = P_a sum_{i: a(i) = a} R_i^T g_i, with
    P_a = R_a R_a^+ the projector onto the anchor's free directions; atom i moves by R_i times
    that. The network's score is the score of the anchor's noise, so this is the term the
    classifier adds to it (D&N 2021: grad log p(x | y) = grad log p(x) + grad log p(y | x), both
    in the anchor coordinates). For an orbit of m atoms in general position (orthogonal R_i)
    it is m times ``wyckoff.symmetrize(g)``, the orbit-mean projection."""
    num_nodes = atom_gradients.shape[0]
    pulled = jnp.einsum("nji,nj->ni", wyckoff.rotation(ops), atom_gradients)  # R_i^T g_i
    per_anchor = jax.ops.segment_sum(pulled, anchor, num_segments=num_nodes)
    free = wyckoff.project_to_anchor_space(ops, jnp.arange(num_nodes), per_anchor)  # P_a on anchor rows
    return wyckoff.push_forward(ops, anchor, free)


def oracle_guidance(oracle_apply, oracle_params, targets, property_index: int, sigma,
                    keep_volume: bool = True) -> jax.tree_util.Partial:
    """The classifier of classifier guidance for one oracle property.

    ``oracle_apply(params, graphs, frac_coords, k) -> (G, P)`` is the oracle's pure apply
    function (e.g. ``PropertyOracle(config).apply``); ``targets`` (G,) the wanted values of
    column ``property_index`` (NaN: leave that crystal unguided); ``sigma`` the width of the
    Gaussian likelihood (the oracle's error scale: smaller = stronger guidance).

    ``keep_volume`` (default): the lattice gradient loses its volume component
    (``lattice.without_volume_change``), so guidance may reshape the cell and move the atoms
    but leaves the density to the diffusion model. Without it, a pull toward a wide band gap is
    most cheaply met by inflating the cell (isolated atoms), where the oracle, trained on
    MP-20 densities, no longer says anything true (benchmarks/README.md, property hit).

    Returns ``guide(graphs, frac_coords, k) -> (grad_x (N, 3), grad_k (G, 6))``, see
    ``gaussian_log_likelihood_gradients``. It is a ``jax.tree_util.Partial`` whose leaves are
    ``oracle_params``, ``targets`` and ``sigma``: pass it to ``sampler.sample(classifier=...)``
    as a traced argument, so new targets or parameters do not trigger a recompile."""
    function = _GaussianOracleGradients(oracle_apply, int(property_index), bool(keep_volume))
    return jax.tree_util.Partial(function, oracle_params, jnp.asarray(targets, jnp.float32),
                                 jnp.asarray(sigma, jnp.float32))
