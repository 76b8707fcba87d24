"""Predictor-corrector sampling of the Wyckoff-constrained diffusion (DiffCSP Alg. 2,
DiffCSP++ sec. 4.2) as one jitted ``jax.lax.scan`` over the T steps.

At every step t (from T down to 1):

1. corrector: one annealed Langevin step on the coordinates with the score at sigma_t;
2. predictor: one ancestral VE step on the coordinates and one DDPM step on the k-vector.

Scores are symmetrized over each Wyckoff orbit and noise is drawn on the anchors and pushed
to their orbits, so every intermediate state satisfies the space group's constraints
exactly; the k-vector is projected onto the crystal family after every step. Classifier-free
guidance combines conditional and unconditional outputs as (1 + w) cond - w uncond
(Ho & Salimans 2022), with w = ``guidance_scale`` (0: plain conditional sampling).

Classifier guidance (Dhariwal & Nichol 2021) with a differentiable property oracle: given
``classifier(graphs, x, k) -> (grad_x log p(y | x, k) (N, 3), grad_k log p(y | x, k) (G, 6))``
(e.g. ``unimdm_jax.guidance.oracle_guidance``) and a scale s, at every network evaluation

- coordinates: score_hat = S(sqrt(sigma_norm_t) s_theta) + s A(grad_x), with S the Wyckoff
  symmetrization of the network's score and A the chain rule of grad_x to the anchors' free
  coordinates, pushed to the orbits (``guidance.anchor_space_gradient``): both are scores of
  the anchors, the variables the diffusion moves, and the state stays on the orbits;
- lattice: eps_hat' = eps_hat - s sqrt(1 - abar_t) grad_k (D&N eq. 14, the DDPM form of
  their Algorithm 2), then masked to the crystal family's free components as eps_hat is.
  The shift is bounded per crystal: its norm is at most ``classifier_max_lattice_shift``
  times sqrt(number of free components), the expected norm of the unit Gaussian noise the
  network predicts. An oracle's gradient is largest far from the data it was trained on,
  and unbounded, one DDPM step moves k by beta_t s grad_k: with s = 10 and sigma = 0.5 eV the
  lattice of MP-20 test crystals ran off to 129 x 9 x 0.03 A cells (benchmarks/README.md).
  ``jnp.inf`` removes the bound.
- the coordinate term is bounded the same way, per Wyckoff orbit: the anchor's shift
  s A(grad_x) has norm at most ``classifier_max_coordinate_shift`` times
  sqrt(d_a sigma_norm_t), the expected norm of the wrapped-normal score of an anchor with
  d_a free directions (sigma_norm_t = E|score|^2 per direction), and every atom of the
  orbit is scaled by its anchor's factor, so the orbit stays consistent. Unbounded, the
  oracle's gradient between two close atoms pulled them onto each other (0.006 A apart,
  benchmarks/README.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from unimdm_jax import diffusion, lattice, wyckoff
from unimdm_jax.guidance import anchor_space_gradient
from unimdm_jax.objective import DiffusionConfig, Schedules

K_LIMIT = 10.0
#: Default bound of the classifier's lattice shift, in noise norms per step (module docstring).
MAX_LATTICE_SHIFT = 1.0
#: Default bound of the classifier's coordinate shift, in score norms per orbit (module docstring).
MAX_COORDINATE_SHIFT = 1.0


def _shrink_to(norm, limit):
    """The factor that scales a vector of length ``norm`` to at most ``limit`` (1 when it is
    within; a ``where``, not a min, so an unbounded limit times zero free directions, inf * 0 =
    NaN, leaves the vector alone instead of turning it NaN)."""
    return jnp.where(norm > limit, limit / jnp.maximum(norm, 1e-12), 1.0)


def _denoise(model, params, graphs, x, k, t_graph, properties, use_condition, guidance_scale):
    """Network outputs, with classifier-free guidance when guidance_scale != 0."""
    conditional = model.apply(params, graphs, x, k, t_graph, properties, use_condition)
    if guidance_scale == 0.0:
        return conditional
    unconditional = model.apply(params, graphs, x, k, t_graph, properties, jnp.zeros_like(use_condition))
    return jax.tree_util.tree_map(
        lambda c, u: (1.0 + guidance_scale) * c - guidance_scale * u, conditional, unconditional
    )


@functools.partial(jax.jit, static_argnames=("model", "config", "guidance_scale", "step_lr"))
def sample(
    params,
    model,
    graphs,
    key,
    schedules: Schedules,
    config: DiffusionConfig,
    properties,
    use_condition,
    guidance_scale: float = 0.0,
    step_lr: float = 1e-5,
    classifier=None,
    classifier_scale=0.0,
    classifier_max_lattice_shift=MAX_LATTICE_SHIFT,
    classifier_max_coordinate_shift=MAX_COORDINATE_SHIFT,
):
    """Sample coordinates and lattices for a padded batch whose composition, Wyckoff
    operations and space groups are given. Returns ``(frac_coords (N, 3), k (G, 6))``.

    ``classifier``: None (no classifier guidance: the sampler is exactly the unguided one)
    or a ``jax.tree_util.Partial`` computing ``(graphs, x, k) -> (grad_x (N, 3), grad_k (G, 6))``
    of log p(y | x, k), as ``guidance.oracle_guidance`` returns. It is a traced pytree
    argument: its arrays (oracle parameters, targets) can change without recompiling, and
    only the wrapped function is part of the compilation key (wrap a plain function as
    ``Partial(fn)``). ``classifier_scale`` s (traced): the weight of its gradient;
    ``classifier_max_lattice_shift`` and ``classifier_max_coordinate_shift`` (traced): the
    bounds on its lattice and coordinate terms (module docstring; ``jnp.inf``: unbounded)."""
    nodes, glob = graphs.nodes, graphs.globals
    ops, ops_pinv, anchor = nodes["wyckoff_ops"], nodes["ops_rotation_pinv"], nodes["anchor"]
    num_graphs = glob["spacegroup"].shape[0]
    node_mask = nodes["mask"][:, None]
    k_mask, k_bias = schedules.k_mask[glob["spacegroup"]], schedules.k_bias[glob["spacegroup"]]
    sigmas, norms = schedules.ve.sigmas, schedules.ve.sigmas_norm
    # free directions of each atom's anchor: trace of the projector R_a R_a^+
    anchor_free_dims = jnp.einsum("nij,nji->n", wyckoff.rotation(ops), ops_pinv)[anchor]

    init_key, loop_key = jax.random.split(key)
    x_key, k_key = jax.random.split(init_key)
    x = wyckoff.random_anchor_coords(x_key, ops, anchor)
    k = lattice.project_k(jax.random.normal(k_key, (num_graphs, 6)), k_mask, k_bias)

    def symmetric_score(atom_scores, t):
        scale = jnp.sqrt(norms[t])  # the network predicts the score / sqrt(sigma_norm)
        return wyckoff.symmetrize(ops, ops_pinv, anchor, atom_scores) * scale * node_mask

    def guided(x, k, t, atom_scores, eps_hat):
        """The (unnormalised, symmetrized) coordinate score and the lattice noise, with the
        classifier's gradients added when there is a classifier (module docstring)."""
        score = symmetric_score(atom_scores, t)
        if classifier is None:
            return score, eps_hat
        grad_x, grad_k = classifier(graphs, x, k)
        coordinate_shift = (
            classifier_scale * anchor_space_gradient(ops, anchor, grad_x * node_mask) * node_mask
        )
        anchor_norm = jnp.linalg.norm(coordinate_shift, axis=-1)[anchor]  # the orbit's anchor row
        coordinate_limit = classifier_max_coordinate_shift * jnp.sqrt(anchor_free_dims * norms[t])
        coordinate_shift = coordinate_shift * _shrink_to(anchor_norm, coordinate_limit)[:, None]
        score = score + coordinate_shift
        shift = classifier_scale * jnp.sqrt(1.0 - schedules.ddpm.alphas_cumprod[t]) * grad_k * k_mask
        limit = classifier_max_lattice_shift * jnp.sqrt(jnp.sum(k_mask, axis=-1))
        shift = shift * _shrink_to(jnp.linalg.norm(shift, axis=-1), limit)[:, None]
        return score, eps_hat - shift

    def step(carry, t):
        x, k, key = carry
        key, corrector_key, predictor_key, lattice_key = jax.random.split(key, 4)
        # the training step that step t of these tables stands for (t itself unless re-spaced)
        t_graph = jnp.full((num_graphs,), schedules.network_t[t])
        sigma_t, sigma_prev = sigmas[t], sigmas[t - 1]

        noise_scale = node_mask * (t > 1)  # the last step is noise-free, as in DiffCSP

        scores, eps_hat = _denoise(
            model, params, graphs, x, k, t_graph, properties, use_condition, guidance_scale
        )
        score, _ = guided(x, k, t, scores, eps_hat)
        noise, _ = wyckoff.wyckoff_noise(jax.random.normal(corrector_key, x.shape), ops, anchor)
        x = diffusion.ve_corrector_step(
            x, score, sigma_t, step_lr, noise * noise_scale, sigma_begin=config.sigma_begin
        )

        scores, eps_hat = _denoise(
            model, params, graphs, x, k, t_graph, properties, use_condition, guidance_scale
        )
        score, eps_hat = guided(x, k, t, scores, eps_hat)
        noise, _ = wyckoff.wyckoff_noise(jax.random.normal(predictor_key, x.shape), ops, anchor)
        x = diffusion.ve_predictor_step(x, score, sigma_t, sigma_prev, noise * noise_scale)
        x = wyckoff.apply_ops(ops, anchor, x)  # remove floating-point drift off the orbits
        z = jax.random.normal(lattice_key, k.shape) * k_mask
        k = lattice.project_k(diffusion.ddpm_step(k, eps_hat * k_mask, t, z, schedules.ddpm), k_mask, k_bias)
        k = jnp.clip(k, -K_LIMIT, K_LIMIT)  # keep a diverging chain finite (|k| = 10: lengths ~ e^5.8)
        return (x, k, key), None

    timesteps = jnp.arange(sigmas.shape[0] - 1, 0, -1)  # T, or fewer steps (objective.respace_schedules)
    (x, k, _), _ = jax.lax.scan(step, (x, k, loop_key), timesteps)
    return x, k
