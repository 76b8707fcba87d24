"""Embeddings of the denoiser's inputs (Uni-MDM sec. 3.2; DiffCSP++ sec. 4.3)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp


def sinusoidal_embedding(t, dim: int, max_period: float = 10000.0):
    """Transformer-style sinusoidal embedding of the (integer) diffusion step t, shape (..., dim)."""
    half = dim // 2
    frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[..., None] * frequencies
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def fourier_features(delta_frac, num_frequencies: int, first_frequency: int = 1):
    """Periodic features of relative fractional coordinates (DiffCSP eq. 6, psi_FT):
    sin and cos of 2 pi n (f_j - f_i) for n = first_frequency .. first_frequency +
    num_frequencies - 1 (the reference uses 0..127; n = 0 adds a constant); shape (..., 6 n)."""
    n = jnp.arange(first_frequency, first_frequency + num_frequencies, dtype=delta_frac.dtype)
    angles = 2.0 * jnp.pi * delta_frac[..., None] * n  # (..., 3, n)
    features = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return features.reshape(*delta_frac.shape[:-1], -1)


class PropertyEmbedding(nn.Module):
    """Gaussian radial basis over the property's training range, then an MLP (as the
    reference embeds band gap), with a learned null embedding used where the condition is
    absent or dropped (classifier-free guidance). One token per property."""

    hidden: int
    value_range: tuple[float, float]
    num_basis: int = 64

    @nn.compact
    def __call__(self, value, use_condition):
        lo, hi = self.value_range
        centres = jnp.linspace(lo, hi, self.num_basis)
        width = (hi - lo) / (self.num_basis - 1)
        basis = jnp.exp(-(((value[..., None] - centres) / width) ** 2))
        embedded = nn.Dense(self.hidden)(nn.silu(nn.Dense(self.hidden)(basis)))
        null = self.param("null_embedding", nn.initializers.normal(0.02), (self.hidden,))
        return jnp.where(use_condition[..., None], embedded, null)
