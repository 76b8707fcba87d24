"""Gradient-based property studies of the Crystal DiT, as pure JAX functions.

- ``property_sensitivity``: d(outputs)/d(property value), forward mode (``jax.jvp``).
- ``embedding_gradient``: gradient of a scalar summary of the outputs with respect to the
  embedded property tokens (the model's ``perturbations/property_tokens`` hook).
- ``attention_ablation``: outputs with and without the property attention path.
- the classifier of classifier guidance (grad_x, grad_k of the Gaussian log-likelihood of a
  target under a property oracle) lives in ``unimdm_jax.guidance``, which the sampler uses.

Arguments follow ``CrystalDiT.__call__``: ``model`` (the Flax module, static), ``params``
(``{"params": ...}``), ``graphs`` (a padded batch), ``frac_coords`` (N, 3), ``k`` (G, 6),
``t`` (G,) int steps, ``properties`` (G, P) in physical units, ``use_condition`` (G, P) bool.
Crystals do not interact in the network (attention, message passing and pooling stay inside
a crystal), so one forward or backward pass over the batch gives every crystal's own
derivatives. Rows of padding graphs and padding atoms are meaningless.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from unimdm_jax.model.crystal_dit import PERTURBATIONS, PROPERTY_TOKENS
from unimdm_jax.segments import node_graph_index, segment_mean

__all__ = [
    "PropertySensitivity",
    "EmbeddingGradient",
    "AttentionAblation",
    "property_sensitivity",
    "embedding_gradient",
    "attention_ablation",
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
    return segment_mean(
        values, node_graph_index(graphs.n_node, values.shape[0]), num_graphs, graphs.nodes["mask"]
    )


@functools.partial(jax.jit, static_argnames=("model", "property_attention"))
def property_sensitivity(
    model, params, graphs, frac_coords, k, t, properties, use_condition, property_attention: bool = True
) -> PropertySensitivity:
    """Derivatives of both outputs with respect to each property value, by forward mode:
    one ``jax.jvp`` per property p with the tangent e_p on every crystal's value (crystals
    are independent, so the result is each crystal's d output / d y_p). Exactly zero where
    the condition is dropped (null token) or with ``property_attention=False``."""
    properties = jnp.asarray(properties, jnp.float32)

    def outputs(values):
        return model.apply(
            params, graphs, frac_coords, k, t, values, use_condition, property_attention=property_attention
        )

    def directional(tangent):
        return jax.jvp(outputs, (properties,), (tangent,))[1]

    num_properties = properties.shape[1]
    tangents = jnp.broadcast_to(
        jnp.eye(num_properties, dtype=properties.dtype)[:, None, :], (num_properties,) + properties.shape
    )  # (P, G, P): e_p on every row
    d_scores, d_eps = jax.vmap(directional)(tangents)  # (P, N, 3), (P, G, 6)
    d_scores, d_eps = jnp.moveaxis(d_scores, 0, -1), jnp.moveaxis(d_eps, 0, -1)
    num_graphs = k.shape[0]
    coord_norm = jnp.sqrt(_crystal_atom_mean(jnp.sum(d_scores**2, axis=1), graphs, num_graphs))
    return PropertySensitivity(d_scores, d_eps, coord_norm, jnp.linalg.norm(d_eps, axis=1))


@functools.partial(jax.jit, static_argnames=("model", "property_attention"))
def embedding_gradient(
    model, params, graphs, frac_coords, k, t, properties, use_condition, property_attention: bool = True
) -> EmbeddingGradient:
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
        scores, _ = model.apply(
            variables,
            graphs,
            frac_coords,
            k,
            t,
            properties,
            use_condition,
            property_attention=property_attention,
        )
        per_crystal = jax.ops.segment_sum(
            jnp.sum(scores**2, axis=1),
            node_graph_index(graphs.n_node, scores.shape[0]),
            num_segments=num_graphs,
        )  # padding atoms score 0 (masked head)
        return jnp.sum(per_crystal), per_crystal

    gradient, summary = jax.grad(total_energy, has_aux=True)(zeros)
    return EmbeddingGradient(summary, gradient)


@functools.partial(jax.jit, static_argnames=("model",))
def attention_ablation(
    model, params, graphs, frac_coords, k, t, properties, use_condition
) -> AttentionAblation:
    """The outputs with and without the property attention path (``property_attention``
    False masks the property tokens out of every block's attention) and how far apart they
    are per crystal: how much the property steers the denoiser at step t."""
    scores, eps = model.apply(params, graphs, frac_coords, k, t, properties, use_condition)
    ablated_scores, ablated_eps = model.apply(
        params, graphs, frac_coords, k, t, properties, use_condition, property_attention=False
    )
    coord_difference = jnp.sqrt(
        _crystal_atom_mean(jnp.sum((scores - ablated_scores) ** 2, axis=1), graphs, k.shape[0])
    )
    return AttentionAblation(
        scores, eps, ablated_scores, ablated_eps, coord_difference, jnp.linalg.norm(eps - ablated_eps, axis=1)
    )
