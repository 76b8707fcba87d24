"""The Crystal DiT block (Uni-MDM eq. 8-9): multi-head attention that fuses each atom's
features with its crystal's global features and the embedded target property.

Every atom is a query; the keys and values are its crystal's context tokens: the mean of
the crystal's atom features, the time/space-group token, and one token per conditioning
property (the learned null token when the condition is dropped). Residual connections and
layer norms (pre-norm) as in DiT; then a position-wise MLP.

This attention is the only place the property enters the network. ``property_attention=False``
masks the property tokens out of the keys (the softmax renormalises over the crystal and
time/space-group tokens), which removes the property path altogether; see ``CrystalDiT``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from unimdm_jax.segments import segment_mean


class CrystalDiTBlock(nn.Module):
    hidden: int
    num_heads: int

    @nn.compact
    def __call__(
        self,
        h,
        node_graph,
        num_graphs: int,
        context_tokens,
        node_mask,
        num_property_tokens: int = 0,
        property_attention: bool = True,
    ):
        """h (N, D); node_graph (N,) graph of each node; context_tokens (G, K, D) whose last
        ``num_property_tokens`` tokens are the property tokens. ``property_attention`` (static
        bool): False masks those tokens out of the attention's keys."""
        crystal_token = segment_mean(h, node_graph, num_graphs, node_mask)
        tokens = jnp.concatenate([crystal_token[:, None, :], context_tokens], axis=1)  # (G, K+1, D)
        tokens = nn.LayerNorm(name="context_norm")(tokens)
        queries = nn.LayerNorm(name="query_norm")(h)[:, None, :]  # (N, 1, D)
        attention_mask = None  # None keeps the default path bit-identical to the unmasked network
        if not property_attention:
            num_tokens = tokens.shape[1]
            keep = jnp.arange(num_tokens) < num_tokens - num_property_tokens
            attention_mask = keep[None, None, None, :]  # broadcasts to (N, heads, 1 query, K+1 keys)
        attended = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=self.hidden)(
            queries, tokens[node_graph], mask=attention_mask
        )[:, 0, :]
        h = h + attended
        return h + nn.Dense(self.hidden)(nn.gelu(nn.Dense(2 * self.hidden)(nn.LayerNorm()(h))))
