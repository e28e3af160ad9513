"""StableMax: official-code fixture (float64, rtol 1e-10), float32-input path, properties, autodiff safety."""

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.stability import log_stablemax, stablemax, stablemax_cross_entropy, stablemax_log_s, stablemax_s

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "optim"


def _fixture():
  data = np.load(FIXTURES / "stablemax.npz")
  assert "grokking-at-the-edge" in json.loads(str(data["config_json"]))["upstream_repo"]
  return data


def test_matches_official_fixture_in_float64():
  data = _fixture()
  with jax.enable_x64(True):
    logits, labels = jnp.asarray(data["logits"]), jnp.asarray(data["labels"])
    np.testing.assert_allclose(stablemax_s(jnp.asarray(data["s_grid_x"])), data["s_grid_y"], rtol=1e-12)
    np.testing.assert_allclose(stablemax_s(logits), data["s_of_logits"], rtol=1e-12)
    np.testing.assert_allclose(stablemax(logits), data["stablemax_probs"], rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(log_stablemax(logits), data["log_stablemax"], rtol=1e-10)
    losses = stablemax_cross_entropy(logits, labels)
    assert losses.dtype == jnp.float64
    np.testing.assert_allclose(losses, data["loss_per_sample"], rtol=1e-10)
    np.testing.assert_allclose(losses.mean(), data["loss_mean"], rtol=1e-10)
    grad = jax.grad(lambda z: stablemax_cross_entropy(z, labels).mean())(logits)
    np.testing.assert_allclose(grad, data["grad_loss_mean_wrt_logits"], rtol=1e-10, atol=1e-15)
    # The official loss upcasts float32 logits to float64 before evaluating.
    logits32 = jnp.asarray(data["logits_float32"])
    np.testing.assert_allclose(stablemax_cross_entropy(logits32, labels).mean(),
                               data["loss_mean_from_float32_logits"], rtol=1e-10)
    grad32 = jax.grad(lambda z: stablemax_cross_entropy(z, labels).mean())(logits32)
    assert grad32.dtype == jnp.float32
    np.testing.assert_allclose(grad32, data["grad_from_float32_logits"], rtol=1e-6, atol=1e-9)


def test_float32_path_without_x64_is_close_to_fixture():
  data = _fixture()
  losses = stablemax_cross_entropy(jnp.asarray(data["logits"], jnp.float32), jnp.asarray(data["labels"]))
  assert losses.dtype == jnp.float32
  np.testing.assert_allclose(losses, data["loss_per_sample"], rtol=2e-5, atol=1e-6)


def test_log_form_equals_direct_form_and_log_softmax_of_signed_log1p():
  z = jax.random.normal(jax.random.key(0), (5, 7)) * 10.0
  np.testing.assert_allclose(jnp.exp(log_stablemax(z)), stablemax(z), rtol=1e-5)
  np.testing.assert_allclose(stablemax_log_s(z), jnp.log(stablemax_s(z)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(log_stablemax(z, axis=0), jax.nn.log_softmax(stablemax_log_s(z), axis=0), rtol=1e-6)


def test_properties():
  z = jax.random.normal(jax.random.key(1), (4, 6)) * 3.0
  p = stablemax(z)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
  assert float(stablemax_s(jnp.float32(0.0))) == 1.0
  shifted = stablemax(z + 2.5)                        # not shift-invariant, unlike softmax
  assert float(jnp.max(jnp.abs(shifted - p))) > 1e-2
  np.testing.assert_allclose(stablemax(jnp.full((3,), -4.0)), jnp.full((3,), 1 / 3), rtol=1e-6)
  bigger = z.at[:, 2].add(1.0)                        # monotone in its own logit
  assert bool(jnp.all(stablemax(bigger)[:, 2] > p[:, 2]))
  labels = jnp.array([0, 1, 2, 3])
  assert bool(jnp.all(stablemax_cross_entropy(z, labels) >= 0))
  # Closed form for two classes: s = (3, 1/2) at z = (2, -1) -> p = (6/7, 1/7).
  np.testing.assert_allclose(stablemax(jnp.array([2.0, -1.0])), [6 / 7, 1 / 7], rtol=1e-6)


def test_closed_form_gradient():
  z = jnp.array([[1.5, -2.0, 0.3, -0.7]], jnp.float32)
  y = jnp.array([2])
  s = np.asarray(stablemax_s(z), np.float64)[0]
  ds = np.where(np.asarray(z)[0] < 0, 1 / (1 - np.asarray(z, np.float64)[0]) ** 2, 1.0)
  expected = ds / s.sum()
  expected[2] -= ds[2] / s[2]
  grad = jax.grad(lambda x: stablemax_cross_entropy(x, y).sum())(z)
  np.testing.assert_allclose(grad[0], expected, rtol=1e-5)


def test_huge_logits_and_autodiff_are_finite():
  z = jnp.array([[1e6, 0.0, -1e6, 1.0]], jnp.float32)
  y = jnp.array([0])
  loss, grad = jax.value_and_grad(lambda x: stablemax_cross_entropy(x, y).sum())(z)
  assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
  # The "double where": a naive where(x < 0, 1/(1 - x), x + 1) has a NaN gradient at x = 1; ours does not.
  for x in (1.0, 0.0, -1.0, 1e30, -1e30):
    assert np.isfinite(float(jax.grad(stablemax_s)(jnp.float32(x)))), x
  assert float(jax.grad(stablemax_s)(jnp.float32(0.0))) == 1.0        # right derivative at 0, like the reference
  assert float(jax.grad(stablemax_s)(jnp.float32(-1.0))) == 0.25


def test_jit_matches_eager_and_validation():
  z = jax.random.normal(jax.random.key(2), (3, 5))
  y = jnp.array([0, 4, 2])
  chex.assert_trees_all_close(jax.jit(stablemax_cross_entropy)(z, y), stablemax_cross_entropy(z, y), rtol=1e-6)
  with pytest.raises(TypeError, match="labels"):
    stablemax_cross_entropy(z, jnp.array([0.0, 1.0, 2.0]))
  with pytest.raises(ValueError, match="labels"):
    stablemax_cross_entropy(z, jnp.array([0, 1]))
  with pytest.raises(ValueError, match="axis"):
    stablemax(z, axis=2)
  with pytest.raises(TypeError, match="logits"):
    stablemax(jnp.array([1, 2]))
