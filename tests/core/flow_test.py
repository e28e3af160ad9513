"""Tests for jaxgen.core.flow: rectified-flow path, flow-matching loss, condition dropout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.core import flow, ode


def test_interpolation_endpoints_and_velocity():
  k0, k1 = jax.random.split(jax.random.key(0))
  x0 = jax.random.normal(k0, (3, 2, 4))
  x1 = jax.random.normal(k1, (3, 2, 4))
  np.testing.assert_array_equal(flow.interpolate(x0, x1, jnp.zeros(3)), x0)
  np.testing.assert_array_equal(flow.interpolate(x0, x1, jnp.ones(3)), x1)
  np.testing.assert_array_equal(flow.interpolate(x0, x1, 0.0), x0)
  # Per-example times broadcast over the non-batch axes.
  t = jnp.array([0.0, 0.5, 1.0])
  xt = flow.interpolate(x0, x1, t)
  np.testing.assert_allclose(xt[1], 0.5 * (x0[1] + x1[1]), rtol=1e-6)
  # The path keeps the data dtype (times may be float32).
  assert flow.interpolate(x0.astype(jnp.bfloat16), x1.astype(jnp.bfloat16), t).dtype == jnp.bfloat16
  # d x_t / dt = x1 - x0.
  _, dxdt = jax.jvp(lambda s: flow.interpolate(x0, x1, s), (jnp.full((3,), 0.3),), (jnp.ones(3),))
  np.testing.assert_allclose(dxdt, flow.target_velocity(x0, x1), rtol=1e-6)


def _point_mass_velocity(mu):
  # Data is the point mass at mu: x_t = (1 - t) x0 + t mu, so x1 - x0 = (mu - x_t) / (1 - t) exactly.
  def velocity_fn(params, x, t):
    del params
    return (mu[None] - x) / (1 - t)[:, None]

  return velocity_fn


def test_loss_is_zero_for_the_exact_velocity_of_a_point_target():
  with jax.enable_x64(True):
    mu = jnp.array([2.0, -1.0, 0.5])
    x1 = jnp.broadcast_to(mu, (256, 3))
    for dist in flow.TIME_DISTRIBUTIONS:
      loss = flow.flow_matching_loss(_point_mass_velocity(mu), None, x1, jax.random.key(1),
                                     time_distribution=dist)
      assert float(loss) < 1e-20, (dist, float(loss))
      # An offset c adds exactly ||c||^2 / D (the exact velocity has zero residual).
      c = jnp.array([0.3, 0.0, -0.6])
      v_off = lambda p, x, t: _point_mass_velocity(mu)(p, x, t) + c[None]
      loss_off = flow.flow_matching_loss(v_off, None, x1, jax.random.key(1), time_distribution=dist)
      np.testing.assert_allclose(float(loss_off), float(jnp.mean(c ** 2)), rtol=1e-10)


def test_loss_matches_its_definition_and_passes_cond():
  x1 = jax.random.normal(jax.random.key(2), (8, 5))
  key = jax.random.key(3)
  params = {"w": jnp.eye(5) * 0.5}

  def velocity_fn(p, x, t, cond):
    return x @ p["w"] + t[:, None] * cond[:, None].astype(x.dtype)

  cond = jnp.arange(8)
  loss = flow.flow_matching_loss(velocity_fn, params, x1, key, cond=cond)
  key_t, key_noise = jax.random.split(key)
  t = jax.random.uniform(key_t, (8,))
  x0 = jax.random.normal(key_noise, (8, 5))
  xt = (1 - t[:, None]) * x0 + t[:, None] * x1
  expected = jnp.mean((velocity_fn(params, xt, t, cond) - (x1 - x0)) ** 2)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  # Differentiable and jittable with respect to params.
  grads = jax.jit(jax.grad(lambda p: flow.flow_matching_loss(velocity_fn, p, x1, key, cond=cond)))(params)
  assert float(jnp.abs(grads["w"]).sum()) > 0


def test_zero_velocity_loss_statistic():
  # v = 0: E (x1 - x0)^2 = x1^2 + 1 per element.
  x1 = jnp.full((4096, 2), 1.5)
  loss = flow.flow_matching_loss(lambda p, x, t: jnp.zeros_like(x), None, x1, jax.random.key(4))
  np.testing.assert_allclose(float(loss), 1.5 ** 2 + 1.0, rtol=0.05)


def test_bf16_predictions_accumulate_in_float32():
  x0 = jnp.zeros((2, 3))
  x1 = jnp.ones((2, 3))
  loss = flow.flow_matching_mse(jnp.ones((2, 3), jnp.bfloat16) * 1.5, x0, x1)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, 0.25)


def test_time_sampling_statistics():
  key = jax.random.key(5)
  n = 20000
  t = flow.sample_time(key, (n,))
  assert float(t.min()) >= 0.0 and float(t.max()) < 1.0
  np.testing.assert_allclose(float(t.mean()), 0.5, atol=0.01)
  np.testing.assert_allclose(float(t.var()), 1 / 12, atol=0.005)
  t_ln = flow.sample_time(key, (n,), distribution="logit_normal", loc=0.5, scale=0.8)
  logit = jnp.log(t_ln) - jnp.log1p(-t_ln)
  np.testing.assert_allclose(float(logit.mean()), 0.5, atol=0.03)
  np.testing.assert_allclose(float(logit.std()), 0.8, atol=0.03)


def test_exact_velocity_sampling_of_point_target_with_ode():
  # The exact point-mass velocity, integrated with the library's t-convention solver, lands on mu.
  mu = jnp.array([1.0, -2.0])
  v = _point_mass_velocity(mu)
  # Stop short of t = 1 where the velocity is singular; x_t = (1 - t) x0 + t mu along the way.
  x0 = jax.random.normal(jax.random.key(6), (4, 2))
  ts = ode.uniform_grid(10, t_end=0.9)
  x = ode.euler_solve(lambda t, x: v(None, x, jnp.broadcast_to(t, (4,))), x0, ts)
  np.testing.assert_allclose(x, 0.1 * x0 + 0.9 * mu[None], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Condition dropout.


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_drop_labels_rate(rate):
  n = 20000
  labels = jnp.arange(n, dtype=jnp.int32) % 10
  out, mask = flow.drop_labels(jax.random.key(7), labels, rate=rate, null_label=10, return_mask=True)
  assert out.dtype == jnp.int32 and out.shape == (n,)
  frac = float(mask.mean())
  assert abs(frac - rate) < 4 * np.sqrt(rate * (1 - rate) / n), frac
  np.testing.assert_array_equal(out, jnp.where(mask, 10, labels))
  np.testing.assert_array_equal(out == 10, mask)


def test_drop_labels_extremes_and_jit():
  labels = jnp.arange(50) % 7
  np.testing.assert_array_equal(flow.drop_labels(jax.random.key(0), labels, rate=0.0, null_label=7), labels)
  np.testing.assert_array_equal(flow.drop_labels(jax.random.key(0), labels, rate=1.0, null_label=7), 7)
  # Traced rate under jit.
  f = jax.jit(lambda k, r: flow.drop_labels(k, labels, rate=r, null_label=7))
  np.testing.assert_array_equal(f(jax.random.key(0), 1.0), 7)


def test_drop_condition_replaces_whole_sequences():
  n, length = 4000, 5
  tokens = jax.random.randint(jax.random.key(8), (n, length), 0, 6)
  out, mask = flow.drop_condition(jax.random.key(9), tokens, rate=0.2, null=6, return_mask=True)
  assert abs(float(mask.mean()) - 0.2) < 4 * np.sqrt(0.16 / n)
  np.testing.assert_array_equal(out[mask], 6)
  np.testing.assert_array_equal(out[~mask], tokens[~mask])
  # Embeddings: zeros by default, or a given null sequence [L, D].
  emb = jax.random.normal(jax.random.key(10), (n, length, 3))
  out_zero = flow.drop_condition(jax.random.key(9), emb, rate=0.2)
  np.testing.assert_array_equal(out_zero[mask], 0.0)
  np.testing.assert_array_equal(out_zero[~mask], emb[~mask])
  null_seq = jnp.arange(length * 3, dtype=jnp.float32).reshape(length, 3)
  out_seq = flow.drop_condition(jax.random.key(9), emb, rate=0.2, null=null_seq)
  np.testing.assert_array_equal(out_seq[mask], jnp.broadcast_to(null_seq, (int(mask.sum()), length, 3)))


def test_drop_condition_pytree_uses_one_mask():
  n = 1000
  cond = {"tokens": jnp.ones((n, 3), jnp.int32), "emb": jnp.ones((n, 3, 2))}
  out, mask = flow.drop_condition(jax.random.key(11), cond, rate=0.5, null={"tokens": 0, "emb": None},
                                  return_mask=True)
  np.testing.assert_array_equal(out["tokens"].sum(axis=1) == 0, mask)
  np.testing.assert_array_equal(out["emb"].sum(axis=(1, 2)) == 0, mask)
  chex.assert_trees_all_equal_shapes_and_dtypes(out, cond)


def test_validation_errors():
  x = jnp.ones((3, 2))
  with pytest.raises(ValueError, match="`t`"):
    flow.interpolate(x, x, jnp.ones(4))
  with pytest.raises(ValueError, match="`x0` and `x1`"):
    flow.interpolate(x, jnp.ones((3, 3)), 0.5)
  with pytest.raises(ValueError, match="`distribution`"):
    flow.sample_time(jax.random.key(0), (3,), distribution="beta")
  with pytest.raises(ValueError, match="`scale`"):
    flow.sample_time(jax.random.key(0), (3,), distribution="logit_normal", scale=0.0)
  with pytest.raises(ValueError, match="`rate`"):
    flow.drop_labels(jax.random.key(0), jnp.arange(3), rate=1.5, null_label=3)
  with pytest.raises(ValueError, match="`labels`"):
    flow.drop_labels(jax.random.key(0), jnp.ones(3), rate=0.5, null_label=3)
  with pytest.raises(ValueError, match="`null`"):
    flow.drop_condition(jax.random.key(0), jnp.ones((3, 4)), rate=0.5, null=jnp.ones(5))
  with pytest.raises(ValueError, match="`x1`"):
    flow.flow_matching_loss(lambda p, x, t: x, None, jnp.ones((3,), jnp.int32), jax.random.key(0))
  with pytest.raises(ValueError, match="`v_pred`"):
    flow.flow_matching_mse(jnp.ones((3, 1)), x, x)
