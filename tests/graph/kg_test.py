"""Tests for jaxgen.graph.kg: KGE message passing equals autodiff gradient descent; learning on a synthetic KG."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.graph import kg


def _problem(n=30, num_rel=3, d=5, p=40, m=4, seed=0):
  rng = np.random.default_rng(seed)
  triples = np.stack([rng.integers(0, n, p), rng.integers(0, num_rel, p), rng.integers(0, n, p)], 1)
  neg = np.repeat(triples[:, None, :], m, 1)
  neg[:, :, 2] = rng.integers(0, n, (p, m))
  y = rng.normal(size=(n, d)) * 0.5
  r = rng.normal(size=(num_rel, d)) * 0.5
  return y, r, triples, neg


@pytest.mark.parametrize("kind", kg.KGE_KINDS)
def test_message_passing_step_equals_gradient_descent(kind):
  with jax.enable_x64(True):
    y, r, triples, neg = _problem()
    y, r = jnp.asarray(y), jnp.asarray(r)
    lr = 0.05
    gy, gr = jax.grad(lambda a, b: kg.kge_energy(kind, a, b, triples, neg, margin=2.0), (0, 1))(y, r)
    y1, r1 = kg.kge_message_passing_step(kind, y, r, jnp.asarray(triples), jnp.asarray(neg), lr, margin=2.0)
    np.testing.assert_allclose(y1, y - lr * gy, atol=1e-10)
    np.testing.assert_allclose(r1, r - lr * gr, atol=1e-10)
  # float32 as used in training: equal to 1e-6.
  y, r, triples, neg = (jnp.asarray(a, jnp.float32) if a.dtype.kind == "f" else jnp.asarray(a) for a in _problem())
  gy, gr = jax.grad(lambda a, b: kg.kge_energy(kind, a, b, triples, neg, margin=2.0), (0, 1))(y, r)
  y1, r1 = kg.kge_message_passing_step(kind, y, r, triples, neg, 0.01, margin=2.0)
  np.testing.assert_allclose(y1, y - 0.01 * gy, atol=1e-6)
  np.testing.assert_allclose(r1, r - 0.01 * gr, atol=1e-6)


def test_filtered_mrr_and_bad_input():
  y = jnp.eye(4)
  r = jnp.zeros((1, 4))
  # TransE with zero relation: the best tail of h is h itself.
  test = np.array([[0, 0, 0], [1, 0, 2]])
  assert kg.filtered_mrr("transe", y, r, test, test) == pytest.approx((1.0 + 1.0 / 2.0) / 2.0)
  # Filtering removes the other known tail (1) ranked above tail 2 for head 1.
  known = np.concatenate([test, [[1, 0, 1]]])
  assert kg.filtered_mrr("transe", y, r, test, known) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="kind"):
    kg.kge_energy("rotate", y, r, test, test[:, None, :])
  with pytest.raises(ValueError, match="tail ids"):
    kg.kge_energy("transe", y, r, np.array([[0, 0, 7]]), np.array([[[0, 0, 1]]]))
  with pytest.raises(ValueError, match="neg_triples"):
    kg.kge_energy("transe", y, r, test, test)


def test_synthetic_kg_shapes():
  data = kg.make_synthetic_transe_kg(0)
  assert data.train.shape == (1800, 3) and data.test.shape == (200, 3)
  allt = np.concatenate([data.train, data.test])
  assert len({tuple(t) for t in allt.tolist()}) == 2000
  assert allt[:, 1].max() == 4 and allt[:, 0].max() <= 199


@pytest.mark.slow
def test_transe_descent_reaches_mrr_half():
  data = kg.make_synthetic_transe_kg(0)
  y, r, trace = jax.jit(lambda k: kg.train_kge(k, "transe", data.train, 200, 5, dim=32, num_steps=300, lr=1e-3))(
      jax.random.key(0))
  assert float(trace[-1]) < 0.1 * float(trace[0])
  assert kg.filtered_mrr("transe", y, r, data.test, np.concatenate([data.train, data.test])) > 0.5
