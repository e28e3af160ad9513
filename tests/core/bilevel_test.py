"""Tests for jaxgen.core.bilevel: meta-gradients through inner loops (closed forms, finite differences)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxgen.core import bilevel

K, ALPHA = 5, 0.15


def _quadratic_problem():
  rng = np.random.default_rng(0)
  m = rng.normal(size=(3, 3))
  h = m @ m.T / 3 + 0.5 * np.eye(3)                     # SPD inner Hessian
  return {"a": rng.normal(size=3), "h": h}, {"b": rng.normal(size=3)}, rng.normal(size=3)


def _inner_quadratic(theta, batch):
  d = theta - batch["a"]
  return 0.5 * d @ (batch["h"] @ d)


def _outer_quadratic(theta, batch):
  return 0.5 * jnp.sum((theta - batch["b"]) ** 2)


def _quadratic_closed_form(inner, outer, theta0, num_exact):
  """SGD on 0.5 (t-a)^T H (t-a): t_K = a + M^K (t0 - a), M = I - alpha H; gradient of the outer loss."""
  m = np.eye(3) - ALPHA * inner["h"]
  theta_k = inner["a"] + np.linalg.matrix_power(m, K) @ (theta0 - inner["a"])
  grad_out = theta_k - outer["b"]
  # The last `num_exact` steps contribute M^T each; first-order steps contribute the identity.
  return theta_k, np.linalg.matrix_power(m, num_exact).T @ grad_out


@pytest.mark.parametrize("mode,truncation,num_exact", [
    ("full", None, K), ("first_order", None, 0), ("truncated", 2, 2), ("truncated", K, K),
    ("truncated", 0, 0)])
def test_quadratic_meta_gradient_closed_form(mode, truncation, num_exact):
  inner, outer, theta0 = _quadratic_problem()
  with jax.enable_x64(True):
    kwargs = dict(num_steps=K, lr=ALPHA, mode=mode, truncation=truncation)
    theta_k, (value, grad) = jax.jit(lambda t: (
        bilevel.inner_adapt(t, inner, _inner_quadratic, **kwargs),
        bilevel.meta_value_and_grad(t, inner, outer, _inner_quadratic, outer_loss_fn=_outer_quadratic, **kwargs),
    ))(jnp.asarray(theta0))
    theta_expected, grad_expected = _quadratic_closed_form(inner, outer, theta0, num_exact)
    np.testing.assert_allclose(theta_k, theta_expected, rtol=1e-12)
    np.testing.assert_allclose(value, 0.5 * np.sum((theta_expected - outer["b"]) ** 2), rtol=1e-12)
    np.testing.assert_allclose(grad, grad_expected, rtol=1e-12)


def _mlp_init(key):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (2, 4)) * 0.8, "b1": jnp.zeros(4),
          "w2": jax.random.normal(k2, (4, 1)) * 0.8, "b2": jnp.zeros(1)}


def _mlp_loss(p, batch):
  h = jnp.tanh(batch["x"] @ p["w1"] + p["b1"][None, :])
  pred = (h @ p["w2"] + p["b2"][None, :])[:, 0]
  return jnp.mean((pred - batch["y"]) ** 2)


def _mlp_batches():
  kx, kq = jax.random.split(jax.random.key(1))
  xs, xq = jax.random.normal(kx, (8, 2)), jax.random.normal(kq, (8, 2))
  target = lambda x: jnp.sin(2 * x[:, 0]) + 0.5 * x[:, 1]
  return {"x": xs, "y": target(xs)}, {"x": xq, "y": target(xq)}


def _central_differences(f, params, eps=1e-6):
  flat, unravel = ravel_pytree(params)
  eye = jnp.eye(flat.shape[0], dtype=flat.dtype)
  f_flat = jax.vmap(lambda d: f(unravel(flat + d)))
  return (f_flat(eps * eye) - f_flat(-eps * eye)) / (2 * eps)


def _problems():
  inner, outer, theta0 = _quadratic_problem()
  inner_mlp, outer_mlp = _mlp_batches()
  return {
      "quadratic": (jnp.asarray(theta0), inner, outer, _inner_quadratic, _outer_quadratic),
      "tanh_mlp": (_mlp_init(jax.random.key(0)), inner_mlp, outer_mlp, _mlp_loss, _mlp_loss),
  }


@pytest.mark.parametrize("problem,inner_opt", [("quadratic", "sgd"), ("tanh_mlp", "sgd"), ("quadratic", "adam"),
                                               ("tanh_mlp", "adam"), ("quadratic", "momentum")])
def test_meta_gradient_matches_central_finite_differences(problem, inner_opt):
  with jax.enable_x64(True):
    params, inner, outer, loss_in, loss_out = _problems()[problem]
    params, inner, outer = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, inner, outer))
    opt = {"sgd": dict(lr=0.1),
           "adam": dict(optimizer=optax.adam(0.05, eps_root=1e-8)),
           "momentum": dict(optimizer=optax.sgd(0.1, momentum=0.9))}[inner_opt]
    f = lambda p: bilevel.outer_objective(p, inner, outer, loss_in, outer_loss_fn=loss_out, num_steps=4, **opt)
    # One compiled program for both (compilation dominates the runtime of these tiny problems).
    grad, fd = jax.jit(lambda p: (jax.grad(f)(p), _central_differences(f, p)))(params)
    np.testing.assert_allclose(ravel_pytree(grad)[0], fd, rtol=1e-6, atol=1e-9)


def test_first_order_equals_outer_gradient_at_adapted_point():
  inner, outer = _mlp_batches()
  params = _mlp_init(jax.random.key(2))
  kwargs = dict(num_steps=3, lr=0.2)

  @jax.jit
  def compute(p):
    meta = lambda mode: bilevel.meta_value_and_grad(p, inner, outer, _mlp_loss, mode=mode, **kwargs)[1]
    adapted = bilevel.inner_adapt(p, inner, _mlp_loss, **kwargs)
    # The FO-MAML formula: differentiate theta_0 + stop_gradient(theta_K - theta_0).
    fo_formula = lambda q: _mlp_loss(jax.tree.map(lambda a, b: a + jax.lax.stop_gradient(b - a), q,
                                                  bilevel.inner_adapt(q, inner, _mlp_loss, **kwargs)), outer)
    return meta("first_order"), jax.grad(_mlp_loss)(adapted, outer), jax.grad(fo_formula)(p), meta("full")

  grad_fo, grad_at_adapted, grad_formula, grad_full = compute(params)
  chex.assert_trees_all_close(grad_fo, grad_at_adapted, rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(grad_fo, grad_formula, rtol=1e-6, atol=1e-7)
  # And it differs from the exact meta-gradient (second-order terms matter here).
  assert not np.allclose(ravel_pytree(grad_full)[0], ravel_pytree(grad_fo)[0], rtol=1e-3)


@pytest.mark.parametrize("optimizer", [None, optax.adam(0.05, eps_root=1e-8)])
def test_truncation_endpoints_and_forward_values(optimizer):
  inner, outer = _mlp_batches()
  params = _mlp_init(jax.random.key(3))
  opt = dict(lr=0.1) if optimizer is None else dict(optimizer=optimizer)
  modes = [dict(mode="full"), dict(mode="first_order"), dict(mode="truncated", truncation=4),
           dict(mode="truncated", truncation=0), dict(mode="truncated", truncation=2)]
  run = jax.jit(lambda p: [bilevel.meta_value_and_grad(p, inner, outer, _mlp_loss, num_steps=4, **opt, **kw)
                           for kw in modes])
  (v_full, g_full), (v_fo, g_fo), (v_t4, g_t4), (v_t0, g_t0), (v_t2, g_t2) = run(params)
  chex.assert_trees_all_close(g_t4, g_full, rtol=1e-6, atol=1e-8)
  chex.assert_trees_all_close(g_t0, g_fo, rtol=1e-6, atol=1e-8)
  for v in (v_fo, v_t4, v_t0, v_t2):              # the forward pass is the same in every mode
    np.testing.assert_allclose(v, v_full, rtol=1e-6)
  assert not np.allclose(ravel_pytree(g_t2)[0], ravel_pytree(g_full)[0], rtol=1e-3)


def test_learning_rate_hypergradient():
  inner, outer, theta0 = _quadratic_problem()
  with jax.enable_x64(True):
    theta0 = jnp.asarray(theta0)
    f = lambda lr, mode: bilevel.outer_objective(theta0, inner, outer, _inner_quadratic,
                                                 outer_loss_fn=_outer_quadratic, num_steps=K, lr=lr, mode=mode)

    @jax.jit
    def compute(lr):
      fd = (f(lr + 1e-6, "full") - f(lr - 1e-6, "full")) / 2e-6
      adapted = bilevel.inner_adapt(theta0, inner, _inner_quadratic, num_steps=K, lr=lr, return_losses=True)
      return jax.grad(f)(lr, "full"), fd, jax.grad(f)(lr, "first_order"), adapted

    grad, fd, grad_fo, (theta_k, losses) = compute(jnp.asarray(ALPHA))
    np.testing.assert_allclose(grad, fd, rtol=1e-6)
    # First-order mode keeps d/d(lr) = -sum_k g_k . grad_out(theta_K).
    thetas = [np.asarray(theta0)]
    for _ in range(K - 1):
      thetas.append(thetas[-1] - ALPHA * inner["h"] @ (thetas[-1] - inner["a"]))
    g_sum = sum(inner["h"] @ (t - inner["a"]) for t in thetas)
    np.testing.assert_allclose(grad_fo, -g_sum @ (np.asarray(theta_k) - outer["b"]), rtol=1e-10)
    np.testing.assert_allclose(losses, [0.5 * (t - inner["a"]) @ inner["h"] @ (t - inner["a"]) for t in thetas],
                               rtol=1e-10)


def test_keys_per_step_batches_and_checkpoint():
  # A noisy inner loss: one sub-key and one batch per step.
  def loss_fn(p, batch, key):
    noise = jax.random.normal(key, p.shape)
    return jnp.sum((p - batch - noise) ** 2)

  batches = jnp.arange(12.0).reshape(4, 3)
  p0 = jnp.zeros(3)
  key = jax.random.key(4)
  out = bilevel.inner_adapt(p0, batches, loss_fn, num_steps=4, lr=0.25, key=key, batch_per_step=True)
  expected = p0
  for k, sub in enumerate(jax.random.split(key, 4)):
    expected = expected - 0.25 * jax.grad(loss_fn)(expected, batches[k], sub)
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  f = lambda p, ckpt: bilevel.outer_objective(p, batches, batches[0], loss_fn, key=key, num_steps=4, lr=0.25,
                                              batch_per_step=True, checkpoint=ckpt, mode="truncated",
                                              truncation=2)
  grads = jax.jit(lambda p: (jax.grad(f)(p, False), jax.grad(f)(p, True)))(p0)
  chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-6)


def test_params_dtype_and_structure_preserved_and_jit():
  params = {"w": jnp.ones((2, 2), jnp.bfloat16), "b": jnp.zeros(2)}
  loss = lambda p, x: jnp.sum((x @ p["w"].astype(jnp.float32) + p["b"][None, :]) ** 2)
  out = jax.jit(lambda p: bilevel.inner_adapt(p, jnp.ones((3, 2)), loss, num_steps=2, lr=0.01))(params)
  chex.assert_trees_all_equal_shapes_and_dtypes(out, params)


def test_validation_errors():
  p, b = jnp.zeros(2), jnp.zeros(2)
  loss = lambda p, b: jnp.sum((p - b) ** 2)
  with pytest.raises(ValueError, match="`num_steps`"):
    bilevel.inner_adapt(p, b, loss, num_steps=0, lr=0.1)
  with pytest.raises(ValueError, match="exactly one of `lr`"):
    bilevel.inner_adapt(p, b, loss, num_steps=2)
  with pytest.raises(ValueError, match="exactly one of `lr`"):
    bilevel.inner_adapt(p, b, loss, num_steps=2, lr=0.1, optimizer=optax.sgd(0.1))
  with pytest.raises(ValueError, match="`mode`"):
    bilevel.inner_adapt(p, b, loss, num_steps=2, lr=0.1, mode="second_order")
  with pytest.raises(ValueError, match="`truncation`"):
    bilevel.inner_adapt(p, b, loss, num_steps=2, lr=0.1, mode="truncated")
  with pytest.raises(ValueError, match="`truncation`"):
    bilevel.inner_adapt(p, b, loss, num_steps=2, lr=0.1, mode="truncated", truncation=3)
  with pytest.raises(ValueError, match="`truncation`"):
    bilevel.inner_adapt(p, b, loss, num_steps=2, lr=0.1, truncation=1)
  with pytest.raises(ValueError, match="`lr`"):
    bilevel.inner_adapt(p, b, loss, num_steps=2, lr=jnp.ones(2))
  with pytest.raises(ValueError, match="batch_per_step"):
    bilevel.inner_adapt(p, jnp.zeros((3, 2)), loss, num_steps=2, lr=0.1, batch_per_step=True)
