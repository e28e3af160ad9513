"""Sharpness diagnostics: quadratic closed forms, brute-force Hessian fixtures (f64), diagonal-net closed form."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.stability import (exact_hessian_trace, gauss_newton_trace, gd_linear_stable, hessian_trace,
                              hutchinson_frobenius_sq, hutchinson_trace, hvp, lanczos, sgd_linear_stable,
                              stability_report, top_eigenvalue, top_hessian_eigenvalue)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "optim"


def _quadratic(eigs, seed=0):
  """A = Q diag(eigs) Q^T as float64 NumPy, and L(theta) = 1/2 theta^T A theta with params split in a pytree."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(len(eigs), len(eigs))))
  a = (q * np.asarray(eigs)) @ q.T

  def loss(params, batch):
    theta = jnp.concatenate([params["x"], params["y"].ravel()])
    return 0.5 * theta @ (batch @ theta)

  n = len(eigs)
  params = {"x": jnp.asarray(rng.normal(size=3)), "y": jnp.asarray(rng.normal(size=(n - 3) // 2 * 2).reshape(-1, 2))}
  return a, loss, params


def test_quadratic_closed_forms():
  eigs = np.array([10.0, 4.0, 3.0, 2.0, 1.0, 0.5, -0.3, 0.1, 0.05])       # gapped top eigenvalue
  with jax.enable_x64(True):
    a, loss, params = _quadratic(eigs)
    batch = jnp.asarray(a)
    v = jax.tree.map(lambda x: jnp.ones_like(x) * 0.5, params)
    flat_v = np.full(len(eigs), 0.5)
    got = hvp(loss, params, batch, v)
    np.testing.assert_allclose(np.concatenate([got["x"], got["y"].ravel()]), a @ flat_v, rtol=1e-12)
    closure = lambda p: loss(p, batch)  # noqa: E731
    np.testing.assert_allclose(exact_hessian_trace(closure, params), eigs.sum(), rtol=1e-12)
    # Hutchinson: within 5 standard errors; the theoretical Rademacher variance is 2(||A||_F^2 - sum A_ii^2).
    num = 400
    est, se = hutchinson_trace(loss, params, batch, jax.random.key(0), num)
    theory_se = np.sqrt(2 * (np.sum(a ** 2) - np.sum(np.diag(a) ** 2)) / num)
    assert abs(float(est) - eigs.sum()) < 5 * theory_se
    np.testing.assert_allclose(float(se), theory_se, rtol=0.25)
    assert float(hessian_trace(closure, params, jax.random.key(0), num)) == pytest.approx(float(est), rel=1e-12)
    est_g, _ = hutchinson_trace(loss, params, batch, jax.random.key(1), num, dist="gaussian")
    assert abs(float(est_g) - eigs.sum()) < 5 * np.sqrt(2 * np.sum(a ** 2) / num)
    frob, frob_se = hutchinson_frobenius_sq(loss, params, batch, jax.random.key(2), num)
    assert abs(float(frob) - np.sum(eigs ** 2)) < 5 * float(frob_se) + 1e-9
    lam, vec = top_eigenvalue(loss, params, batch, jax.random.key(3), num_iters=500, tol=1e-14)
    np.testing.assert_allclose(float(lam), 10.0, rtol=1e-6)
    flat_vec = np.concatenate([vec["x"], vec["y"].ravel()])
    np.testing.assert_allclose(np.abs(flat_vec @ np.linalg.eigh(a)[1][:, -1]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(top_hessian_eigenvalue(closure, params, jax.random.key(3), 500, 1e-14)), 10.0,
                               rtol=1e-6)
    result = jax.jit(lambda p, b: lanczos(loss, p, b, jax.random.key(4), num_steps=len(eigs)))(params, batch)
    np.testing.assert_allclose(np.asarray(result.ritz_values), np.sort(eigs), rtol=1e-6, atol=1e-10)
    assert result.alphas.shape == (9,) and result.betas.shape == (8,)
    few = lanczos(loss, params, batch, jax.random.key(4), num_steps=6)
    np.testing.assert_allclose(float(few.ritz_values[-1]), 10.0, rtol=1e-4)   # extreme Ritz values converge first


def test_power_iteration_returns_largest_magnitude():
  # Negative curvature dominating: power iteration finds -5 (largest |lambda|), Lanczos sees both ends.
  eigs = np.array([-5.0, 2.0, 1.0, 0.5, 0.2])
  with jax.enable_x64(True):
    a, loss, params = _quadratic(eigs, seed=1)
    lam, _ = top_eigenvalue(loss, params, jnp.asarray(a), jax.random.key(0), num_iters=1000, tol=1e-13)
    np.testing.assert_allclose(float(lam), -5.0, rtol=1e-6)
    ritz = lanczos(loss, params, jnp.asarray(a), jax.random.key(0), num_steps=5).ritz_values
    np.testing.assert_allclose([float(ritz[0]), float(ritz[-1])], [-5.0, 2.0], rtol=1e-8)


def _relu_problem(name):
  data = np.load(FIXTURES / f"hessian_oracle_relu_{name}.npz")
  params = {"W": jnp.asarray(data["W"]), "a": jnp.asarray(data["a"])}

  def model(p, x):
    return jnp.sum(p["a"] * jax.nn.relu(p["W"] @ x))

  def loss(p, batch):
    xs, ys = batch
    return 0.5 * jnp.mean((jax.vmap(lambda x: model(p, x))(xs) - ys) ** 2)

  return data, params, model, loss, (jnp.asarray(data["X"]), jnp.asarray(data["y"]))


@pytest.mark.parametrize("name", ["interp", "generic"])
def test_relu_hessian_fixtures(name):
  with jax.enable_x64(True):
    data, params, model, loss, batch = _relu_problem(name)
    np.testing.assert_allclose(float(loss(params, batch)), data["loss"], rtol=1e-12, atol=1e-30)
    flat = jnp.concatenate([params["W"].ravel(), params["a"]])
    np.testing.assert_allclose(flat, data["theta_flat"], rtol=0)
    # hvp on every basis vector rebuilds the dense brute-force Hessian (row-major W then a, as theta_flat).
    unflat = lambda v: {"W": v[:40].reshape(8, 5), "a": v[40:]}  # noqa: E731
    dense = jax.vmap(lambda e: jnp.concatenate([(h := hvp(loss, params, batch, unflat(e)))["W"].ravel(), h["a"]]))(
        jnp.eye(48))
    np.testing.assert_allclose(dense, data["hessian"], rtol=1e-10, atol=1e-12)
    closure = lambda p: loss(p, batch)  # noqa: E731
    np.testing.assert_allclose(float(exact_hessian_trace(closure, params)), data["hessian_trace"], rtol=1e-10)
    lam, _ = top_eigenvalue(loss, params, batch, jax.random.key(0), num_iters=3000, tol=1e-15)
    np.testing.assert_allclose(float(lam), data["hessian_eig_max"], rtol=1e-8)
    ritz = lanczos(loss, params, batch, jax.random.key(1), num_steps=48).ritz_values
    np.testing.assert_allclose(float(ritz[-1]), data["hessian_eig_max"], rtol=1e-10)
    np.testing.assert_allclose(float(ritz[0]), data["hessian_eig_min"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(gauss_newton_trace(model, params, batch[0])), data["gn_trace"], rtol=1e-10)
    per_sample = jax.vmap(lambda x: sum(jnp.sum(g ** 2) for g in jax.tree.leaves(jax.grad(model)(params, x))))(
        batch[0])
    np.testing.assert_allclose(per_sample, data["per_sample_output_grad_sqnorm"], rtol=1e-10)
    est, se = hutchinson_trace(loss, params, batch, jax.random.key(2), 200)
    assert abs(float(est) - data["hessian_trace"]) < 5 * float(se)
    frob_sq, frob_se = hutchinson_frobenius_sq(loss, params, batch, jax.random.key(3), 200)
    assert abs(float(frob_sq) - data["hessian_frobenius"] ** 2) < 5 * float(frob_se)
    if name == "interp":   # H = GN at an interpolating point
      np.testing.assert_allclose(data["hessian_trace"], data["gn_trace"], rtol=1e-12)
      np.testing.assert_allclose(float(lam), data["gn_eig_max"], rtol=1e-8)


def test_diagonal_net_gauss_newton_closed_form():
  rng = np.random.default_rng(0)
  xs, u, v = rng.uniform(-1, 1, (30, 12)), rng.normal(size=12), rng.normal(size=12)
  with jax.enable_x64(True):
    model = lambda p, x: jnp.sum(p["u"] * p["v"] * x)  # noqa: E731
    got = gauss_newton_trace(model, {"u": jnp.asarray(u), "v": jnp.asarray(v)}, jnp.asarray(xs))
    expected = np.mean(np.sum(xs ** 2 * (u ** 2 + v ** 2), axis=1))
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)
    assert float(got) >= 2 * np.mean(np.sum(xs ** 2 * np.abs(u * v), axis=1))   # >= data-weighted l1 of beta
    # At an interpolating point of the square loss the Hessian trace equals tr(G).
    ys = xs @ (u * v)
    loss = lambda p: 0.5 * jnp.mean((jnp.asarray(xs) @ (p["u"] * p["v"]) - jnp.asarray(ys)) ** 2)  # noqa: E731
    np.testing.assert_allclose(float(exact_hessian_trace(loss, {"u": jnp.asarray(u), "v": jnp.asarray(v)})),
                               expected, rtol=1e-10)


def test_stability_checks_and_report_under_jit():
  assert bool(gd_linear_stable(3.9, 0.5)) and not bool(gd_linear_stable(4.1, 0.5))
  assert bool(sgd_linear_stable(19.0, 0.1)) and not bool(sgd_linear_stable(21.0, 0.1))
  eigs = np.array([3.0, 2.0, 1.0, 1.0, 1.0])              # lambda_max 3, trace 8
  a, loss, params = _quadratic(eigs, seed=2)
  batch = jnp.asarray(a, jnp.float32)
  params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  report = jax.jit(lambda p, b: stability_report(loss, p, b, 0.5, key=jax.random.key(0), exact_trace=True,
                                                 num_iters=300, tol=1e-7))(params, batch)
  np.testing.assert_allclose(float(report["lambda_max"]), 3.0, rtol=1e-4)
  np.testing.assert_allclose(float(report["trace"]), 8.0, rtol=1e-5)
  np.testing.assert_allclose(float(report["lr_x_trace"]), 4.0, rtol=1e-5)
  assert bool(report["gd_stable"]) and not bool(report["sgd_trace_stable"])    # 2/eta = 4: 3 <= 4 but 8 > 4
  small = stability_report(loss, params, batch, 0.2, exact_trace=True, num_iters=300, tol=1e-7)
  assert bool(small["gd_stable"]) and bool(small["sgd_trace_stable"])             # 2/eta = 10 >= 8
  large = stability_report(loss, params, batch, 1.0, num_samples=16, num_iters=300, tol=1e-7)
  assert not bool(large["gd_stable"])                                             # 2/eta = 2 < 3
  np.testing.assert_allclose(float(large["frobenius"]), np.sqrt(np.sum(eigs ** 2)), rtol=0.3)
  with pytest.raises(ValueError, match="lr"):
    stability_report(loss, params, batch, 0.0)
  with pytest.raises(ValueError, match="num_samples"):
    hutchinson_trace(loss, params, batch, jax.random.key(0), 0)
  with pytest.raises(ValueError, match="dist"):
    hutchinson_trace(loss, params, batch, jax.random.key(0), 4, dist="cauchy")
  with pytest.raises(ValueError, match="num_steps"):
    lanczos(loss, params, batch, jax.random.key(0), num_steps=6)
