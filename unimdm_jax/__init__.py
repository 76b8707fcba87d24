"""Uni-MDM in JAX: Wyckoff-constrained, property-conditioned crystal diffusion.

The package is organised so that each idea lives in one obvious place:

- ``unimdm_jax.schema``  the JSON symmetry schema (the handoff between the two stages;
  imports neither JAX nor torch)
- ``unimdm_jax.data``    MP-20 / CDVAE CSV reading, download, symmetry extraction,
  preprocessing cache and jraph batching

Importing the top-level package is cheap: JAX is only imported by the modules that need it.
"""

__version__ = "0.1.0"
