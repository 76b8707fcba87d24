"""The training objective of the Wyckoff-constrained diffusion (DiffCSP++ sec. 4, eq. 11-13).

Lattice: DDPM on the masked k-vector, loss = MSE of the predicted noise on the free
components. Coordinates: wrapped-normal VE diffusion on the Wyckoff anchors, loss = MSE
between the network's per-atom scores pulled back to the anchors and the normalised score
of the wrapped normal at the anchors' displacement. The property condition is dropped with
probability ``condition_dropout`` so one model serves conditional and unconditional
sampling (classifier-free guidance).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from unimdm_jax import diffusion, lattice, wyckoff
from unimdm_jax.segments import node_graph_index


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = 1000
    sigma_begin: float = 0.005
    sigma_end: float = 0.5
    lattice_loss_weight: float = 1.0
    coord_loss_weight: float = 1.0
    condition_dropout: float = 0.1


class Schedules(NamedTuple):
    """Everything the loss and the sampler index by step t, as arrays (jit constants)."""

    ddpm: diffusion.DDPMSchedule
    ve: diffusion.VESchedule
    k_mask: jax.Array  # (231, 6) per space group
    k_bias: jax.Array  # (231, 6)
    # (T' + 1,) the training step the network is given at each step of these tables: the
    # identity for the trained T, the kept steps after ``respace_schedules``
    network_t: jax.Array


def make_schedules(config: DiffusionConfig) -> Schedules:
    mask, bias = lattice.mask_bias_table()
    return Schedules(
        diffusion.make_ddpm_schedule(config.timesteps),
        diffusion.make_ve_schedule(config.timesteps, config.sigma_begin, config.sigma_end),
        jnp.asarray(mask),
        jnp.asarray(bias),
        jnp.arange(config.timesteps + 1, dtype=jnp.int32),
    )


def respace_schedules(schedules: Schedules, steps: int) -> Schedules:
    """Tables for sampling a model trained with T steps in ``steps`` < T steps (Nichol &
    Dhariwal 2021, sec. 4: "improving sampling speed"): step s = 1..steps of the new chain is
    training step t_s = round(s T / steps), and

    - VE coordinates: sigma'_s = sigma_{t_s} (the ancestral predictor moves N(sigma_{t_s}) to
      N(sigma_{t_{s-1}}), so the chain ends at the same clean sigma'_0 = 0);
    - DDPM lattice: abar'_s = abar_{t_s}, beta'_s = 1 - abar'_s / abar'_{s-1}, and the
      posterior std recomputed from them;
    - the network sees t_s (``network_t``), the step it was trained on.

    ``steps`` = T returns tables equal to the originals."""

    T = schedules.ve.sigmas.shape[0] - 1
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    t = np.concatenate([[0], np.round(np.arange(1, steps + 1) * T / steps).astype(np.int64)])
    if steps == T:  # the original tables (recomputing them from float32 would round differently)
        return schedules
    abar = np.asarray(schedules.ddpm.alphas_cumprod, np.float64)[t]
    abar[0] = 1.0
    betas = np.concatenate([[0.0], 1.0 - abar[1:] / abar[:-1]])
    post_var = np.zeros_like(betas)
    post_var[1:] = betas[1:] * (1.0 - abar[:-1]) / (1.0 - abar[1:])
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    ddpm = diffusion.DDPMSchedule(f32(betas), f32(1.0 - betas), f32(abar), f32(np.sqrt(post_var)))
    ve = diffusion.VESchedule(schedules.ve.sigmas[t], schedules.ve.sigmas_norm[t])
    return schedules._replace(ddpm=ddpm, ve=ve, network_t=jnp.asarray(t, jnp.int32))


def anchor_mask(graphs):
    """(N,) True for real atoms that anchor their Wyckoff orbit."""
    nodes = graphs.nodes
    own = jnp.arange(nodes["anchor"].shape[0])
    return (nodes["anchor"] == own) & nodes["mask"]


def clean_k(graphs):
    """The k-vector of each crystal's true conventional lattice, shape (G, 6)."""
    return lattice.lattice_to_k(lattice.lattice_params_to_matrix(graphs.globals["lattice_parameters"]))


def anchor_scores(graphs, atom_scores):
    """Per-atom network scores pulled back to their anchors' free parameters and pushed to
    the anchors' own displacements, R_a u_a (N, 3; meaningful on anchor rows)."""
    nodes = graphs.nodes
    num_nodes = atom_scores.shape[0]
    pulled = wyckoff.pull_back(nodes["ops_rotation_pinv"], nodes["anchor"], atom_scores, num_nodes)
    return wyckoff.push_forward(nodes["wyckoff_ops"], jnp.arange(num_nodes), pulled)


def crystal_keys(key, graphs):
    """One key per crystal from its position in the *global* batch, and one per atom from
    its index inside its crystal: the noise a crystal gets does not depend on how the batch
    is padded or split over devices, so a 2-device step equals a 1-device step."""
    graph_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, graphs.globals["position"])
    num_nodes = graphs.nodes["frac_coords"].shape[0]
    node_graph = node_graph_index(graphs.n_node, num_nodes)
    first_node = jnp.cumsum(graphs.n_node) - graphs.n_node
    atom_in_crystal = jnp.arange(num_nodes) - first_node[node_graph]
    node_keys = jax.vmap(jax.random.fold_in)(graph_keys[node_graph], atom_in_crystal)
    return graph_keys, node_keys, node_graph


def _split(keys, num: int):
    return [k for k in jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, num))(keys), 1, 0)]


def diffusion_terms(
    params, model, graphs, key, schedules: Schedules, config: DiffusionConfig, property_columns
):
    """Sums and counts of the two loss terms for one padded batch (so that shards can be
    combined exactly). ``property_columns`` (static tuple) picks the model's conditioning
    properties out of ``globals['properties']``."""
    nodes, glob = graphs.nodes, graphs.globals
    graph_keys, node_keys, node_graph = crystal_keys(key, graphs)
    t_keys, k_keys, drop_keys = _split(graph_keys, 3)

    t = jax.vmap(lambda k: jax.random.randint(k, (), 1, config.timesteps + 1))(t_keys)
    k_mask, k_bias = schedules.k_mask[glob["spacegroup"]], schedules.k_bias[glob["spacegroup"]]
    k0 = clean_k(graphs)
    eps_k = jax.vmap(lambda k: jax.random.normal(k, (6,)))(k_keys) * k_mask
    k_t = lattice.project_k(diffusion.q_sample(k0, t, eps_k, schedules.ddpm), k_mask, k_bias)

    sigma = schedules.ve.sigmas[t][node_graph][:, None]
    sigma_norm = schedules.ve.sigmas_norm[t][node_graph][:, None]
    eps_x = jax.vmap(lambda k: jax.random.normal(k, (3,)))(node_keys)
    atom_noise, anchor_noise = wyckoff.wyckoff_noise(eps_x, nodes["wyckoff_ops"], nodes["anchor"])
    x_t = diffusion.wrap(nodes["frac_coords"] + sigma * atom_noise)
    target = diffusion.wrapped_normal_score(sigma * anchor_noise, sigma)

    columns = jnp.asarray(property_columns, dtype=jnp.int32)
    properties = glob["properties"][:, columns]
    keep = (
        jax.vmap(lambda k: jax.random.uniform(k, (len(property_columns),)))(drop_keys)
        >= config.condition_dropout
    )
    use_condition = glob["property_mask"][:, columns] & keep

    atom_scores, eps_hat = model.apply(params, graphs, x_t, k_t, t, properties, use_condition)
    coord_mask = jnp.broadcast_to(anchor_mask(graphs)[:, None], atom_scores.shape).astype(atom_scores.dtype)
    lattice_mask = k_mask * glob["mask"][:, None]
    coord_count, lattice_count = coord_mask.sum(), lattice_mask.sum()
    return {
        "coord_sum": diffusion.coord_score_loss(
            anchor_scores(graphs, atom_scores), target, sigma_norm, coord_mask
        )
        * jnp.maximum(coord_count, 1.0),
        "coord_count": coord_count,
        "lattice_sum": diffusion.lattice_noise_loss(eps_hat, eps_k, lattice_mask)
        * jnp.maximum(lattice_count, 1.0),
        "lattice_count": lattice_count,
    }


def combine_terms(terms, config: DiffusionConfig, axis_name: str | None = None):
    """Weighted loss from the term sums; with ``axis_name``, counts are summed over the
    devices first, so each shard's loss is its share of the global-batch mean."""
    coord_count, lattice_count = terms["coord_count"], terms["lattice_count"]
    if axis_name is not None:
        coord_count, lattice_count = jax.lax.psum((coord_count, lattice_count), axis_name)
    coord_loss = terms["coord_sum"] / jnp.maximum(jax.lax.stop_gradient(coord_count), 1.0)
    lattice_loss = terms["lattice_sum"] / jnp.maximum(jax.lax.stop_gradient(lattice_count), 1.0)
    loss = config.lattice_loss_weight * lattice_loss + config.coord_loss_weight * coord_loss
    return loss, {"loss": loss, "coord_loss": coord_loss, "lattice_loss": lattice_loss}


def diffusion_loss(
    params,
    model,
    graphs,
    key,
    schedules: Schedules,
    config: DiffusionConfig,
    property_columns,
    axis_name: str | None = None,
):
    """Scalar loss and metrics (DiffCSP++ eq. 11-13) for one batch, or one shard's share."""
    terms = diffusion_terms(params, model, graphs, key, schedules, config, property_columns)
    return combine_terms(terms, config, axis_name)


def property_loss(params, model, graphs, key, columns, axis_name=None, training=True, *, config):
    """The property oracle's loss (``config``: a TrainConfig with an OracleConfig model):
    masked L1 on normalised targets (mean over properties of each property's mean over the
    crystals that have it; NaN targets carry property_mask False) and the MAE per property
    in physical units. No diffusion noise; optional coordinate noise while training."""
    glob = graphs.globals
    frac_coords = graphs.nodes["frac_coords"]
    if training and config.coord_noise > 0:
        _, node_keys, _ = crystal_keys(key, graphs)  # independent of padding and sharding
        noise = jax.vmap(lambda k: jax.random.normal(k, (3,)))(node_keys)
        frac_coords = jnp.mod(frac_coords + config.coord_noise * noise, 1.0)
    predictions = model.apply(params, graphs, frac_coords, clean_k(graphs))
    columns = jnp.asarray(columns, dtype=jnp.int32)
    targets = glob["properties"][:, columns]
    mask = (glob["property_mask"][:, columns] & glob["mask"][:, None]).astype(predictions.dtype)
    counts = mask.sum(axis=0)
    if axis_name is not None:
        counts = jax.lax.psum(counts, axis_name)
    counts = jnp.maximum(jax.lax.stop_gradient(counts), 1.0)
    abs_error = jnp.abs(predictions - targets) * mask
    std = jnp.asarray(config.model.target_std, predictions.dtype)
    per_property = (abs_error / std).sum(axis=0) / counts
    mae = jax.lax.stop_gradient(abs_error.sum(axis=0) / counts)
    loss = per_property.mean()
    return loss, {"loss": loss, **{f"mae_{name}": mae[i] for i, name in enumerate(config.model.properties)}}
