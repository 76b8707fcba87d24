"""The networks (the Crystal DiT denoiser, the property oracle): one idea per file.

- ``embeddings``      element, Wyckoff-operation, time, space-group and property embeddings
- ``message_passing`` the DiffCSP-style equivariant layer on fully connected crystal graphs
- ``dit_block``       the Crystal DiT block: attention fusing atoms, crystal and property
- ``crystal_dit``     the full network: coordinate scores and lattice noise
- ``property_net``    the property oracle's network: band gap / formation energy from structure
- ``growth``          a trained Crystal DiT grown deeper, wider, with more frequencies: same function
"""

from unimdm_jax.model.crystal_dit import CrystalDiT, ModelConfig
from unimdm_jax.model.property_net import OracleConfig, PropertyOracle

__all__ = ["CrystalDiT", "ModelConfig", "OracleConfig", "PropertyOracle"]
