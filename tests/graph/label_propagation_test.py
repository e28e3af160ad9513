"""Tests for jaxgen.graph.label_propagation against PyTorch Geometric fixtures (atol 1e-5, rtol 1e-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.graph import energy, label_propagation as lp, ops
from tests.graph.conftest import fixture_path, make_graph, random_undirected_graph

ATOL, RTOL = 1e-5, 1e-4


def _data():
  data = np.load(fixture_path("pyg_propagation.npz"))
  graph = make_graph(data["senders"], data["receivers"], int(data["n_node"]))
  return data, graph


@pytest.mark.parametrize("key,steps,alpha", [("appnp__K10_alpha0.1", 10, 0.1), ("appnp__K3_alpha0.5", 3, 0.5)])
def test_appnp_fixture(key, steps, alpha):
  data, graph = _data()
  out = lp.appnp_propagate(graph, jnp.asarray(data["X"]), num_steps=steps, alpha=alpha)
  np.testing.assert_allclose(out, data[key], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("key,steps,alpha", [("labelprop__L10_alpha0.9", 10, 0.9), ("labelprop__L3_alpha0.5", 3, 0.5)])
def test_label_propagation_fixture(key, steps, alpha):
  data, graph = _data()
  out = lp.label_propagation(graph, data["labels"], data["train_mask"], 4, num_steps=steps, alpha=alpha)
  np.testing.assert_allclose(out, data[key], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("autoscale", [True, False])
def test_correct_and_smooth_fixture(autoscale):
  data, graph = _data()
  corrected, smoothed = lp.correct_and_smooth(
      graph, jnp.asarray(data["cs_y_soft"]), data["labels"], data["train_mask"], num_correction_steps=10,
      correction_alpha=0.8, num_smoothing_steps=10, smoothing_alpha=0.8, autoscale=autoscale)
  np.testing.assert_allclose(corrected, data[f"cs_corrected__autoscale{autoscale}"], atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(smoothed, data[f"cs_smoothed__autoscale{autoscale}"], atol=ATOL, rtol=RTOL)


def test_special_cases_are_energy_descent_steps():
  data, graph = _data()
  x = jnp.asarray(data["X"])
  a = 0.3
  # APPNP: one gradient step of size a on the normalised energy with lambda = (1 - a) / a (self loops added).
  looped = ops.add_self_loops(graph)
  step = energy.gradient_step(looped, None, x * 0.5, x, alpha=a, lam=(1 - a) / a, normalized=True)
  np.testing.assert_allclose(lp.appnp_propagate(graph, x, num_steps=1, alpha=a),
                             energy.gradient_step(looped, None, x, x, alpha=a, lam=(1 - a) / a, normalized=True),
                             atol=1e-5)
  assert step.shape == x.shape
  # Label propagation: gradient step of size a, gamma = (1 - a) / a, then the box prox (a clip).
  y0 = jax.nn.one_hot(data["labels"], 4) * jnp.asarray(data["train_mask"], jnp.float32)[:, None]
  y = jax.random.uniform(jax.random.key(0), y0.shape)
  ours = lp.propagate_labels(graph, y, num_steps=1, alpha=a)  # starts from y, anchors at y
  via_energy = energy.prox_gradient_step(graph, None, y, y, alpha=a, lam=1.0, gamma=(1 - a) / a, normalized=True,
                                         prox="box", precondition=False)
  np.testing.assert_allclose(ours, via_energy, atol=1e-5)
  lp2 = lp.label_propagation(graph, data["labels"], data["train_mask"], 4, num_steps=1, alpha=a)
  np.testing.assert_allclose(lp2, jnp.clip(energy.gradient_step(graph, None, y0, y0, alpha=a, lam=1.0,
                                                                gamma=(1 - a) / a, normalized=True), 0, 1),
                             atol=1e-5)


def test_laplacian_regularizer_matches_dense():
  graph = random_undirected_graph(0, 10)
  z = jax.random.normal(jax.random.key(0), (10, 4))
  p = np.asarray(jax.nn.softmax(z, -1), np.float64)
  a = np.zeros((10, 10))
  a[graph.receivers, graph.senders] = 1.0
  expected = 0.5 * sum(a[i, j] * np.sum((p[i] - p[j]) ** 2) for i in range(10) for j in range(i + 1, 10))
  np.testing.assert_allclose(lp.laplacian_regularizer(graph, z), expected, rtol=1e-5)
  zz = np.asarray(z, np.float64)
  expected = 0.5 * sum(a[i, j] * np.sum((zz[i] - zz[j]) ** 2) for i in range(10) for j in range(i + 1, 10))
  np.testing.assert_allclose(lp.laplacian_regularizer(graph, z, on="logits"), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="on"):
    lp.laplacian_regularizer(graph, z, on="probs")


def test_bad_alpha():
  data, graph = _data()
  with pytest.raises(ValueError, match="alpha"):
    lp.label_propagation(graph, data["labels"], data["train_mask"], 4, alpha=1.5)
  with pytest.raises(ValueError, match="alpha"):
    lp.appnp_propagate(graph, jnp.asarray(data["X"]), num_steps=2, alpha=0.0)
