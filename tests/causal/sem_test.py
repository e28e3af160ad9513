"""Linear-SEM utilities: random DAGs (ER / SF), the SEM sampler (closed-form covariance, noise variances)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import causal


@pytest.mark.parametrize("kind", ["er", "sf"])
def test_random_dag_is_acyclic_with_weights_in_range(kind):
  d, e = 12, 24
  counts = []
  for seed in range(4):
    W = np.asarray(causal.random_dag(jax.random.key(seed), d, e, kind, w_range=(0.5, 2.0)))
    assert causal.is_dag(W) and np.all(np.diag(W) == 0)
    mags = np.abs(W[W != 0])
    assert np.all((mags >= 0.5) & (mags <= 2.0))
    assert np.any(W > 0) and np.any(W < 0)
    counts.append(int((W != 0).sum()))
  if kind == "sf":      # star seed on nodes 0..m (m edges), then m edges per new node, later -> earlier
    m = 2
    assert counts == [m + m * (d - m - 1)] * 4
    assert np.all(np.triu(W) == 0)
  else:                 # ER: binomial around e
    assert 10 <= np.mean(counts) <= 38


def test_sample_linear_sem_covariance_matches_closed_form():
  d, n = 5, 200_000
  W = np.asarray(causal.random_dag(jax.random.key(1), d, 6, "er"))
  var = np.asarray(causal.nv_noise_variances(jax.random.key(2), d))
  assert np.all((var >= 0.5) & (var <= 10.0))
  X = np.asarray(causal.sample_linear_sem(jax.random.key(3), jnp.asarray(W), n, "gaussian", var))
  inv = np.linalg.inv(np.eye(d) - W)
  expected = inv.T @ np.diag(var) @ inv                                     # Cov(Z (I - W)^-1)
  np.testing.assert_allclose(np.cov(X.T), expected, rtol=0.05, atol=0.05 * np.max(np.diag(expected)))
  Z = X - X @ W
  np.testing.assert_allclose(Z.var(0), var, rtol=0.03)


@pytest.mark.parametrize("noise", ["gaussian", "exponential", "laplace", "gumbel"])
def test_noise_kinds_have_the_requested_variance(noise):
  Z = np.asarray(causal.sample_linear_sem(jax.random.key(4), jnp.zeros((3, 3)), 100_000, noise, 2.5))
  np.testing.assert_allclose(Z.var(0), 2.5, rtol=0.05)
  if noise == "exponential":
    assert np.all(Z >= 0)                                                   # not centred, as upstream
  else:
    np.testing.assert_allclose(Z.mean(0), 0.0 if noise != "gumbel" else 0.5772 * np.sqrt(6 * 2.5) / np.pi,
                               atol=0.05)
