"""Classifier guidance with a differentiable property oracle (Dhariwal & Nichol 2021).

``oracle_guidance`` builds the classifier that ``reverse_diffusion.sample(classifier=...)`` takes:
grad_x, grad_k of the Gaussian log-likelihood of a target under a property oracle.
``anchor_space_gradient`` turns per-atom gradients into the gradient the diffusion's
variables (the Wyckoff anchors) receive; the sampler adds it to the network's score.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from unimdm_jax import lattice, wyckoff

__all__ = ["anchor_space_gradient", "gaussian_log_likelihood_gradients", "oracle_guidance"]


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
        grad_x, grad_k = gaussian_log_likelihood_gradients(
            self.oracle_apply, oracle_params, targets, self.property_index, sigma, graphs, frac_coords, k
        )
        if self.keep_volume:
            grad_k = lattice.without_volume_change(grad_k)
        return grad_x, grad_k


def gaussian_log_likelihood_gradients(
    oracle_apply, oracle_params, targets, property_index: int, sigma, graphs, frac_coords, k
):
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


def oracle_guidance(
    oracle_apply, oracle_params, targets, property_index: int, sigma, keep_volume: bool = True
) -> jax.tree_util.Partial:
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
    ``oracle_params``, ``targets`` and ``sigma``: pass it to ``reverse_diffusion.sample(classifier=...)``
    as a traced argument, so new targets or parameters do not trigger a recompile."""
    function = _GaussianOracleGradients(oracle_apply, int(property_index), bool(keep_volume))
    return jax.tree_util.Partial(
        function, oracle_params, jnp.asarray(targets, jnp.float32), jnp.asarray(sigma, jnp.float32)
    )
