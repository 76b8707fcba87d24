"""O(3)-invariant log-space lattice representation (DiffCSP++, Jiao et al. 2024, sec. 4.1).

Conventions
-----------
* A lattice ``L`` is a (3, 3) matrix whose **rows** are the lattice vectors a, b, c
  (pymatgen ``Lattice.matrix``).  Its Gram matrix is ``G = L L^T`` (``G_ij = l_i . l_j``).
* Polar decomposition (DiffCSP++ sec. 4.1, written there for column vectors as
  ``L_col = Q exp(S)``) reads, for rows, ``L = exp(S) R`` with ``R`` in O(3) and ``S``
  symmetric.  Hence ``L L^T = exp(2S)`` and ``S = 1/2 log(L L^T)``: ``S`` depends only on
  the Gram matrix (lengths and angles) and is invariant under ``L -> L R^T``
  (rotation / reflection of the crystal).  The canonical lattice of ``S`` is ``exp(S)``
  (symmetric, i.e. ``R = I``).
* ``S = sum_i k_i B_i`` (DiffCSP++ sec. 4.1) with the six symmetric basis matrices listed in
  the paper, **Frobenius-normalised** as in the reference implementation
  (``jiaor17/DiffCSP-PP``, ``CrystalFamily.get_basis``), so the basis is orthonormal:
  ``k_i = <S, B_i>_F``.  An isotropic Gaussian on ``k`` is isotropic on ``S``.
* Crystal-family constraints (DiffCSP++ sec. 4.1 / appendix): masked components are fixed
  to a bias.  In this basis the only non-zero bias is hexagonal ``k_1 = -sqrt(2)/4 log 3``
  (gamma = 120 deg, since ``S_01 = k_1/sqrt(2) = -log(3)/4`` gives ``cos gamma =
  tanh(2 S_01) = -1/2``).

Matrix functions of symmetric matrices use ``eigh`` with a custom JVP (Daleckii-Krein
formula with stable divided differences), so gradients stay finite at the degenerate
spectra that high-symmetry lattices (cubic ``S = k_6 B_6``) always have.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from unimdm_jax.schema.tables import crystal_system

__all__ = [
    "BASIS",
    "HEXAGONAL_K1",
    "FAMILIES",
    "exp_symmetric",
    "log_symmetric",
    "log_to_k",
    "k_to_log",
    "lattice_to_k",
    "k_to_lattice",
    "k_to_lattice_params",
    "lattice_params_to_matrix",
    "crystal_family",
    "family_mask_and_bias",
    "mask_bias_table",
    "project_k",
    "VOLUME_COMPONENT",
    "log_volume",
    "without_volume_change",
]

_B = np.array(
    [
        [[0, 1, 0], [1, 0, 0], [0, 0, 0]],
        [[0, 0, 1], [0, 0, 0], [1, 0, 0]],
        [[0, 0, 0], [0, 0, 1], [0, 1, 0]],
        [[1, 0, 0], [0, -1, 0], [0, 0, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, -2]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    ],
    dtype=np.float64,
)
#: (6, 3, 3) orthonormal basis B_i / ||B_i||_F of symmetric 3x3 matrices (DiffCSP++ 4.1).
BASIS = (_B / np.linalg.norm(_B, axis=(1, 2), keepdims=True)).astype(np.float32)

#: Index of the isotropic basis matrix B_6 = I / sqrt(3), the only one with a trace:
#: tr S = sqrt(3) k_6, so the cell volume det exp(S) = exp(tr S) = exp(sqrt(3) k_6) is set by k_6
#: alone and k_1..k_5 change the shape at constant volume.
VOLUME_COMPONENT = 5

#: Hexagonal/trigonal bias of k_1 (gamma = 120 deg): S_01 = -log(3)/4, k_1 = sqrt(2) S_01.
HEXAGONAL_K1 = -0.25 * math.log(3.0) * math.sqrt(2.0)


# --------------------------------------------------------------------------------------
# Matrix functions of symmetric matrices
# --------------------------------------------------------------------------------------
def _mT(x):
    return jnp.swapaxes(x, -1, -2)


def _spectral(f, divided_difference):
    """f(A) = U f(w) U^T for symmetric A, with JVP dF = U (D o (U^T dA U)) U^T,
    D_ij = f[w_i, w_j] (Daleckii-Krein)."""

    @jax.custom_jvp
    def fn(a):
        w, u = jnp.linalg.eigh(a)
        return (u * f(w)[..., None, :]) @ _mT(u)

    @fn.defjvp
    def fn_jvp(primals, tangents):
        (a,), (da,) = primals, tangents
        w, u = jnp.linalg.eigh(a)
        out = (u * f(w)[..., None, :]) @ _mT(u)
        d = divided_difference(w[..., :, None], w[..., None, :])
        da = 0.5 * (da + _mT(da))
        return out, u @ (d * (_mT(u) @ da @ u)) @ _mT(u)

    return fn


def _dd_exp(a, b):
    # (e^a - e^b)/(a - b) = e^m sinh(h)/h,  m = (a+b)/2, h = (a-b)/2
    h = 0.5 * (a - b)
    small = jnp.abs(h) < 1e-4
    hs = jnp.where(small, 1.0, h)
    return jnp.exp(0.5 * (a + b)) * jnp.where(small, 1.0 + h * h / 6.0, jnp.sinh(hs) / hs)


def _dd_log(a, b):
    # (log a - log b)/(a - b) = atanh(u)/(u m),  m = (a+b)/2, u = (a-b)/(a+b)
    m = 0.5 * (a + b)
    u = 0.5 * (a - b) / m
    small = jnp.abs(u) < 1e-4
    us = jnp.where(small, 0.5, u)
    return jnp.where(small, 1.0 + u * u / 3.0, jnp.arctanh(us) / us) / m


_expm_sym = _spectral(jnp.exp, _dd_exp)
_logm_spd = _spectral(jnp.log, _dd_log)


def exp_symmetric(s):
    """Matrix exponential of a symmetric (..., 3, 3) matrix via eigh (DiffCSP++ exp(S))."""
    return _expm_sym(jnp.asarray(s, jnp.float32))


def log_symmetric(lattice):
    """S = 1/2 log(L L^T): the symmetric log factor of the polar decomposition
    L = exp(S) R (DiffCSP++ sec. 4.1, row-vector form). O(3)-invariant."""
    lattice = jnp.asarray(lattice, jnp.float32)
    return 0.5 * _logm_spd(lattice @ _mT(lattice))


# --------------------------------------------------------------------------------------
# k-vector  <->  log matrix  <->  lattice
# --------------------------------------------------------------------------------------
def log_to_k(s):
    """k_i = <S, B_i>_F (inverse of S = sum k_i B_i for the orthonormal basis); (..., 6)."""
    return jnp.einsum("...jk,ijk->...i", s, BASIS)


def k_to_log(k):
    """S = sum_i k_i B_i (DiffCSP++ sec. 4.1); (..., 6) -> (..., 3, 3)."""
    return jnp.einsum("...i,ijk->...jk", jnp.asarray(k, jnp.float32), BASIS)


def lattice_to_k(lattice):
    """O(3)-invariant 6-vector of a lattice (rows = vectors): k = <1/2 log(L L^T), B>."""
    return log_to_k(log_symmetric(lattice))


def k_to_lattice(k):
    """Canonical (symmetric) lattice exp(S(k)); same Gram matrix as any L with that k."""
    return exp_symmetric(k_to_log(k))


def _gram_to_params(g):
    lengths = jnp.sqrt(jnp.diagonal(g, axis1=-2, axis2=-1))
    a, b, c = lengths[..., 0], lengths[..., 1], lengths[..., 2]
    cosines = jnp.stack([g[..., 1, 2] / (b * c), g[..., 0, 2] / (a * c), g[..., 0, 1] / (a * b)], axis=-1)
    angles = jnp.degrees(jnp.arccos(jnp.clip(cosines, -1.0, 1.0)))
    return jnp.concatenate([lengths, angles], axis=-1)


def k_to_lattice_params(k):
    """(..., 6) k -> (..., 6) [a, b, c, alpha, beta, gamma] in Angstrom / degrees,
    read off the Gram matrix G = exp(2 S(k))."""
    return _gram_to_params(exp_symmetric(2.0 * k_to_log(k)))


def lattice_params_to_matrix(params):
    """(..., 6) [a, b, c, alpha, beta, gamma] (degrees) -> (..., 3, 3) row lattice in the
    convention of pymatgen ``Lattice.from_parameters`` (vesta=False): c along z."""
    params = jnp.asarray(params, jnp.float32)
    a, b, c = params[..., 0], params[..., 1], params[..., 2]
    al, be, ga = (jnp.radians(params[..., i]) for i in (3, 4, 5))
    val = (jnp.cos(al) * jnp.cos(be) - jnp.cos(ga)) / (jnp.sin(al) * jnp.sin(be))
    gamma_star = jnp.arccos(jnp.clip(val, -1.0, 1.0))
    zero = jnp.zeros_like(a)
    va = jnp.stack([a * jnp.sin(be), zero, a * jnp.cos(be)], axis=-1)
    vb = jnp.stack(
        [
            -b * jnp.sin(al) * jnp.cos(gamma_star),
            b * jnp.sin(al) * jnp.sin(gamma_star),
            b * jnp.cos(al),
        ],
        axis=-1,
    )
    vc = jnp.stack([zero, zero, c], axis=-1)
    return jnp.stack([va, vb, vc], axis=-2)


# --------------------------------------------------------------------------------------
# Crystal-family constraints (DiffCSP++ sec. 4.1: k_i fixed per crystal family)
# --------------------------------------------------------------------------------------
FAMILIES = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "hexagonal", "cubic")

# indices of k fixed to the bias, per family (0-based: k_1 -> 0)
_FIXED = {
    "triclinic": (),
    "monoclinic": (0, 2),  # unique axis b: alpha = gamma = 90
    "orthorhombic": (0, 1, 2),  # all angles 90
    "tetragonal": (0, 1, 2, 3),  # + a = b
    "hexagonal": (0, 1, 2, 3),  # gamma = 120 via k_1 bias, a = b, alpha = beta = 90
    "cubic": (0, 1, 2, 3, 4),  # only the volume k_6 free
}


def crystal_family(space_group_number: int) -> str:
    """Crystal family of an ITA space group number: its crystal system (``schema.tables``),
    with trigonal (incl. R groups in hexagonal axes) counted as hexagonal."""
    n = int(space_group_number)
    if not 1 <= n <= 230:
        raise ValueError(f"space group number must be in 1..230, got {space_group_number}")
    system = crystal_system(n)
    return "hexagonal" if system == "trigonal" else system


def family_mask_and_bias(space_group_number: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask[6], bias[6]) float32 numpy: free components have mask 1, fixed ones mask 0 and
    value ``bias`` (only hexagonal k_1 = HEXAGONAL_K1 is non-zero)."""
    family = crystal_family(space_group_number)
    mask = np.ones(6, np.float32)
    bias = np.zeros(6, np.float32)
    mask[list(_FIXED[family])] = 0.0
    if family == "hexagonal":
        bias[0] = HEXAGONAL_K1
    return mask, bias


def mask_bias_table() -> tuple[np.ndarray, np.ndarray]:
    """(231, 6) mask and bias tables indexed by space group number (row 0 = triclinic,
    unused), for gathering per-crystal constraints inside jitted code."""
    rows = [family_mask_and_bias(max(n, 1)) for n in range(231)]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def log_volume(k):
    """log of the cell volume of exp(S(k)): log det exp(S) = tr S = sqrt(3) k_6; (..., 6) -> (...)."""
    return math.sqrt(3.0) * jnp.asarray(k)[..., VOLUME_COMPONENT]


def without_volume_change(dk):
    """A k-space direction (e.g. a gradient) with its volume component removed: moving k along
    the result leaves the cell volume unchanged, since d log V = sqrt(3) dk_6 (``log_volume``)."""
    return jnp.asarray(dk).at[..., VOLUME_COMPONENT].set(0.0)


def project_k(k, mask, bias):
    """Project k onto the family subspace: k * mask + bias * (1 - mask) (broadcasts)."""
    return k * mask + bias * (1.0 - mask)
