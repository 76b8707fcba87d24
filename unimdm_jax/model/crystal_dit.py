"""The Crystal DiT denoiser (Uni-MDM sec. 3.2 on DiffCSP++).

Inputs: a padded jraph batch (composition, Wyckoff operations, space group), the noisy
fractional coordinates x_t, the noisy lattice k-vector k_t, the step t and the property
condition. Outputs: a per-atom score for the coordinates (N, 3) and the predicted lattice
noise (G, 6). Everything is jit/vmap/grad-traceable: no Python control flow on values.

Two hooks for gradient studies (``unimdm_jax.gradients``), neither of which adds parameters:

- ``property_attention=False`` removes the property path (see ``CrystalDiT.__call__``);
- the embedded property tokens (G, P, D) are perturbed by the variable
  ``perturbations/property_tokens`` when the caller passes that collection, so
  ``jax.grad`` with respect to it is the gradient with respect to the embedding.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from unimdm_jax.model.dit_block import CrystalDiTBlock
from unimdm_jax.model.embeddings import PropertyEmbedding, sinusoidal_embedding
from unimdm_jax.model.message_passing import CrystalMessagePassing
from unimdm_jax.segments import node_graph_index, segment_mean

NUM_ELEMENTS = 104
PERTURBATIONS = "perturbations"  # the variable collection of the gradient hook
PROPERTY_TOKENS = "property_tokens"  # its variable: zeros of shape (G, P, hidden)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    hidden: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_frequencies: int = 16
    # phi_m of the message passing (see model/message_passing.py): its number of layers and
    # the lowest Fourier frequency; 2 and 0 (with 128 frequencies) are the reference's
    message_layers: int = 1
    first_frequency: int = 1
    # False: no Crystal DiT attention block; the property tokens are added to the
    # time/space-group token instead (how DiffCSP++'s property variant conditions)
    attention: bool = True
    # conditioning properties and the value range their radial basis covers
    properties: tuple[str, ...] = ("band_gap",)
    property_ranges: tuple[tuple[float, float], ...] = ((0.0, 10.0),)
    # the unit of each property, in order, for a user's own property (registered in the schema
    # when the config is loaded); () when all are built in (band gap, formation energy)
    property_units: tuple[str, ...] = ()


class CrystalDiT(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, graphs, frac_coords, k, t, properties, use_condition, property_attention: bool = True):
        """graphs: batch from ``unimdm_jax.data.batching``; frac_coords (N,3) noisy x_t;
        k (G,6) noisy k-vector; t (G,) int step; properties (G,P); use_condition (G,P) bool.

        ``property_attention`` (static Python bool; default True = the trained network):
        False masks the property tokens out of the keys of every block's attention, so the
        softmax renormalises over the crystal and time/space-group tokens and the outputs do
        not depend on the property tokens at all. This is an ablation, not the unconditional
        model: dropping the condition (``use_condition`` False, what classifier-free guidance
        uses) keeps the token but replaces it with the learned null embedding, which the
        network was trained with; masking the token removes it, a state never seen in
        training.

        Gradient hook: when ``variables`` holds ``{"perturbations": {"property_tokens": z}}``
        with z of shape (G, P, hidden), the embedded property tokens become ``tokens + z``;
        the gradient with respect to z (at z = 0) is the gradient with respect to the
        embedding. Without that collection (plain ``{"params": ...}``) nothing is added.
        Unlike ``Module.perturb``, ``init`` does not create the collection, so the variable
        tree of ``init`` (and of the trainer's state) is unchanged.
        """
        cfg = self.config
        nodes, glob = graphs.nodes, graphs.globals
        num_nodes, num_graphs = frac_coords.shape[0], k.shape[0]
        node_graph = node_graph_index(graphs.n_node, num_nodes)
        node_mask = nodes["mask"]
        edge_mask = node_mask[graphs.senders] & node_mask[graphs.receivers]

        time = nn.Dense(cfg.hidden)(nn.silu(nn.Dense(cfg.hidden)(sinusoidal_embedding(t, cfg.hidden))))
        space_group = nn.Embed(231, cfg.hidden, name="space_group_embedding")(glob["spacegroup"])
        global_token = time + space_group
        property_tokens = [
            PropertyEmbedding(cfg.hidden, tuple(value_range), name=f"property_{name}")(
                properties[:, i], use_condition[:, i]
            )
            for i, (name, value_range) in enumerate(zip(cfg.properties, cfg.property_ranges))
        ]
        property_tokens = jnp.stack(property_tokens, axis=1)  # (G, P, D)
        if self.has_variable(PERTURBATIONS, PROPERTY_TOKENS):  # gradient hook, see the docstring
            property_tokens = property_tokens + self.get_variable(PERTURBATIONS, PROPERTY_TOKENS)
        num_property_tokens = property_tokens.shape[1]
        context = jnp.concatenate([global_token[:, None, :], property_tokens], axis=1)  # (G, 1+P, D)

        if not cfg.attention and property_attention:  # the property enters through the global token
            global_token = global_token + property_tokens.sum(axis=1)
        ops = nodes["wyckoff_ops"]
        h = nn.Embed(NUM_ELEMENTS, cfg.hidden, name="element_embedding")(nodes["atomic_numbers"])
        h = h + nn.Dense(cfg.hidden, name="wyckoff_op_embedding")(ops[:, :3, :].reshape(num_nodes, 12))
        h = h + global_token[node_graph]
        k_per_node = k[node_graph]
        for layer in range(cfg.num_layers):
            h = CrystalMessagePassing(
                cfg.hidden,
                cfg.num_frequencies,
                cfg.message_layers,
                cfg.first_frequency,
                name=f"message_passing_{layer}",
            )(h, frac_coords, k_per_node, graphs.senders, graphs.receivers, edge_mask)
            if cfg.attention:
                h = CrystalDiTBlock(cfg.hidden, cfg.num_heads, name=f"dit_block_{layer}")(
                    h, node_graph, num_graphs, context, node_mask, num_property_tokens, property_attention
                )
        h = nn.LayerNorm(name="final_norm")(h)
        coord_score = nn.Dense(3, name="coord_head", kernel_init=nn.initializers.zeros)(h)
        mask = node_mask[:, None].astype(h.dtype)
        pooled = segment_mean(h, node_graph, num_graphs, node_mask)
        lattice_noise = nn.Dense(6, name="lattice_head")(
            nn.silu(nn.Dense(cfg.hidden)(jnp.concatenate([pooled, k], -1)))
        )
        return coord_score * mask, lattice_noise
