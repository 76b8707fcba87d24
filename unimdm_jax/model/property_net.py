"""The property oracle's network: a graph-network regressor of crystal properties from structure.

Inputs are the same padded jraph batches the Crystal DiT reads (only atom types and the node
mask are used: no space group, no Wyckoff operations), the fractional coordinates (N, 3) and
the O(3)-invariant lattice k-vector (G, 6). The network is the DiT's message passing without
the diffusion inputs, so it is invariant to atom permutations, to periodic translations of
all coordinates (only f_j - f_i enters, through periodic features) and to rotations and
reflections of the lattice (only k enters). A masked mean over a crystal's real atoms and an
MLP head give one value per property, returned in physical units.

It is a pure function of (frac_coords, k): ``jax.grad`` of a prediction with respect to them
is what classifier guidance during sampling needs.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from unimdm_jax import lattice
from unimdm_jax.model.crystal_dit import NUM_ELEMENTS
from unimdm_jax.model.message_passing import CrystalMessagePassing
from unimdm_jax.segments import node_graph_index, segment_mean


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    hidden: int = 128
    num_layers: int = 3
    num_frequencies: int = 16
    properties: tuple[str, ...] = ("band_gap", "formation_energy_per_atom")
    # Training targets are (y - mean) / std. None until the trainer fills them in from the
    # training split (train.prepare_config), so an exported checkpoint is self-contained.
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None
    # Properties that are >= 0 by definition: predicted through a softplus.
    nonnegative: tuple[str, ...] = ("band_gap",)


def log_volume_per_atom(k, num_atoms):
    """log(V / n) of each crystal from its k-vector (G, 6) and atom count (G,): the
    intensive size of the cell, which mean pooling alone cannot see."""
    return lattice.log_volume(k) - jnp.log(jnp.maximum(num_atoms, 1.0))


class PropertyOracle(nn.Module):
    config: OracleConfig

    @nn.compact
    def __call__(self, graphs, frac_coords, k):
        """graphs: batch from ``unimdm_jax.data.batching``; frac_coords (N, 3); k (G, 6).
        Returns (G, P) predictions in physical units (rows of padding graphs are meaningless)."""
        cfg = self.config
        if cfg.target_mean is None or cfg.target_std is None:
            raise ValueError("OracleConfig.target_mean/target_std are unset: run train.prepare_config first")
        nodes = graphs.nodes
        num_nodes, num_graphs = frac_coords.shape[0], k.shape[0]
        node_graph = node_graph_index(graphs.n_node, num_nodes)
        node_mask = nodes["mask"]
        edge_mask = node_mask[graphs.senders] & node_mask[graphs.receivers]

        h = nn.Embed(NUM_ELEMENTS, cfg.hidden, name="element_embedding")(nodes["atomic_numbers"])
        k_per_node = k[node_graph]
        for layer in range(cfg.num_layers):
            h = CrystalMessagePassing(cfg.hidden, cfg.num_frequencies, name=f"message_passing_{layer}")(
                h, frac_coords, k_per_node, graphs.senders, graphs.receivers, edge_mask
            )
        h = nn.LayerNorm(name="final_norm")(h)
        num_atoms = jax.ops.segment_sum(node_mask.astype(h.dtype), node_graph, num_segments=num_graphs)
        pooled = segment_mean(h, node_graph, num_graphs, node_mask)
        crystal = jnp.concatenate([pooled, k, log_volume_per_atom(k, num_atoms)[:, None]], axis=-1)
        hidden = nn.silu(nn.Dense(cfg.hidden, name="head_hidden_0")(crystal))
        hidden = nn.silu(nn.Dense(cfg.hidden, name="head_hidden_1")(hidden))
        normalised = nn.Dense(len(cfg.properties), name="head_out")(hidden)
        return to_physical(normalised, cfg)


def to_physical(normalised, config: OracleConfig):
    """Head outputs (G, P) in normalised units -> physical units; softplus for properties
    that cannot be negative (band gap), so metals can be predicted as ~0 without clipping."""
    mean = jnp.asarray(config.target_mean, jnp.float32)
    std = jnp.asarray(config.target_std, jnp.float32)
    value = mean + std * normalised
    nonnegative = jnp.asarray([name in config.nonnegative for name in config.properties])
    return jnp.where(nonnegative, jax.nn.softplus(value), value)
