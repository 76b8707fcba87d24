"""Tests for unimdm_jax.diffusion against closed forms and float64 numpy/scipy references."""

import numpy as np
import pytest
from scipy.special import logsumexp

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from unimdm_jax import diffusion as dif  # noqa: E402

T = 1000


@pytest.fixture(scope="module")
def ddpm():
    return dif.make_ddpm_schedule(T)


def _np_log_density(x, sigma, n=50):
    """Unnormalised log wrapped-normal density by direct float64 summation."""
    k = np.arange(-n, n + 1)
    return logsumexp(-((np.asarray(x)[..., None] + k) ** 2) / (2 * sigma**2), axis=-1)


def _np_score(x, sigma, n=50):
    """Analytic float64 score: sum_k w_k * (-(x+k)/sigma^2)."""
    k = np.arange(-n, n + 1)
    d = np.asarray(x)[..., None] + k
    logits = -(d**2) / (2 * sigma**2)
    w = np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))
    return -(w * d).sum(-1) / sigma**2


# ------------------------------------------------------------------ wrapped normal score
def test_score_small_sigma_is_gaussian():
    sigma = 0.01
    x = np.linspace(-0.03, 0.03, 13)
    np.testing.assert_allclose(dif.wrapped_normal_score(x, sigma), -x / sigma**2, rtol=1e-5, atol=1e-3)


def test_score_large_sigma_is_nearly_uniform():
    x = np.linspace(-1.0, 1.0, 41)
    assert np.max(np.abs(dif.wrapped_normal_score(x, 2.0))) < 1e-4


@pytest.mark.parametrize("sigma", [0.005, 0.05, 0.2, 0.5, 1.0])
def test_score_matches_finite_difference_of_log_density(sigma):
    x = np.linspace(-1.3, 1.7, 61)
    h = 1e-5 * sigma
    fd = (_np_log_density(x + h, sigma) - _np_log_density(x - h, sigma)) / (2 * h)
    got = np.asarray(dif.wrapped_normal_score(x.astype(np.float32), sigma), np.float64)
    # |score| <= 1/(2 sigma^2); float32 resolution of x - round(x) sets the atol
    np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-5 / sigma**2)


def test_score_periodic_and_odd():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, size=200).astype(np.float32)
    sig = rng.uniform(0.01, 0.5, size=200).astype(np.float32)
    s = np.asarray(dif.wrapped_normal_score(x, sig))
    np.testing.assert_allclose(dif.wrapped_normal_score(x + 1.0, sig), s, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(dif.wrapped_normal_score(x - 3.0, sig), s, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(dif.wrapped_normal_score(-x, sig), -s, rtol=1e-6, atol=1e-6)


def test_score_jit_vmap_grad():
    x = jnp.linspace(-0.4, 0.4, 9)
    sig = jnp.full_like(x, 0.1)
    eager = dif.wrapped_normal_score(x, sig)
    np.testing.assert_allclose(jax.jit(dif.wrapped_normal_score)(x, sig), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(dif.wrapped_normal_score)(x, sig), eager, rtol=1e-6)
    # d score / dx = d^2 log p / dx^2, compare with float64 FD of the numpy score
    g = jax.jit(jax.vmap(jax.grad(dif.wrapped_normal_score)))(x, sig)
    xs, h = np.asarray(x, np.float64), 1e-6
    fd = (_np_score(xs + h, 0.1) - _np_score(xs - h, 0.1)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-2)


# ------------------------------------------------------------------ score norm
def test_score_norm_matches_monte_carlo():
    sigmas = np.array([0.005, 0.02, 0.1, 0.3, 0.5])
    got = np.asarray(dif.wrapped_normal_score_norm(sigmas))
    rng = np.random.default_rng(1234)
    for s, g in zip(sigmas, got):
        x = (s * rng.normal(size=100_000)) % 1.0
        mc = np.mean(_np_score(x, s, n=10) ** 2)
        assert g == pytest.approx(mc, rel=0.02), (s, g, mc)


def test_score_norm_limits():
    small = np.array([0.005, 0.01, 0.02])
    np.testing.assert_allclose(dif.wrapped_normal_score_norm(small), 1 / small**2, rtol=1e-4)
    norms = np.asarray(dif.wrapped_normal_score_norm(np.geomspace(0.005, 1.0, 30)))
    assert np.all(np.diff(norms) < 0)  # beyond sigma ~ 1 it sits at the float32 floor
    assert float(dif.wrapped_normal_score_norm(2.0)) < 1e-10  # ~ uniform
    # shape is preserved and the function traces
    assert dif.wrapped_normal_score_norm(jnp.ones((2, 3)) * 0.1).shape == (2, 3)


def test_ve_schedule():
    sig = np.asarray(dif.geometric_sigmas(T, 0.005, 0.5), np.float64)
    assert sig.shape == (T + 1,) and sig[0] == 0.0
    assert sig[1] == pytest.approx(0.005, rel=1e-6) and sig[T] == pytest.approx(0.5, rel=1e-6)
    ratio = sig[2:] / sig[1:-1]
    np.testing.assert_allclose(ratio, (0.5 / 0.005) ** (1 / (T - 1)), rtol=1e-5)
    ve = dif.make_ve_schedule(50, 0.005, 0.5)
    assert ve.sigmas_norm.shape == (51,) and ve.sigmas_norm[0] == 1.0
    np.testing.assert_allclose(ve.sigmas_norm[1:], dif.wrapped_normal_score_norm(ve.sigmas[1:]))


# ------------------------------------------------------------------ DDPM / cosine schedule
def _nichol_dhariwal_abar(t, T, s=0.008):
    f = lambda u: np.cos((u / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    return f(t) / f(0)


def test_cosine_schedule_closed_form(ddpm):
    t = np.arange(1, T + 1)
    abar = _nichol_dhariwal_abar(t, T)
    abar_prev = _nichol_dhariwal_abar(t - 1, T)
    ref = np.clip(1 - abar / abar_prev, 1e-4, 0.9999)  # DiffCSP clipping
    np.testing.assert_allclose(dif.cosine_beta_schedule(T), ref, rtol=1e-12)
    np.testing.assert_allclose(ddpm.betas[1:], ref, rtol=1e-6)
    # Nichol & Dhariwal clipping (beta <= 0.999, no lower clip): abar follows f(t)/f(0)
    nd = dif.make_ddpm_schedule(T, beta_min=0.0, beta_max=0.999)
    assert np.all(np.asarray(nd.betas) <= 0.999)
    np.testing.assert_allclose(nd.alphas_cumprod[1:T], abar[:-1], rtol=1e-4, atol=1e-7)


def test_ddpm_schedule_properties(ddpm):
    b, a, ab, sg = (np.asarray(v, np.float64) for v in ddpm)
    assert b.shape == (T + 1,) and b[0] == 0 and ab[0] == 1
    assert np.all(b[1:] <= 0.9999 + 1e-7) and np.all(b[1:] >= 1e-4 - 1e-9)
    assert np.all(np.diff(ab) < 0) and ab[T] < 1e-6
    np.testing.assert_allclose(a, 1 - b, atol=1e-7)
    np.testing.assert_allclose(ab, np.cumprod(a), rtol=1e-4, atol=1e-10)
    b64 = np.concatenate([[0.0], dif.cosine_beta_schedule(T)])
    ab64 = np.cumprod(1 - b64)
    post = b64[1:] * (1 - ab64[:-1]) / (1 - ab64[1:])  # Ho et al. eq. 7 beta_tilde
    np.testing.assert_allclose(sg[1:] ** 2, post, rtol=1e-5, atol=1e-12)
    assert sg[1] == 0.0


def test_q_sample_statistics(ddpm):
    k0 = jnp.array([0.3, -1.0, 0.0, 0.5, -0.2, 1.7])
    t = jnp.array([1, 100, 500, 900])
    eps = jax.random.normal(jax.random.PRNGKey(0), (200_000, 4, 6))
    kt = jax.vmap(lambda e: dif.q_sample(jnp.broadcast_to(k0, (4, 6)), t, e, ddpm))(eps)
    ab = np.asarray(ddpm.alphas_cumprod)[np.asarray(t)][:, None]
    np.testing.assert_allclose(kt.mean(0), np.sqrt(ab) * np.asarray(k0), atol=1e-2)
    np.testing.assert_allclose(kt.var(0), np.broadcast_to(1 - ab, (4, 6)), rtol=2e-2, atol=1e-5)


def test_ddpm_step_with_true_eps_gives_posterior_mean(ddpm):
    rng = np.random.default_rng(5)
    x0 = rng.normal(size=(3, 6)).astype(np.float32)
    eps = rng.normal(size=(3, 6)).astype(np.float32)
    z = rng.normal(size=(3, 6)).astype(np.float32)
    t = np.array([2, 300, 800])
    b, a, ab = (np.asarray(v, np.float64) for v in ddpm[:3])
    xt = dif.q_sample(x0, t, eps, ddpm)
    bt, at, abt, abp = (v[t][:, None] for v in (b, a, ab, np.concatenate([[1.0], ab[:-1]])))
    # Ho et al. eq. 7: posterior mean of q(x_{t-1} | x_t, x_0)
    mu = np.sqrt(abp) * bt / (1 - abt) * x0 + np.sqrt(at) * (1 - abp) / (1 - abt) * np.asarray(xt)
    np.testing.assert_allclose(dif.ddpm_step(xt, eps, t, 0 * z, ddpm), mu, rtol=1e-3, atol=1e-4)
    sig = np.asarray(ddpm.sigmas)[t][:, None]
    np.testing.assert_allclose(dif.ddpm_step(xt, eps, t, z, ddpm), mu + sig * z, rtol=1e-3, atol=1e-4)
    # at t = 1 one exact step returns the data, whatever z is
    x1 = dif.q_sample(x0, 1, eps, ddpm)
    np.testing.assert_allclose(dif.ddpm_step(x1, eps, 1, z, ddpm), x0, atol=1e-4)


# ------------------------------------------------------------------ PC sampler steps
def test_corrector_step_formula():
    x, s, z = 0.25, 3.0, 0.7
    sig_t, lr, sb = 0.05, 1e-5, 0.005
    g = lr * (sig_t / sb) ** 2
    assert dif.ve_corrector_step(x, s, sig_t, lr, z, sb) == pytest.approx(
        (x + g * s + np.sqrt(2 * g) * z) % 1, rel=1e-6
    )
    g2 = lr / (350.0 * sb**2)  # DiffCSP++ variant
    assert dif.ve_corrector_step(x, s, sig_t, lr, z, sb, sigma_norm=350.0) == pytest.approx(
        (x + g2 * s + np.sqrt(2 * g2) * z) % 1, rel=1e-6
    )
    # result is wrapped
    assert 0.0 <= float(dif.ve_corrector_step(0.999, 100.0, 0.5, 1e-3, 0.0)) < 1.0


def test_predictor_with_exact_score_maps_between_marginals():
    """For x_t ~ N(x0, s_t^2) (no wrapping at small sigma) and the exact score, one
    predictor step yields N(x0, s_{t-1}^2) exactly (ancestral VE step)."""
    x0, s_t, s_p = 0.5, 0.03, 0.02
    key1, key2 = jax.random.split(jax.random.PRNGKey(1))
    xt = x0 + s_t * jax.random.normal(key1, (400_000,))
    score = dif.wrapped_normal_score(xt - x0, s_t)
    xp = jax.jit(dif.ve_predictor_step)(xt, score, s_t, s_p, jax.random.normal(key2, xt.shape))
    assert float(xp.mean()) == pytest.approx(x0, abs=2e-4)
    assert float(xp.std()) == pytest.approx(s_p, rel=1e-2)
    # deterministic formula
    step = s_t**2 - s_p**2
    std = np.sqrt(s_p**2 * step / s_t**2)
    assert dif.ve_predictor_step(0.1, 2.0, s_t, s_p, 0.5) == pytest.approx(
        0.1 + step * 2.0 + std * 0.5, rel=1e-6
    )
    # sigma_{t-1} = 0 (last step): deterministic, no noise
    assert dif.ve_predictor_step(0.1, 2.0, s_t, 0.0, 123.0) == pytest.approx(0.1 + s_t**2 * 2.0, rel=1e-6)


def test_wrap():
    np.testing.assert_allclose(dif.wrap(jnp.array([-0.25, 0.0, 1.5, 3.75])), [0.75, 0.0, 0.5, 0.75])


# ------------------------------------------------------------------ losses
def test_lattice_noise_loss_masked_mean():
    eps = jnp.zeros((2, 6))
    eps_hat = jnp.array([[1.0, 2, 3, 4, 5, 6], [1.0, 1, 1, 1, 1, 1]])
    mask = jnp.array([[1.0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]])  # 3 free entries
    assert dif.lattice_noise_loss(eps_hat, eps, mask) == pytest.approx((1 + 9 + 1) / 3)
    # fixed components are ignored
    other = eps_hat.at[:, 1].set(100.0)
    assert dif.lattice_noise_loss(other, eps, mask) == pytest.approx((1 + 9 + 1) / 3)
    # jit, vmap, grad
    assert jax.jit(dif.lattice_noise_loss)(eps_hat, eps, mask) == pytest.approx(11 / 3)
    per = jax.vmap(dif.lattice_noise_loss)(eps_hat, eps, mask)
    np.testing.assert_allclose(per, [(1 + 9) / 2, 1.0])
    g = jax.grad(dif.lattice_noise_loss)(eps_hat, eps, mask)
    np.testing.assert_allclose(g, 2 * mask * (eps_hat - eps) / 3, rtol=1e-6)


def test_coord_score_loss_normalisation():
    rng = np.random.default_rng(2)
    sigma = np.array([[0.01], [0.3]], np.float32)
    noise = (sigma * rng.normal(size=(2, 3))).astype(np.float32)
    target = dif.wrapped_normal_score(noise, sigma)
    norm = dif.wrapped_normal_score_norm(sigma)
    perfect = target / jnp.sqrt(norm)
    assert dif.coord_score_loss(perfect, target, norm) == pytest.approx(0.0, abs=1e-10)
    hat = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    ref = np.mean((np.asarray(hat) - np.asarray(target) / np.sqrt(np.asarray(norm))) ** 2)
    assert dif.coord_score_loss(hat, target, norm) == pytest.approx(ref, rel=1e-5)
    # optional mask (e.g. padded atoms): only row 0 counts
    m = jnp.array([[1.0], [0.0]])
    ref0 = np.mean((np.asarray(hat[0]) - np.asarray(perfect[0])) ** 2)
    assert dif.coord_score_loss(hat, target, norm, m) == pytest.approx(ref0, rel=1e-5)
    g = jax.jit(jax.grad(dif.coord_score_loss))(hat, target, norm)
    np.testing.assert_allclose(g, 2 * (hat - perfect) / 6, rtol=1e-5, atol=1e-7)
    per = jax.vmap(dif.coord_score_loss)(hat, target, norm)
    assert per.shape == (2,)


def test_respaced_schedules_keep_the_marginals_at_the_kept_steps():
    """Re-spacing T=1000 to 250 steps: the new chain's cumulative alphas are the originals at
    t_s = 4 s (so q(k_s | k_0) is unchanged), its betas compose to them, the VE sigmas are the
    originals at t_s, and the network is told t_s; T steps give back the original tables."""
    from unimdm_jax.objective import DiffusionConfig, make_schedules, respace_schedules

    full = make_schedules(DiffusionConfig(timesteps=1000))
    short = respace_schedules(full, 250)
    t = np.arange(0, 1001, 4)
    np.testing.assert_array_equal(np.asarray(short.network_t), t)
    np.testing.assert_allclose(
        np.asarray(short.ddpm.alphas_cumprod)[1:], np.asarray(full.ddpm.alphas_cumprod)[t[1:]], rtol=1e-5
    )
    np.testing.assert_allclose(
        np.cumprod(np.asarray(short.ddpm.alphas, np.float64)),
        np.asarray(short.ddpm.alphas_cumprod),
        rtol=1e-4,
    )
    np.testing.assert_array_equal(np.asarray(short.ve.sigmas), np.asarray(full.ve.sigmas)[t])
    assert short.ve.sigmas[0] == 0 and short.ddpm.sigmas[1] == 0  # the last step is noise-free
    same = respace_schedules(full, 1000)
    for a, b in zip(jax.tree_util.tree_leaves(same[:4]), jax.tree_util.tree_leaves(full[:4])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        respace_schedules(full, 1001)
