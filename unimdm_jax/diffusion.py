"""Noise schedules, wrapped-normal scores, samplers steps and losses.

Follows DiffCSP (Jiao et al. 2023, "Crystal Structure Prediction by Joint Equivariant
Diffusion") and DiffCSP++ (Jiao et al. 2024, ICLR): a DDPM on the lattice k-vector and a
variance-exploding (VE) wrapped-normal diffusion on fractional coordinates.

Index convention (as in the reference code): every table has length T + 1 and is read at
the integer time t in 1..T; index 0 is the clean data (beta_0 = 0, alpha_bar_0 = 1,
sigma_0 = 0, sigma_norm_0 = 1).

Sign convention: ``wrapped_normal_score`` is the true score grad_x log p (about -x/sigma^2
near 0).  The reference code's ``d_log_p_wrapped_normal`` returns its negative, so its
network predicts -score and its sampler subtracts; here the network predicts +score and the
sampler steps add.  The two are equivalent.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DDPMSchedule",
    "VESchedule",
    "cosine_beta_schedule",
    "make_ddpm_schedule",
    "q_sample",
    "ddpm_step",
    "geometric_sigmas",
    "make_ve_schedule",
    "wrap",
    "wrapped_normal_score",
    "wrapped_normal_score_norm",
    "ve_corrector_step",
    "ve_predictor_step",
    "lattice_noise_loss",
    "coord_score_loss",
]


def _bcast(v, x):
    """Append trailing axes to v (indexed by t, shape t.shape) to broadcast against x."""
    return jnp.reshape(v, jnp.shape(v) + (1,) * (jnp.ndim(x) - jnp.ndim(v)))


# --------------------------------------------------------------------------------------
# Lattice: DDPM with cosine schedule (DiffCSP 'diffusion on L'; Nichol & Dhariwal 2021)
# --------------------------------------------------------------------------------------
class DDPMSchedule(NamedTuple):
    """DDPM tables of length T + 1 (index 0 = clean data), float32."""

    betas: jax.Array  # beta_t, betas[0] = 0
    alphas: jax.Array  # alpha_t = 1 - beta_t
    alphas_cumprod: jax.Array  # alpha_bar_t = prod_{s<=t} alpha_s
    sigmas: jax.Array  # posterior std sqrt(beta_t (1 - abar_{t-1}) / (1 - abar_t))


def cosine_beta_schedule(
    T: int, s: float = 0.008, beta_min: float = 1e-4, beta_max: float = 0.9999
) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): abar(t) = f(t)/f(0),
    f(t) = cos^2(((t/T + s)/(1 + s)) pi/2), beta_t = 1 - abar(t)/abar(t-1), t = 1..T,
    clipped to [beta_min, beta_max] as in the DiffCSP code (N&D use [0, 0.999]).
    Returns float64 numpy, shape (T,)."""
    t = np.arange(T + 1, dtype=np.float64)
    f = np.cos((t / T + s) / (1.0 + s) * np.pi / 2.0) ** 2
    abar = f / f[0]
    return np.clip(1.0 - abar[1:] / abar[:-1], beta_min, beta_max)


def make_ddpm_schedule(T: int = 1000, **cosine_kwargs) -> DDPMSchedule:
    """DDPM tables from the cosine betas (float64 precompute, float32 tables)."""
    betas = np.concatenate([[0.0], cosine_beta_schedule(T, **cosine_kwargs)])
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    post_var = np.zeros_like(betas)
    post_var[1:] = betas[1:] * (1.0 - abar[:-1]) / (1.0 - abar[1:])
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return DDPMSchedule(f32(betas), f32(alphas), f32(abar), f32(np.sqrt(post_var)))


def q_sample(k0, t, eps, schedule: DDPMSchedule):
    """Forward marginal q(k_t | k_0): sqrt(abar_t) k0 + sqrt(1 - abar_t) eps (DDPM eq. 4).
    ``t`` is an int scalar or has the leading (batch) shape of ``k0``."""
    abar = _bcast(schedule.alphas_cumprod[t], k0)
    return jnp.sqrt(abar) * k0 + jnp.sqrt(1.0 - abar) * eps


def ddpm_step(k_t, eps_hat, t, z, schedule: DDPMSchedule):
    """Ancestral step (Ho et al. 2020 Alg. 2; lattice update of DiffCSP's sampler):
    k_{t-1} = (k_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t) + sigma_t z,
    sigma_t the posterior std (sigma_1 = 0, so t = 1 is noise-free automatically)."""
    b = _bcast(schedule.betas[t], k_t)
    a = _bcast(schedule.alphas[t], k_t)
    abar = _bcast(schedule.alphas_cumprod[t], k_t)
    sig = _bcast(schedule.sigmas[t], k_t)
    return (k_t - b / jnp.sqrt(1.0 - abar) * eps_hat) / jnp.sqrt(a) + sig * z


# --------------------------------------------------------------------------------------
# Fractional coordinates: VE wrapped normal (DiffCSP 'diffusion on F')
# --------------------------------------------------------------------------------------
class VESchedule(NamedTuple):
    """VE tables of length T + 1: sigmas[0] = 0, sigmas_norm[0] = 1."""

    sigmas: jax.Array
    sigmas_norm: jax.Array  # E|score|^2 (DiffCSP's sigma_norm), loss normaliser


def geometric_sigmas(T: int, sigma_begin: float = 0.005, sigma_end: float = 0.5):
    """[0, sigma_1..sigma_T] with sigma_t geometric from sigma_begin to sigma_end."""
    s = np.exp(np.linspace(np.log(sigma_begin), np.log(sigma_end), T))
    return jnp.asarray(np.concatenate([[0.0], s]), jnp.float32)


def wrap(x):
    """Wrap fractional coordinates to [0, 1): w(x) = x mod 1 (DiffCSP's w(.))."""
    return jnp.mod(x, 1.0)


def wrapped_normal_score(x, sigma, n_terms: int = 10):
    """Score d/dx log p_sigma(x) of the wrapped normal on the unit circle (DiffCSP, F),
    p_sigma(x) ∝ sum_k exp(-(x + k)^2 / (2 sigma^2)), elementwise (x, sigma broadcast):

        score = -sum_k w_k (x + k) / sigma^2,   w = softmax_k(-(x + k)^2 / (2 sigma^2)).

    x is first reduced to [-1/2, 1/2] (exact: the score has period 1), so the dropped
    images |k| > n_terms lie at distance >= n_terms + 1/2 and carry relative weight
    <= exp(-((n_terms + 1/2)^2 - 1/4) / (2 sigma^2)): about e^-220 at sigma = 0.5 and
    e^-14 at sigma = 2 for the default n_terms = 10 (same truncation as DiffCSP)."""
    x, sigma = jnp.broadcast_arrays(jnp.asarray(x, jnp.float32), jnp.asarray(sigma, jnp.float32))
    d = (x - jnp.round(x))[..., None] + jnp.arange(-n_terms, n_terms + 1, dtype=jnp.float32)
    s2 = sigma**2
    w = jax.nn.softmax(-(d**2) / (2.0 * s2[..., None]), axis=-1)
    return -jnp.sum(w * d, axis=-1) / s2


def wrapped_normal_score_norm(sigma, n_terms: int = 10, n_grid: int = 2000):
    """E_{x ~ p_sigma}[score(x)^2] (DiffCSP's ``sigma_norm``, the coordinate-loss
    normaliser), by the periodic trapezoid rule on n_grid points of [-1/2, 1/2).
    The integrand is smooth and periodic, so the error decays like
    exp(-2 pi^2 (sigma n_grid)^2): negligible for sigma >= 3 / n_grid.
    Deterministic (the reference uses 10^4 Monte-Carlo samples)."""
    sigma = jnp.asarray(sigma, jnp.float32)
    x = (jnp.arange(n_grid, dtype=jnp.float32) + 0.5) / n_grid - 0.5
    ks = jnp.arange(-n_terms, n_terms + 1, dtype=jnp.float32)

    def one(s):
        logits = -((x[:, None] + ks) ** 2) / (2.0 * s**2)
        weights = jax.nn.softmax(jax.nn.logsumexp(logits, axis=-1))  # p(x_j) / sum_j p
        return jnp.sum(weights * wrapped_normal_score(x, s, n_terms) ** 2)

    return jax.lax.map(one, sigma.reshape(-1)).reshape(sigma.shape)


def make_ve_schedule(T: int = 1000, sigma_begin: float = 0.005, sigma_end: float = 0.5) -> VESchedule:
    """Geometric sigmas and their score norms (sigmas_norm[0] = 1 as in DiffCSP)."""
    sigmas = geometric_sigmas(T, sigma_begin, sigma_end)
    norms = wrapped_normal_score_norm(sigmas[1:])
    return VESchedule(sigmas, jnp.concatenate([jnp.ones((1,), jnp.float32), norms]))


def ve_corrector_step(x, score_hat, sigma_t, step_lr, z, sigma_begin: float = 0.005, sigma_norm=None):
    """Annealed-Langevin corrector (DiffCSP sampler; Song & Ermon 2019 Langevin step):
    x' = w(x + g score_hat + sqrt(2 g) z), g = step_lr (sigma_t / sigma_begin)^2 (DiffCSP).
    If ``sigma_norm`` is given, g = step_lr / (sigma_norm sigma_begin^2) as in the DiffCSP++
    code (equal for small sigma, where sigma_norm ~ 1/sigma^2).
    ``score_hat`` is the un-normalised score (network output * sqrt(sigma_norm))."""
    if sigma_norm is None:
        g = step_lr * (sigma_t / sigma_begin) ** 2
    else:
        g = step_lr / (sigma_norm * sigma_begin**2)
    return wrap(x + g * score_hat + jnp.sqrt(2.0 * g) * z)


def ve_predictor_step(x, score_hat, sigma_t, sigma_prev, z):
    """Ancestral predictor for the VE process (DiffCSP sampler; Song et al. 2021 SMLD
    ancestral sampling): x' = w(x + (sigma_t^2 - sigma_prev^2) score_hat
    + sqrt(sigma_prev^2 (sigma_t^2 - sigma_prev^2) / sigma_t^2) z), sigma_prev = sigma_{t-1}.
    With the exact Gaussian score it maps N(x0, sigma_t^2) to N(x0, sigma_{t-1}^2)."""
    dvar = sigma_t**2 - sigma_prev**2
    std = jnp.sqrt(sigma_prev**2 * dvar / sigma_t**2)
    return wrap(x + dvar * score_hat + std * z)


# --------------------------------------------------------------------------------------
# Losses (DiffCSP training objective; DiffCSP++ sec. 4)
# --------------------------------------------------------------------------------------
def _masked_mean(err, mask):
    if mask is None:
        return jnp.mean(err)
    mask = jnp.broadcast_to(jnp.asarray(mask, err.dtype), err.shape)
    return jnp.sum(mask * err) / jnp.maximum(jnp.sum(mask), 1.0)


def lattice_noise_loss(eps_hat, eps, mask):
    """Masked epsilon-MSE on the k-vector: sum(mask (eps_hat - eps)^2) / sum(mask), i.e. the
    mean over the components free for each crystal's family (mask from
    ``lattice.family_mask_and_bias``, broadcastable to eps).  The DiffCSP++ code averages
    over all 6 (fixed ones contribute 0), which differs by the factor sum(mask)/eps.size."""
    return _masked_mean((eps_hat - eps) ** 2, mask)


def coord_score_loss(score_hat, target_score, sigma_norm, mask=None):
    """Normalised score matching on F (DiffCSP coordinate loss):
    mean |score_hat - target_score / sqrt(sigma_norm)|^2, where
    target_score = wrapped_normal_score(x_t - x_0, sigma_t) and sigma_norm = E|score|^2 at
    sigma_t (broadcastable, e.g. per atom (N, 1)); so the network learns a unit-scale score.
    ``mask`` (optional, broadcastable) restricts the mean, e.g. to real atoms."""
    target = target_score / jnp.sqrt(sigma_norm)
    return _masked_mean((score_hat - target) ** 2, mask)
