"""Tests for jaxgen.immunization.fsc: ProtoNet fixture, invariances, meta-gradients vs float64 finite differences."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.immunization import fsc

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "immunization"
# float32 fixture logits of magnitude <= ~10: agreement to 1e-5 relative / 2e-5 absolute (measured: <= 2e-6).
F32_TOL = {"rtol": 1e-5, "atol": 2e-5}
N_WAY, DIM_IN, DIM_FEAT = 3, 5, 4


def _linear_apply(w, x):
  return x.reshape(x.shape[0], -1) @ w.T              # the fixture's backbone: flatten, bias-free linear


def _tanh_apply(theta, x):
  return jnp.tanh(x @ theta["w1"] + theta["b1"][None, :]) @ theta["w2"]


def _tanh_theta(key, dtype=jnp.float32):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"w1": (jax.random.normal(k1, (DIM_IN, 6)) * 0.7).astype(dtype),
          "b1": (jax.random.normal(k2, (6,)) * 0.1).astype(dtype),
          "w2": (jax.random.normal(k3, (6, DIM_FEAT)) * 0.7).astype(dtype)}


def _toy_task(key, shots=2, queries=2, dtype=jnp.float32):
  """Support/query sets of a 3-way toy problem (class means well apart)."""
  k1, k2, k3 = jax.random.split(key, 3)
  means = jax.random.normal(k1, (N_WAY, DIM_IN)) * 1.5
  ys = jnp.repeat(jnp.arange(N_WAY), shots)
  yq = jnp.repeat(jnp.arange(N_WAY), queries)
  xs = means[ys] + 0.3 * jax.random.normal(k2, (ys.shape[0], DIM_IN))
  xq = means[yq] + 0.3 * jax.random.normal(k3, (yq.shape[0], DIM_IN))
  return xs.astype(dtype), ys, xq.astype(dtype), yq


@pytest.mark.parametrize("case", [0, 1])
def test_protonet_matches_reference_fixture(case):
  d = np.load(FIXTURES / f"lto_protonet_case{case}.npz")
  cfg = fsc.FSCConfig(_linear_apply, int(d["logits"].shape[1]), scale=float(d["scale"]), bias=float(d["bias"]))
  logits = fsc.fsc_protonet(jnp.asarray(d["backbone_weight"]), jnp.asarray(d["x_support"][0]),
                            jnp.asarray(d["y_support"][0].astype(np.int32)), jnp.asarray(d["x_query"][0]), cfg)
  np.testing.assert_allclose(logits, d["logits"], **F32_TOL)


def test_protonet_invariances():
  theta = _tanh_theta(jax.random.key(0))
  xs, ys, xq, _ = _toy_task(jax.random.key(1))
  cfg = fsc.FSCConfig(_tanh_apply, N_WAY, scale=7.0, bias=0.3)
  base = fsc.fsc_protonet(theta, xs, ys, xq, cfg)
  scaled = dataclasses.replace(cfg, apply_fn=lambda t, x: 3.7 * _tanh_apply(t, x))   # backbone output x c, c > 0
  np.testing.assert_allclose(fsc.fsc_protonet(theta, xs, ys, xq, scaled), base, rtol=1e-5, atol=1e-5)
  perm = jax.random.permutation(jax.random.key(2), ys.shape[0])                       # permuted support set
  np.testing.assert_allclose(fsc.fsc_protonet(theta, xs[perm], ys[perm], xq, cfg), base, rtol=1e-5, atol=1e-5)
  # One shot per class: a query equal to support sample c gets logit s (1 + b) for class c.
  one = fsc.fsc_protonet(theta, xs[::2], ys[::2], xs[::2], cfg)
  np.testing.assert_allclose(np.diag(one), 7.0 * 1.3, rtol=1e-5)


def test_linear_probe_zero_steps_gives_zero_logits():
  theta = _tanh_theta(jax.random.key(0))
  xs, ys, xq, _ = _toy_task(jax.random.key(1))
  logits = fsc.fsc_linear_probe(theta, xs, ys, xq, fsc.FSCConfig(_tanh_apply, N_WAY, steps=0))
  np.testing.assert_array_equal(logits, np.zeros((xq.shape[0], N_WAY)))


def test_linear_probe_one_step_matches_hand_derived_step():
  """One GD step from W = 0, c = 0: grad_W = s F^T (softmax(0) - Y) / n, written out by hand (float64)."""
  with jax.enable_x64(True):
    theta = _tanh_theta(jax.random.key(0), jnp.float64)
    xs, ys, xq, _ = _toy_task(jax.random.key(1), dtype=jnp.float64)
    s, lr = 10.0, 0.3
    feats = np.array(_tanh_apply(theta, xs), np.float64)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    resid = np.full((len(ys), N_WAY), 1.0 / N_WAY) - np.eye(N_WAY)[np.asarray(ys)]
    w = -lr * s * feats.T @ resid / len(ys)
    c = -lr * s * resid.mean(0)
    fq = np.array(_tanh_apply(theta, xq), np.float64)
    fq /= np.linalg.norm(fq, axis=1, keepdims=True)
    got = fsc.fsc_linear_probe(theta, xs, ys, xq, fsc.FSCConfig(_tanh_apply, N_WAY, steps=1, lr=lr, scale=s))
    np.testing.assert_allclose(got, s * (fq @ w + c), rtol=1e-12)


@pytest.mark.parametrize("method", fsc.METHODS)
def test_learners_fit_a_separable_support_set(method):
  theta = _tanh_theta(jax.random.key(0))
  xs, ys, xq, yq = _toy_task(jax.random.key(3), shots=4, queries=4)
  logits = jax.jit(lambda t: fsc.fsc_learner(method)(t, xs, ys, xs, fsc.FSCConfig(_tanh_apply, N_WAY)))(theta)
  assert logits.shape == (xs.shape[0], N_WAY)
  assert float(jnp.mean(jnp.argmax(logits, -1) == ys)) == 1.0


@pytest.mark.parametrize("method", ["finetune"])
def test_jit_matches_eager(method):
  theta = _tanh_theta(jax.random.key(0))
  xs, ys, xq, _ = _toy_task(jax.random.key(1))
  cfg = fsc.FSCConfig(_tanh_apply, N_WAY, steps=3)
  learner = fsc.fsc_learner(method)
  np.testing.assert_allclose(jax.jit(learner, static_argnums=4)(theta, xs, ys, xq, cfg),
                             learner(theta, xs, ys, xq, cfg), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method,steps,backbone_lr_scale", [
    ("protonet", 0, 1.0), ("linear_probe", 4, 1.0), ("finetune", 3, 1.0), ("maml_like", 3, 1.0),
    ("finetune", 3, 0.25)])
def test_meta_gradient_matches_float64_finite_differences(method, steps, backbone_lr_scale):
  """Exact meta-gradient (jax.grad through the inner lax.scan) vs central differences along random directions."""
  with jax.enable_x64(True):
    theta = _tanh_theta(jax.random.key(0), jnp.float64)
    xs, ys, xq, yq = _toy_task(jax.random.key(1), dtype=jnp.float64)
    cfg = fsc.FSCConfig(_tanh_apply, N_WAY, steps=steps, lr=0.3, backbone_lr_scale=backbone_lr_scale)
    learner = fsc.fsc_learner(method)

    def outer(t):
      return optax.softmax_cross_entropy_with_integer_labels(learner(t, xs, ys, xq, cfg), yq).mean()

    grad = jax.jit(jax.grad(outer))(theta)
    outer = jax.jit(outer)
    for i in range(3):
      direction = jax.tree.map(lambda a, k=i: jax.random.normal(jax.random.fold_in(jax.random.key(9), k), a.shape,
                                                                jnp.float64), theta)
      eps = 1e-5
      plus = outer(jax.tree.map(lambda a, d: a + eps * d, theta, direction))
      minus = outer(jax.tree.map(lambda a, d: a - eps * d, theta, direction))
      fd = (plus - minus) / (2 * eps)
      analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
      np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("method", ["linear_probe", "finetune", "maml_like"])
def test_first_order_equals_exact_with_zero_steps(method):
  theta = _tanh_theta(jax.random.key(0))
  xs, ys, xq, yq = _toy_task(jax.random.key(1))
  grads = []
  for mode in ("full", "first_order"):
    cfg = fsc.FSCConfig(_tanh_apply, N_WAY, steps=0, grad_mode=mode)
    grads.append(jax.grad(lambda t, cfg=cfg: jnp.sum(fsc.fsc_learner(method)(t, xs, ys, xq, cfg) ** 2))(theta))
  jax.tree.map(np.testing.assert_array_equal, grads[0], grads[1])


def test_first_order_finetune_is_the_gradient_at_the_adapted_point():
  """FO: d/dtheta of the outer loss at (theta + [theta_T - theta], W_0(theta) + [W_T - W_0]) with [.] constant."""
  with jax.enable_x64(True):
    theta = _tanh_theta(jax.random.key(0), jnp.float64)
    xs, ys, xq, yq = _toy_task(jax.random.key(1), dtype=jnp.float64)
    s, lr, steps = 10.0, 0.2, 3
    cfg = fsc.FSCConfig(_tanh_apply, N_WAY, steps=steps, lr=lr, scale=s, grad_mode="first_order")

    def logits_fn(t, w, x):
      return s * fsc.normalize(_tanh_apply(t, x)) @ w

    def head0(t):
      return fsc.normalize(fsc.prototypes(_tanh_apply(t, xs), ys, N_WAY)).T

    t, w = theta, head0(theta)
    for _ in range(steps):                 # plain Python loop, independent of core.bilevel
      gt, gw = jax.grad(lambda a, b: optax.softmax_cross_entropy_with_integer_labels(
          logits_fn(a, b, xs), ys).mean(), argnums=(0, 1))(t, w)
      t = jax.tree.map(lambda a, g: a - lr * g, t, gt)
      w = w - lr * gw
    d_theta = jax.tree.map(lambda a, b: a - b, t, theta)
    d_w = w - head0(theta)

    def expected_outer(th):
      adapted = jax.tree.map(lambda a, d: a + d, th, d_theta)
      return optax.softmax_cross_entropy_with_integer_labels(logits_fn(adapted, head0(th) + d_w, xq), yq).mean()

    def outer(th):
      return optax.softmax_cross_entropy_with_integer_labels(fsc.fsc_finetune(th, xs, ys, xq, cfg), yq).mean()

    np.testing.assert_allclose(outer(theta), expected_outer(theta), rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                 jax.grad(outer)(theta), jax.grad(expected_outer)(theta))


@pytest.mark.parametrize("method", fsc.METHODS)
def test_bad_input_raises(method):
  theta = _tanh_theta(jax.random.key(0))
  xs, ys, xq, _ = _toy_task(jax.random.key(1))
  cfg = fsc.FSCConfig(_tanh_apply, N_WAY, steps=2)
  learner = fsc.fsc_learner(method)
  with pytest.raises(ValueError, match="x_support"):
    learner(theta, xs[:0], ys[:0], xq, cfg)                              # empty support set
  with pytest.raises(ValueError, match="y_support"):
    learner(theta, xs, ys.at[0].set(N_WAY), xq, cfg)                     # label outside n_way
  with pytest.raises(ValueError, match="y_support"):
    learner(theta, xs, ys.at[0].set(-1), xq, cfg)
  with pytest.raises(ValueError, match="no example"):
    learner(theta, xs[2:], ys[2:], xq, cfg)                              # class 0 without support examples
  with pytest.raises(ValueError, match="x_query"):
    learner(theta, xs, ys, xq[:, :3], cfg)
  with pytest.raises(ValueError, match="grad_mode"):
    learner(theta, xs, ys, xq, dataclasses.replace(cfg, grad_mode="second"))
  with pytest.raises(ValueError, match="method"):
    fsc.fsc_learner("knn")
