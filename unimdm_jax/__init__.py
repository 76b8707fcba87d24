"""Uni-MDM in JAX: Wyckoff-constrained, property-conditioned crystal diffusion.

The package is organised so that each idea lives in one obvious place:

- ``unimdm_jax.schema``      the JSON symmetry schema (the handoff between the two stages;
  imports neither JAX nor torch)
- ``unimdm_jax.data``        MP-20 / CDVAE CSV reading, download, symmetry extraction,
  preprocessing cache and jraph batching
- ``unimdm_jax.lattice``, ``diffusion``, ``wyckoff``, ``segments``   the numerics (pure JAX functions)
- ``unimdm_jax.model``       the Crystal DiT and the property oracle (Flax modules)
- ``unimdm_jax.reverse_diffusion``  the predictor-corrector sampler: the reverse process
  as one jitted ``lax.scan``
- ``unimdm_jax.dataset_sampling`` the batched sampling loop over a dataset's crystals
- ``unimdm_jax.generation``  end to end: target property -> symmetry -> structures
  (``unimdm_jax.generate(...)``)
- ``unimdm_jax.sample``      the command line of ``generation`` (``python -m unimdm_jax.sample``)
- ``unimdm_jax.oracle``      the property oracle's API and CLI (its network is
  ``unimdm_jax.model.property_net``); ``gradients``, ``guidance``: gradient studies and guidance

Importing the top-level package is cheap: JAX is only imported by the modules that need it.
"""

__version__ = "0.1.0"


__all__ = ["generate"]


def __getattr__(name: str):
    # the public API, imported on first use so that ``import unimdm_jax`` (and the JAX-free
    # ``unimdm_jax.schema``) never imports JAX
    if name == "generate":
        from unimdm_jax.generation import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
