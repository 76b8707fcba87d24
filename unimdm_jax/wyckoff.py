"""Wyckoff constraints on fractional coordinates (DiffCSP++ sec. 4.2), as pure JAX.

Every atom ``i`` of the conventional cell is the image of its orbit's anchor ``a(i)`` under
an affine Wyckoff operation ``W_i = [R_i | t_i]``::

    x_i = R_i x_a + t_i  (mod 1)

The anchor's own operation ``W_a`` is the first operation of its Wyckoff position (e.g.
``(0, 0, z)`` or ``(x, x, z)``), so the anchor's admissible displacements are the column
space of ``R_a``. Diffusion therefore acts on anchors only:

- noise: ``delta_a = R_a R_a^+ eps_a`` (the part of eps that the position can move along),
  pushed to atoms as ``d_i = R_i delta_a``;
- scores: a per-atom score ``s_i`` is pulled back to its anchor's free parameters with the
  pseudo-inverse, ``u_a = mean_{i in orbit} R_i^+ s_i`` (DiffCSP++'s ``ops_inv``), and pushed
  forward again as ``R_i u_a`` (the anchor's own displacement is ``R_a u_a``).

Every function takes the node arrays of a batch: ``ops`` (N, 4, 4), ``ops_pinv`` (N, 3, 3),
``anchor`` (N,) global index of each atom's anchor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unimdm_jax.segments import segment_mean


def rotation(ops):
    return ops[..., :3, :3]


def apply_ops(ops, anchor, anchor_coords):
    """Positions of all atoms from their anchors' coordinates: x_i = R_i x_a + t_i mod 1."""
    x_anchor = anchor_coords[anchor]
    moved = jnp.einsum("nij,nj->ni", rotation(ops), x_anchor) + ops[:, :3, 3]
    return jnp.mod(moved, 1.0)


def project_to_anchor_space(ops, anchor, vectors):
    """Keep, for each anchor, only the part of ``vectors[a]`` along its free directions.

    Returns ``R_a R_a^+ v_a`` for each atom's anchor a (shape (N, 3)).
    """
    r_anchor = rotation(ops)[anchor]
    projector = jnp.einsum("nij,njk->nik", r_anchor, jnp.linalg.pinv(r_anchor))
    return jnp.einsum("nij,nj->ni", projector, vectors[anchor])


def push_forward(ops, anchor, anchor_vectors):
    """Displacement of every atom from its anchor's displacement: d_i = R_i d_a."""
    return jnp.einsum("nij,nj->ni", rotation(ops), anchor_vectors[anchor])


def pull_back(ops_pinv, anchor, atom_vectors, num_nodes: int):
    """Anchor-space average of per-atom vectors: s_a = mean_{i: a(i)=a} R_i^+ s_i.

    The result is indexed by node; only the anchor rows are meaningful (others are zero).
    """
    mapped = jnp.einsum("nij,nj->ni", ops_pinv, atom_vectors)
    return segment_mean(mapped, anchor, num_nodes)


def symmetrize(ops, ops_pinv, anchor, atom_vectors):
    """Project per-atom vectors onto the Wyckoff-consistent subspace: pull back to the
    anchor's free parameters u_a, then push forward, v_i = R_i u_a (a projection)."""
    anchor_vectors = pull_back(ops_pinv, anchor, atom_vectors, atom_vectors.shape[0])
    return push_forward(ops, anchor, anchor_vectors)


def wyckoff_noise(eps, ops, anchor):
    """Project standard normal noise ``eps`` (N, 3) onto each anchor's free directions and
    push it to all atoms. Returns ``(atom_noise, anchor_noise)``, both (N, 3), with
    ``atom_noise[i] = R_i delta_a`` where ``delta_a = R_a R_a^+ eps_a``."""
    anchor_noise = project_to_anchor_space(ops, jnp.arange(ops.shape[0]), eps)
    return push_forward(ops, anchor, anchor_noise), anchor_noise


def random_anchor_coords(key, ops, anchor):
    """Uniform positions on the Wyckoff manifolds: x_a = R_a u + t_a with u ~ U[0,1)^3.

    Returns all atoms' coordinates (N, 3); the prior of the reverse process.
    """
    u = jax.random.uniform(key, (ops.shape[0], 3), dtype=ops.dtype)
    own = jnp.arange(ops.shape[0])
    anchor_coords = apply_ops(ops, own, u)  # each anchor placed on its own position
    return apply_ops(ops, anchor, anchor_coords)
