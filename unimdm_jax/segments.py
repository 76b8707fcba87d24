"""Per-segment reductions of padded jraph batches: which crystal each atom belongs to, and
the mean of per-atom (or per-edge) values over each crystal's (or node's) real entries."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["node_graph_index", "segment_mean"]


def node_graph_index(n_node, num_nodes: int):
    """Graph index of every node of a jraph batch (static total length)."""
    return jnp.repeat(jnp.arange(n_node.shape[0]), n_node, total_repeat_length=num_nodes)


def segment_mean(values, segment_ids, num_segments: int, mask=None):
    """Mean of ``values`` (n, ...) over each segment's entries where ``mask`` (n,) is set:
    ``segment_sum(values * mask) / max(segment_sum(mask), 1)``, shape (num_segments, ...).

    Empty segments (padding crystals, nodes without edges) give 0. ``mask=None`` averages
    over all entries."""
    weights = jnp.ones(values.shape[:1], values.dtype) if mask is None else mask.astype(values.dtype)
    weights = weights.reshape((-1,) + (1,) * (values.ndim - 1))
    total = jax.ops.segment_sum(
        values if mask is None else values * weights, segment_ids, num_segments=num_segments
    )
    count = jax.ops.segment_sum(weights, segment_ids, num_segments=num_segments)
    return total / jnp.maximum(count, 1.0)
