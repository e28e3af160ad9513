"""Tests for jaxgen.graph.energy: TWIRLS and HALO fixtures, closed forms and the invariants of spec B.8.

Fixture tolerance: atol 1e-5, rtol 1e-4 (spec G); the fixed-point test runs in float64 at 1e-4 after 500 steps.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.graph import energy, ops
from tests.graph.conftest import fixture_path, make_graph, random_undirected_graph

ATOL, RTOL = 1e-5, 1e-4


def _twirls_settings():
  path = fixture_path("twirls_propagation_settings.json")
  return json.loads(path.read_text())


@pytest.mark.parametrize("index", range(6))
def test_twirls_fixture(index):
  setting = _twirls_settings()[index]
  data = np.load(fixture_path("twirls_propagation.npz"))
  graph = make_graph(data["senders"], data["receivers"], int(data["n_node"]))
  y = energy.twirls_propagate(
      graph, jnp.asarray(data["X"]), num_steps=setting["K"], alpha=setting["alp"], lam=setting["lam"],
      precondition=setting["precond"], attention=setting["attention"], p=setting["p"], tau=setting["tau"],
      T=setting["T"], attn_before=setting["init_att"])
  np.testing.assert_allclose(y, data["Y__" + setting["name"]], atol=ATOL, rtol=RTOL)


def _halo():
  data = np.load(fixture_path("halo_relation_step.npz"))
  na, nb = int(data["n_a"]), int(data["n_b"])
  offset = {"a": 0, "b": na}
  names = ["a-ab-b", "b-ab_inv-a", "a-aa-a", "a-aa_inv-a"]
  senders, receivers, relation, hs = [], [], [], []
  for t, name in enumerate(names):
    src, _, dst = name.split("-")
    senders.append(data[f"edges__{name}__src"] + offset[src])
    receivers.append(data[f"edges__{name}__dst"] + offset[dst])
    relation.append(np.full(len(senders[-1]), t))
    hs.append(data[f"H__{name}"])
  graph = make_graph(np.concatenate(senders), np.concatenate(receivers), na + nb)
  x = jnp.concatenate([data["X_a"], data["X_b"]])
  return data, graph, jnp.asarray(np.concatenate(relation), jnp.int32), jnp.stack(hs), x, (1, 0, 3, 2)


def test_halo_fixture_one_and_four_steps():
  data, graph, relation, h, x, inverse = _halo()
  lam, alpha = float(data["lam"]), float(data["alpha"])
  step = jax.jit(lambda y: energy.relation_step(graph, relation, h, y, x, alpha=alpha, lam=lam, inverse=inverse))
  y1 = step(x)
  np.testing.assert_allclose(y1, np.concatenate([data["Y1_a"], data["Y1_b"]]), atol=ATOL, rtol=RTOL)
  y4 = step(step(step(y1)))
  np.testing.assert_allclose(y4, np.concatenate([data["Y4_a"], data["Y4_b"]]), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("halo_compat", [True, False])
def test_halo_step_is_preconditioned_gradient_step(halo_compat):
  data, graph, relation, h, x, inverse = _halo()
  lam, alpha = float(data["lam"]), float(data["alpha"])
  y = jax.random.normal(jax.random.key(0), x.shape)
  anchor = lam * x if halo_compat else x
  grad = jax.grad(lambda yy: energy.relation_energy(graph, relation, h, yy, anchor, lam=lam, inverse=inverse))(y)
  deg = np.bincount(np.asarray(graph.senders), minlength=x.shape[0]).astype(np.float32)
  expected = jax.nn.relu(y - alpha * 0.5 * grad / (1.0 + lam * deg)[:, None])
  got = energy.relation_step(graph, relation, h, y, x, alpha=alpha, lam=lam, inverse=inverse,
                             halo_compat=halo_compat)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_relation_step_rejects_bad_inverse():
  _, graph, relation, h, x, _ = _halo()
  with pytest.raises(ValueError, match="inverse"):
    energy.relation_step(graph, relation, h, x, x, alpha=0.3, lam=0.7, inverse=(0, 1, 2, 2))


def _problem(seed=0, n=20, d=3, dtype=np.float32):
  graph = random_undirected_graph(seed, n)
  rng = np.random.default_rng(seed)
  w = (rng.random(len(graph.senders)) + 0.5).astype(dtype)
  w = _symmetrize(graph, w)
  f = rng.normal(size=(n, d)).astype(dtype)
  gamma = (rng.random(n) + 0.5).astype(dtype)
  return graph, w, f, gamma


def _symmetrize(graph, w):
  n = int(graph.n_node[0])
  m = np.zeros((n, n), w.dtype)
  m[graph.receivers, graph.senders] = w
  m = np.triu(m) + np.triu(m).T
  return m[graph.receivers, graph.senders]


def _dense_laplacian(graph, w):
  a = np.zeros((int(graph.n_node[0]),) * 2)
  np.add.at(a, (graph.receivers, graph.senders), np.asarray(w, np.float64))
  return np.diag(a.sum(1)) - a


def test_fixed_point_matches_closed_form_float64():
  with jax.enable_x64(True):
    graph, w, f, gamma = _problem(dtype=np.float64)
    lam = 0.7
    lap = _dense_laplacian(graph, w)
    y_star = np.linalg.solve(np.diag(gamma) + lam * lap, gamma[:, None] * f)
    f, w, gamma = jnp.asarray(f), jnp.asarray(w), jnp.asarray(gamma)
    jac = lambda y: energy.jacobi_step(graph, w, y, f, alpha=1.0, lam=lam, gamma=gamma)
    y_jac, _ = energy.unroll(jac, f, 500)
    np.testing.assert_allclose(y_jac, y_star, atol=1e-4)
    alpha = 1.0 / float(energy.lipschitz_bound(graph, w, gamma, lam))
    grad = lambda y: energy.gradient_step(graph, w, y, f, alpha=alpha, lam=lam, gamma=gamma)
    y_gd, _ = energy.unroll(grad, f, 500)
    np.testing.assert_allclose(y_gd, y_star, atol=1e-4)
    hb = lambda c: energy.heavy_ball_step(graph, w, c, f, alpha=alpha, beta=0.5, lam=lam, gamma=gamma)
    (y_hb, _), _ = energy.unroll(hb, (f, f), 500)
    np.testing.assert_allclose(y_hb, y_star, atol=1e-4)
    nest = lambda c: energy.nesterov_step(graph, w, c, f, alpha=alpha, beta=0.5, lam=lam, gamma=gamma)
    (y_n, _), _ = energy.unroll(nest, (f, f), 500)
    np.testing.assert_allclose(y_n, y_star, atol=1e-4)


def test_quad_energy_matches_dense_trace():
  graph, w, f, gamma = _problem(1)
  y = np.random.default_rng(5).normal(size=f.shape).astype(np.float32)
  lam = 0.9
  lap = _dense_laplacian(graph, w)
  expected = 0.5 * np.sum(gamma[:, None] * (y - f) ** 2) + 0.5 * lam * np.trace(y.T @ lap @ y)
  got = energy.quad_energy(graph, w, jnp.asarray(y), jnp.asarray(f), lam=lam, gamma=jnp.asarray(gamma))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  a = -lap + np.diag(np.diag(lap))
  d = a.sum(1)
  a_hat = a / np.sqrt(d[:, None] * d[None, :])
  expected_n = 0.5 * np.sum((y - f) ** 2) + 0.5 * lam * np.trace(y.T @ (np.eye(len(d)) - a_hat) @ y)
  got_n = energy.quad_energy(graph, w, jnp.asarray(y), jnp.asarray(f), lam=lam, normalized=True)
  np.testing.assert_allclose(got_n, expected_n, rtol=1e-5)


@pytest.mark.parametrize("normalized", [False, True])
def test_gradient_step_equals_autodiff(normalized):
  graph, w, f, gamma = _problem(2)
  y = jnp.asarray(np.random.default_rng(3).normal(size=f.shape), jnp.float32)
  kw = dict(lam=1.3, gamma=jnp.asarray(gamma), normalized=normalized)
  grad = jax.grad(lambda yy: energy.quad_energy(graph, w, yy, jnp.asarray(f), **kw))(y)
  got = energy.gradient_step(graph, w, y, jnp.asarray(f), alpha=0.05, **kw)
  np.testing.assert_allclose(got, y - 0.05 * grad, atol=1e-5)


def _is_non_increasing(trace, tol=1e-6):
  trace = np.asarray(trace, np.float64)
  return np.all(np.diff(trace) <= tol * np.maximum(1.0, np.abs(trace[:-1])))


def test_monotone_energy_decrease():
  graph, w, f, gamma = _problem(3)
  f, w, gamma = jnp.asarray(f), jnp.asarray(w), jnp.asarray(gamma)
  lam = 2.0
  alpha = 1.0 / float(energy.lipschitz_bound(graph, w, gamma, lam))
  e = lambda y: energy.quad_energy(graph, w, y, f, lam=lam, gamma=gamma)
  steps = {
      "gradient": lambda y: energy.gradient_step(graph, w, y, f, alpha=alpha, lam=lam, gamma=gamma),
      "jacobi": lambda y: energy.jacobi_step(graph, w, y, f, alpha=1.0, lam=lam, gamma=gamma),
      "prox_relu": lambda y: energy.prox_gradient_step(graph, w, y, f, alpha=alpha, lam=lam, gamma=gamma,
                                                       prox="relu", precondition=False),
  }
  for name, step in steps.items():
    y0 = jax.nn.relu(f) if name == "prox_relu" else f + 1.0
    _, trace = energy.unroll(step, y0, 50, record_energy=e)
    assert _is_non_increasing(jnp.concatenate([e(y0)[None], trace])), name
  mu = 0.3
  e_l1 = lambda y: e(y) + mu * jnp.sum(jnp.abs(y))
  step = lambda y: energy.prox_gradient_step(graph, w, y, f, alpha=alpha, lam=lam, gamma=gamma, prox=("l1", mu),
                                             precondition=False)
  _, trace = energy.unroll(step, f, 50, record_energy=e_l1)
  assert _is_non_increasing(jnp.concatenate([e_l1(f)[None], trace]))


def test_irls_majorize_minimize_decreases_robust_energy():
  graph, _, f, _ = _problem(4)
  f = jnp.asarray(f)
  lam, p, tau = 1.0, 0.5, 0.1
  e = lambda y: energy.robust_energy(graph, None, y, f, lam=lam, p=p, tau=tau)

  def step(y):
    w, _ = energy.irls_edge_weights(graph, y, p=p, tau=tau)
    return energy.jacobi_step(graph, w, y, f, alpha=1.0, lam=lam)

  y0 = f + jax.random.normal(jax.random.key(0), f.shape)
  _, trace = energy.unroll(step, y0, 30, record_energy=e)
  assert _is_non_increasing(jnp.concatenate([e(y0)[None], trace]), tol=1e-5)
  # The IRLS weight is min(1/tau, rho'(z)) for the robust rho.
  y = jax.random.normal(jax.random.key(1), f.shape)
  w, d = energy.irls_edge_weights(graph, y, p=p, tau=tau)
  z = np.sum((np.asarray(y)[graph.senders] - np.asarray(y)[graph.receivers]) ** 2, -1) + 1e-7
  np.testing.assert_allclose(w, np.minimum(1 / tau, z ** (p / 2 - 1)) + 1e-9, rtol=1e-4)
  np.testing.assert_allclose(d, np.bincount(graph.receivers, w, minlength=f.shape[0]), rtol=1e-5)


def test_irls_p2_is_constant_and_matches_no_attention():
  graph = ops.add_self_loops(random_undirected_graph(5, 20))
  x = jax.random.normal(jax.random.key(0), (20, 4))
  w, _ = energy.irls_edge_weights(graph, x, p=2.0, tau=1.0)
  np.testing.assert_allclose(w, np.ones_like(w), atol=1e-6)
  plain = energy.twirls_propagate(graph, x, num_steps=8, alpha=1.0, lam=1.0)
  attn = energy.twirls_propagate(graph, x, num_steps=8, alpha=1.0, lam=1.0, attention=True, p=2.0, tau=0.5,
                                 attn_before=True)
  np.testing.assert_allclose(attn, plain, atol=1e-5)


def test_lambda_zero_or_edgeless_returns_anchor():
  graph, w, f, _ = _problem(6)
  f = jnp.asarray(f)
  y0 = jnp.zeros_like(f)
  y, _ = energy.unroll(lambda y: energy.jacobi_step(graph, w, y, f, alpha=1.0, lam=0.0), y0, 3)
  np.testing.assert_allclose(y, f, atol=1e-6)
  edgeless = make_graph(np.zeros(0, np.int32), np.zeros(0, np.int32), f.shape[0])
  y, _ = energy.unroll(lambda y: energy.jacobi_step(edgeless, None, y, f, alpha=1.0, lam=5.0), y0, 3)
  np.testing.assert_allclose(y, f, atol=1e-6)


def test_prox_maps():
  y = jnp.array([[-2.0, -0.1, 0.0, 0.05, 1.5]])
  np.testing.assert_allclose(energy.soft_threshold(y, 0.1), [[-1.9, 0.0, 0.0, 0.0, 1.4]], atol=1e-7)
  graph, w, f, _ = _problem(7)
  f = jnp.asarray(f)
  y = f * 2.0
  relu = energy.prox_gradient_step(graph, w, y, f, alpha=0.1, lam=1.0, prox="relu")
  assert float(jnp.min(relu)) >= 0.0
  mu, alpha = 0.4, 0.05
  plain = y - alpha * energy.energy_grad(graph, w, y, f, lam=1.0)
  l1 = energy.prox_gradient_step(graph, w, y, f, alpha=alpha, lam=1.0, prox=("l1", mu), precondition=False)
  big = np.abs(np.asarray(plain)) > mu * alpha
  np.testing.assert_allclose(np.abs(plain)[big] - np.abs(l1)[big], mu * alpha, atol=1e-6)
  assert np.all(np.asarray(l1)[~big] == 0)
  with pytest.raises(ValueError, match="prox"):
    energy.prox_gradient_step(graph, w, y, f, alpha=0.1, lam=1.0, prox="l2")


def test_permutation_equivariance():
  graph = ops.add_self_loops(random_undirected_graph(8, 20))
  x = jax.random.normal(jax.random.key(0), (20, 3))
  perm = np.random.default_rng(0).permutation(20)
  inv = np.argsort(perm)  # new id of old node i is inv[i]
  permuted = make_graph(inv[graph.senders], inv[graph.receivers], 20)
  kw = dict(num_steps=6, alpha=1.0, lam=1.0, attention=True, p=0.1, tau=0.2)
  out = energy.twirls_propagate(graph, x, **kw)
  out_p = energy.twirls_propagate(permuted, x[perm], **kw)
  np.testing.assert_allclose(out_p, out[perm], atol=1e-5)


def test_jit_and_vmap_over_feature_batch():
  graph = ops.add_self_loops(random_undirected_graph(9, 20))
  xs = jax.random.normal(jax.random.key(0), (4, 20, 3))
  fn = lambda x: energy.twirls_propagate(graph, x, num_steps=5, alpha=1.0, lam=1.0, attention=True, p=0.5,
                                         tau=0.2)
  batched = jax.jit(jax.vmap(fn))(xs)
  for i in range(4):
    np.testing.assert_allclose(batched[i], fn(xs[i]), atol=1e-5)
  graph2, w, f, _ = _problem(9)
  step = jax.vmap(lambda y, f: energy.jacobi_step(graph2, w, y, f, alpha=1.0, lam=1.0))
  fs = jnp.stack([jnp.asarray(f), -jnp.asarray(f)])
  np.testing.assert_allclose(jax.jit(step)(fs, fs)[1], -jax.jit(step)(fs, fs)[0], atol=1e-5)


def test_energy_induced_messages_closed_form():
  graph = random_undirected_graph(10, 12)
  y = jax.random.normal(jax.random.key(0), (12, 3))
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
  w_mat = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
  neighbor_sum = np.asarray(ops.spmm(graph, None, y))
  msgs = energy.energy_induced_messages(lambda a, b: -a @ s @ b, y, graph)
  np.testing.assert_allclose(msgs, neighbor_sum @ np.asarray(s + s.T).T, atol=1e-4)
  m = lambda yi, yj: w_mat @ yj
  residual = energy.residual_to_message_fn(m, y, graph, energy.linear_message_energy(w_mat))
  np.testing.assert_allclose(residual, neighbor_sum @ np.asarray((w_mat - w_mat.T) / 2).T, atol=1e-4)
  sym = w_mat + w_mat.T
  residual = energy.residual_to_message_fn(lambda yi, yj: sym @ yj, y, graph, energy.linear_message_energy(sym))
  np.testing.assert_allclose(residual, 0.0, atol=1e-4)


def test_bloom_model_trains_end_to_end():
  graph = ops.add_self_loops(random_undirected_graph(11, 20))
  x = jax.random.normal(jax.random.key(0), (20, 6))
  model = energy.BloomModel(before=(8, 3), after=(3,), num_steps=4, learn_lam=True, input_dropout=0.2,
                            dropout=0.1)
  params = model.init(jax.random.key(1), x, graph)
  assert "lam_raw" in params["params"]
  np.testing.assert_allclose(jax.nn.softplus(params["params"]["lam_raw"]), 1.0, rtol=1e-5)
  labels = jnp.arange(20) % 3

  def loss(p):
    logits = model.apply(p, x, graph, deterministic=False, rngs={"dropout": jax.random.key(2)})
    return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(20), labels])

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(value)
  assert float(jnp.abs(grads["params"]["lam_raw"])) > 0  # lambda receives a gradient through the unroll
  # num_steps = 0 is the plain MLP.
  mlp = energy.BloomModel(before=(8, 3), num_steps=0)
  p = mlp.init(jax.random.key(0), x, graph)
  h = jax.nn.relu(x @ p["params"]["before_0"]["kernel"] + p["params"]["before_0"]["bias"][None, :])
  expected = h @ p["params"]["before_1"]["kernel"] + p["params"]["before_1"]["bias"][None, :]
  np.testing.assert_allclose(mlp.apply(p, x, graph), expected, atol=1e-5)


def test_bloom_model_starts_from_twirls_xavier_normal():
  """TWIRLS initialises every linear layer with torch's ``xavier_normal_`` (untruncated, var 2/(fan_in+fan_out))
  and zero biases; Flax's default (truncated LeCun normal, var 1/fan_in) would differ in scale and in the tails."""
  graph = ops.add_self_loops(random_undirected_graph(3, 4))
  fan_in, width, classes = 3000, 200, 7
  params = energy.BloomModel(before=(width, classes), after=(classes,), num_steps=1).init(
      jax.random.key(0), jnp.zeros((4, fan_in)), graph)["params"]
  for name, (n_in, n_out) in {"before_0": (fan_in, width), "before_1": (width, classes),
                              "after_0": (classes, classes)}.items():
    w = np.asarray(params[name]["kernel"], np.float64)
    assert w.shape == (n_in, n_out)
    np.testing.assert_array_equal(params[name]["bias"], 0.0)
    if w.size >= 10_000:  # enough draws to pin the scale (and see the untruncated tail)
      std = np.sqrt(2.0 / (n_in + n_out))
      assert abs(w.std() / std - 1.0) < 0.02, (name, w.std(), std)
      assert np.abs(w).max() > 3.0 * std  # a truncated normal would stop at 2 std
