"""Tests for jaxgen.guidance.gmm: the analytic fixture, closed forms, the continuity equation, Monte Carlo."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import guidance
from jaxgen.core import ode

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "guidance"


def _fixture():
  return dict(np.load(FIXTURES / "gmm_velocity.npz"))


def test_matches_the_analytic_fixture_in_float64():
  # Fixture convention (FIXTURES.md): x_t = t x1 + (1 - t) x0, t = 0 noise, t = 1 data, target x1 - x0:
  # the library's t-convention, so no conversion. Spec 1.5 (10): agreement to 1e-10 in float64.
  ref = _fixture()
  with jax.enable_x64(True):
    means, stds, weights = (jnp.asarray(ref[k]) for k in ("means", "stds", "weights"))
    evaluate = jax.jit(lambda x, t: (guidance.gmm_component_velocity(x, t, means, stds),
                                     guidance.gmm_posterior(x, t, means, stds, weights),
                                     guidance.gmm_velocity(x, t, means, stds, weights)))
    for i, t in enumerate(ref["times"]):
      x = jnp.asarray(ref["x"][i])
      for t_arg in (jnp.asarray(t), jnp.full((x.shape[0],), t)):     # scalar or one time per point
        v_k, post, v = evaluate(x, t_arg)
        assert v_k.dtype == post.dtype == v.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(v_k), ref["v_components"][i], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(post), ref["posterior"][i], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(v), ref["v_mixture"][i], rtol=1e-10, atol=1e-10)
      # Per-class velocity with one label per point equals the matching component row.
      labels = jnp.arange(x.shape[0]) % means.shape[0]
      v_y = guidance.gmm_class_velocity(x, t, means, stds, labels)
      np.testing.assert_allclose(np.asarray(v_y), ref["v_components"][i][np.asarray(labels), np.arange(16)],
                                 rtol=1e-12, atol=1e-12)
  # The fixture's Monte-Carlo column is a loose sanity check (FIXTURES.md: atol ~0.05).
  np.testing.assert_allclose(ref["v_mixture"][:, :3], ref["v_mixture_mc_first3"], atol=0.05)


def test_float32_and_jit():
  ref = _fixture()
  args = [jnp.asarray(ref[k], jnp.float32) for k in ("means", "stds", "weights")]
  x = jnp.asarray(ref["x"][3], jnp.float32)
  v = jax.jit(guidance.gmm_velocity)(x, 0.5, *args)
  assert v.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(v), ref["v_mixture"][3], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(guidance.gmm_velocity(x, 0.5, *args)), v, rtol=1e-6, atol=1e-6)
  post = guidance.gmm_posterior(x, 0.5, *args)
  np.testing.assert_allclose(np.asarray(post.sum(axis=1)), 1.0, rtol=1e-6)


def test_closed_forms():
  ref = _fixture()
  with jax.enable_x64(True):
    means, stds, weights = (jnp.asarray(ref[k]) for k in ("means", "stds", "weights"))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 2)) * 3)
    pi = weights / weights.sum()
    # t = 0: v(x, 0) = sum_k pi_k mu_k - x and v_k(x, 0) = mu_k - x.
    np.testing.assert_allclose(guidance.gmm_velocity(x, 0.0, means, stds, weights), (pi @ means)[None] - x,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(guidance.gmm_component_velocity(x, 0.0, means, stds),
                               means[:, None, :] - x[None], rtol=1e-12, atol=1e-12)
    # t -> 1: v_k(x, t) -> x (sigma_k > 0).
    np.testing.assert_allclose(guidance.gmm_component_velocity(x, 1.0, means, stds),
                               jnp.broadcast_to(x, (4, 7, 2)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(guidance.gmm_component_velocity(x, 1.0 - 1e-7, means, stds),
                               jnp.broadcast_to(x, (4, 7, 2)), rtol=1e-4, atol=1e-4)
    # Weights are normalised internally; a single component gives an affine velocity.
    np.testing.assert_allclose(guidance.gmm_velocity(x, 0.3, means, stds, 5 * weights),
                               guidance.gmm_velocity(x, 0.3, means, stds, weights), rtol=1e-12)
    one = lambda z: guidance.gmm_velocity(z, 0.4, means[:1], stds[:1], weights[:1])
    y = jnp.asarray(np.random.default_rng(1).normal(size=(7, 2)))
    np.testing.assert_allclose(one(0.3 * x + 0.7 * y), 0.3 * one(x) + 0.7 * one(y), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one(x), guidance.gmm_component_velocity(x, 0.4, means[:1], stds[:1])[0],
                               rtol=1e-12, atol=1e-12)


def _log_density(x, t, means, stds, weights):
  """log p_t(x) of the mixture's marginal at time t (x: [N, d])."""
  var = t ** 2 * stds ** 2 + (1 - t) ** 2                                     # [K]
  sq = jnp.sum((x[:, None, :] - t * means[None]) ** 2, axis=-1)               # [N, K]
  d = means.shape[1]
  logits = jnp.log(weights / weights.sum())[None] - 0.5 * sq / var[None] - 0.5 * d * jnp.log(2 * jnp.pi * var)[None]
  return jax.scipy.special.logsumexp(logits, axis=1)


@jax.jit
def _continuity_residuals(x, t, means, stds, weights):
  """Central differences of dp/dt and div(p v), plus div(p v_0) for a wrong velocity."""
  p = lambda x, t: jnp.exp(_log_density(x, t, means, stds, weights))
  flux = lambda x: p(x, t)[:, None] * guidance.gmm_velocity(x, t, means, stds, weights)
  wrong = lambda x: p(x, t)[:, None] * guidance.gmm_component_velocity(x, t, means, stds)[0]
  h = 1e-5
  div = lambda f: sum((f(x + h * e[None])[:, i] - f(x - h * e[None])[:, i]) / (2 * h)
                      for i, e in enumerate(jnp.eye(2, dtype=x.dtype)))
  dp_dt = (p(x, t + h) - p(x, t - h)) / (2 * h)
  return dp_dt, div(flux), div(wrong)


def test_continuity_equation_by_finite_differences():
  # The exact velocity transports the marginal: dp/dt + div(p v) = 0, checked with central differences.
  ref = _fixture()
  with jax.enable_x64(True):
    means, stds, weights = (jnp.asarray(ref[k]) for k in ("means", "stds", "weights"))
    for t in (0.1, 0.5, 0.85):
      x = jnp.asarray(np.random.default_rng(2).normal(size=(12, 2)) * 1.5 + np.array([0.5, -1.5]) * t)
      dp_dt, div, div_wrong = _continuity_residuals(x, jnp.float64(t), means, stds, weights)
      scale = float(jnp.max(jnp.abs(dp_dt)))
      assert scale > 1e-3
      np.testing.assert_allclose(np.asarray(dp_dt + div), 0.0, atol=1e-6 * scale)
      # A wrong velocity (the per-component one of component 0) violates it.
      assert float(jnp.max(jnp.abs(dp_dt + div_wrong))) > 1e-2 * scale


def test_monte_carlo_conditional_expectation():
  # E[x1 - x0 | x_t = x] by self-normalised importance sampling over exact mixture samples x1:
  # x0 = (x - t x1) / (1 - t), weights N(x; t x1, (1 - t)^2 I).
  ref = _fixture()
  means, stds, weights = (jnp.asarray(ref[k], jnp.float32) for k in ("means", "stds", "weights"))
  x1, _ = guidance.gmm_sample(jax.random.key(0), 200_000, means, stds, weights)
  t = 0.5
  x = jnp.asarray(ref["x"][3, :4], jnp.float32)                               # query points at t = 0.5
  logw = -0.5 * jnp.sum((x[:, None, :] - t * x1[None]) ** 2, axis=-1) / (1 - t) ** 2    # [4, M]
  wts = jax.nn.softmax(logw, axis=1)
  target = x1[None] - (x[:, None, :] - t * x1[None]) / (1 - t)                # x1 - x0, [4, M, 2]
  v_mc = jnp.einsum("nm,nmd->nd", wts, target)
  np.testing.assert_allclose(np.asarray(v_mc), ref["v_mixture"][3, :4], atol=0.05)


def test_integrating_the_class_velocity_reproduces_the_class_distribution():
  # Spec 1.2: 200 Euler steps of v_y from N(0, I) give N(mu_y, sigma_y^2 I); the unconditional (mixture)
  # velocity gives the mixture. Run through the guided sampler (rule "cfg", w = 1 is conditional only).
  means, stds, weights = guidance.circle_gmm(8, radius=4.0, std=0.5)
  weights = weights.at[:4].multiply(3.0)                           # unequal weights
  n = 4000
  labels = jnp.full((n,), 2, jnp.int32)
  ts = ode.uniform_grid(200)

  @jax.jit
  def run(key):
    x0 = jax.random.normal(key, (n, 2))
    v_c = lambda t, x: guidance.gmm_class_velocity(x, t, means, stds, labels)
    v_u = lambda t, x: guidance.gmm_velocity(x, t, means, stds, weights)
    cond = guidance.guided_sample(v_c, v_u, x0, ts, rule="cfg", w=1.0)
    uncond = guidance.guided_sample(v_u, v_u, x0, ts, rule="cfg", w=1.0)
    return cond, uncond

  cond, uncond = (np.asarray(a, np.float64) for a in run(jax.random.key(1)))
  mu, sd = np.asarray(means[2], np.float64), 0.5
  np.testing.assert_allclose(cond.mean(axis=0), mu, atol=4 * sd / np.sqrt(n) + 0.01)
  np.testing.assert_allclose(np.cov(cond.T), sd ** 2 * np.eye(2), atol=0.02)
  nearest = np.argmin(((uncond[:, None, :] - np.asarray(means)[None]) ** 2).sum(-1), axis=1)
  freq = np.bincount(nearest, minlength=8) / n
  np.testing.assert_allclose(freq, np.asarray(weights / weights.sum()), atol=0.025)


def test_sampling_helpers():
  means, stds, weights = guidance.circle_gmm(8, radius=4.0, std=0.5)
  chex.assert_shape((means, stds, weights), ((8, 2), (8,), (8,)))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(means), axis=1), 4.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(means[2]), [0.0, 4.0], atol=1e-6)
  # Per-class components.
  labels = jnp.arange(6000) % 3
  x, y = guidance.gmm_sample(jax.random.key(0), 6000, means, stds, weights, labels)
  assert x.dtype == jnp.float32 and y.dtype == jnp.int32
  np.testing.assert_array_equal(y, labels)
  for c in range(3):
    xc = np.asarray(x[labels == c], np.float64)
    np.testing.assert_allclose(xc.mean(0), means[c], atol=0.05)
    np.testing.assert_allclose(xc.std(0), 0.5, atol=0.03)
  # The mixture: labels drawn from the weights.
  w = jnp.array([0.5, 0.25, 0.125, 0.125, 0.0, 0.0, 0.0, 0.0])
  x, y = guidance.gmm_sample(jax.random.key(1), 8000, means, stds, w)
  np.testing.assert_allclose(np.bincount(np.asarray(y), minlength=8) / 8000, w, atol=0.02)
  np.testing.assert_allclose(np.asarray(x), np.asarray(means)[np.asarray(y)], atol=0.5 * 5.5)


def test_validation_errors():
  means, stds, weights = guidance.circle_gmm(4)
  x = jnp.zeros((3, 2))
  with pytest.raises(ValueError, match="`means`"):
    guidance.gmm_velocity(x, 0.5, means[0], stds, weights)
  with pytest.raises(ValueError, match="`stds`"):
    guidance.gmm_velocity(x, 0.5, means, stds[:2], weights)
  with pytest.raises(ValueError, match="`weights`"):
    guidance.gmm_velocity(x, 0.5, means, stds, weights[:3])
  with pytest.raises(ValueError, match="`weights`"):
    guidance.gmm_velocity(x, 0.5, means, stds, -weights)
  with pytest.raises(ValueError, match="`x`"):
    guidance.gmm_component_velocity(jnp.zeros((3, 5)), 0.5, means, stds)
  with pytest.raises(ValueError, match="`t`"):
    guidance.gmm_component_velocity(x, jnp.zeros(4), means, stds)
  with pytest.raises(ValueError, match="`labels`"):
    guidance.gmm_class_velocity(x, 0.5, means, stds, jnp.zeros(2, jnp.int32))
  with pytest.raises(ValueError, match="`labels`"):
    guidance.gmm_sample(jax.random.key(0), 3, means, stds, weights, jnp.zeros(3))
  with pytest.raises(ValueError, match="`num_samples`"):
    guidance.gmm_sample(jax.random.key(0), -1, means, stds, weights)
  with pytest.raises(ValueError, match="`std`"):
    guidance.circle_gmm(4, std=0.0)
