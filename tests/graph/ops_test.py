"""Tests for jaxgen.graph.ops: segment_sum message passing vs dense oracles, batching, padding, bad input."""

import chex
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

from jaxgen.graph import energy, ops
from tests.graph.conftest import make_graph, random_undirected_graph


def test_spmm_degree_and_norm_match_dense():
  graph = random_undirected_graph(0, 15)
  rng = np.random.default_rng(1)
  w = rng.random(len(graph.senders)).astype(np.float32) + 0.1
  y = rng.normal(size=(15, 3)).astype(np.float32)
  a = np.zeros((15, 15), np.float64)
  np.add.at(a, (graph.receivers, graph.senders), w)  # A[recv, send] = w, independent float64 oracle
  np.testing.assert_allclose(ops.dense_adjacency(graph, w), a, atol=1e-6)
  np.testing.assert_allclose(ops.spmm(graph, w, y), a @ y, atol=1e-5)
  d = a.sum(1)
  np.testing.assert_allclose(ops.degree(graph, w), d, rtol=1e-6)
  wn = ops.sym_norm_weights(graph, ops.degree(graph, w), w)
  a_hat = a / np.sqrt(d[:, None] * d[None, :])
  np.testing.assert_allclose(ops.dense_adjacency(graph, wn), a_hat, atol=1e-6)


def test_sym_norm_is_zero_for_isolated_nodes():
  graph = make_graph([0, 1], [1, 0], 3)  # node 2 isolated
  d = ops.degree(graph)
  np.testing.assert_array_equal(d, [1.0, 1.0, 0.0])
  np.testing.assert_allclose(ops.sym_norm_weights(graph, d), [1.0, 1.0])
  self_loop = make_graph([2], [2], 3)
  np.testing.assert_array_equal(ops.sym_norm_weights(self_loop, jnp.zeros(3)), [0.0])


def test_self_loops_and_undirected():
  graph = make_graph([0, 1, 2, 2], [1, 2, 2, 0], 3)
  looped = ops.add_self_loops(graph)
  np.testing.assert_array_equal(looped.senders[-3:], [0, 1, 2])
  np.testing.assert_array_equal(looped.receivers[-3:], [0, 1, 2])
  assert int(looped.n_edge[0]) == 7
  no_loops = ops.remove_self_loops(looped)
  np.testing.assert_array_equal(no_loops.senders, [0, 1, 2])
  np.testing.assert_array_equal(no_loops.receivers, [1, 2, 0])
  assert int(no_loops.n_edge[0]) == 3
  und = ops.to_undirected(no_loops)
  pairs = set(zip(und.senders.tolist(), und.receivers.tolist()))
  assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0)} and len(und.senders) == 6


def test_sparse_features_matmul():
  rng = np.random.default_rng(0)
  x = (rng.random((10, 12)) < 0.2) * rng.random((10, 12))
  sp = ops.SparseFeatures.from_dense(x, row_normalize=True)
  xn = x / np.where(x.sum(1, keepdims=True) == 0, 1, x.sum(1, keepdims=True))
  w = rng.normal(size=(12, 4)).astype(np.float32)
  np.testing.assert_allclose(sp.matmul(jnp.asarray(w)), xn @ w, atol=1e-5)
  np.testing.assert_allclose(sp.todense(), xn, atol=1e-6)
  out = jax.jit(lambda s, w: s.matmul(w))(sp, w)  # a pytree with static shape
  np.testing.assert_allclose(out, xn @ w, atol=1e-5)


def _propagate(graph, x, w=None):
  return energy.twirls_propagate(graph, x, num_steps=6, alpha=1.0, lam=1.0, attention=True, p=0.5, tau=0.2,
                                 edge_weight=w)


def test_batched_graph_equals_per_graph():
  g1, g2 = random_undirected_graph(0, 12), random_undirected_graph(1, 7)
  rng = np.random.default_rng(0)
  x1, x2 = rng.normal(size=(12, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
  g1 = ops.add_self_loops(g1._replace(nodes=x1))
  g2 = ops.add_self_loops(g2._replace(nodes=x2))
  batch = jraph.batch([g1, g2])
  out = _propagate(batch, jnp.asarray(batch.nodes))
  np.testing.assert_allclose(out[:12], _propagate(g1, x1), atol=1e-5)
  np.testing.assert_allclose(out[12:], _propagate(g2, x2), atol=1e-5)


def test_padding_to_static_budget_jits_once():
  rng = np.random.default_rng(0)
  graphs = []
  for seed, n in ((0, 12), (1, 9)):
    g = random_undirected_graph(seed, n)
    graphs.append(ops.add_self_loops(g._replace(nodes=rng.normal(size=(n, 3)).astype(np.float32))))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def padded_propagate(graph):
    return _propagate(graph, graph.nodes, ops.edge_mask(graph))

  for g in graphs:
    n = g.nodes.shape[0]
    padded = ops.pad_graph(g, n_node=16, n_edge=128)
    out = padded_propagate(padded)
    assert out.shape == (16, 3)
    np.testing.assert_allclose(out[:n], _propagate(g, g.nodes), atol=1e-5)


def test_bad_input_raises_value_error():
  graph = make_graph([0, 5], [1, 0], 3)
  y = jnp.ones((3, 2))
  with pytest.raises(ValueError, match="senders out of range"):
    ops.spmm(graph, None, y)
  graph = make_graph([0, 1], [1, -1], 3)
  with pytest.raises(ValueError, match="receivers out of range"):
    ops.degree(graph)
  graph = make_graph([0, 1], [1, 0], 3)
  with pytest.raises(ValueError, match="mismatched node counts"):
    ops.spmm(graph, None, jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="mismatched node counts"):
    energy.twirls_propagate(graph._replace(nodes=np.ones((5, 2))), y, num_steps=2, alpha=1.0, lam=1.0)
  with pytest.raises(ValueError, match="non-finite"):
    ops.spmm(graph, jnp.array([1.0, jnp.nan]), y)
  with pytest.raises(ValueError, match="non-finite"):
    energy.gradient_step(graph, jnp.array([jnp.inf, 1.0]), y, y, alpha=0.1, lam=1.0)
  with pytest.raises(ValueError, match="one weight per edge"):
    ops.degree(graph, jnp.ones(3))
