"""CoLiDE / DAGMA fits: reference-fixture parity of short (1e-8) and full (1e-4 + identical support and metrics)
runs, restarts and backtracking against a NumPy loop, the DAGMA step equivalence (invariant 6), the oriented
chain (invariant 8), vmap / jit / no-mutation, and runtime domain errors."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import causal
from jaxgen.causal import colide as colide_lib

SHORT_TOL = 1e-8    # spec §1.5 (1): short runs (2 outer steps, 300/500 iterations)
FULL_TOL = 1e-4     # spec §1.5 (1): full runs, plus identical thresholded support and metrics

_BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "colide_speed.py"


def _numpy_reference():
  """The benchmark's plain-NumPy loop of the reference algorithm (one Python iteration per Adam step)."""
  spec = importlib.util.spec_from_file_location("colide_speed", _BENCH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.numpy_colide


def _config(cfg_json):
  return causal.CoLiDEConfig(lambda1=cfg_json["lambda1"], s_schedule=tuple(cfg_json["s"]),
                             warm_iters=cfg_json["warm_iter"], final_iters=cfg_json["max_iter"], lr=cfg_json["lr"],
                             check_every=cfg_json["checkpoint"])


@pytest.mark.parametrize("variant", ["ev", "nv"])
def test_short_run_matches_reference(fixture_data, variant):
  f = fixture_data
  X = f["X"].copy()
  fit = causal.colide_fit(X, _config(f["short_cfg_json"]), variant)
  np.testing.assert_array_equal(X, f["X"])                                    # the input is not centred in place
  assert fit.W.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(fit.W), f[f"short_W_{variant}"], rtol=0, atol=SHORT_TOL)
  np.testing.assert_allclose(np.asarray(fit.sigma), f[f"short_sigma_{variant}"], rtol=0, atol=SHORT_TOL)
  np.testing.assert_array_equal(np.asarray(fit.info.iters), [300, 500])


@pytest.mark.parametrize("variant", ["ev", "nv"])
def test_full_run_matches_reference(fixture_data, variant):
  f = fixture_data
  fit = causal.colide_fit(f["X"], _config(f["full_cfg_json"]), variant)
  np.testing.assert_allclose(np.asarray(fit.W), f[f"full_W_{variant}"], rtol=0, atol=FULL_TOL)
  np.testing.assert_allclose(np.asarray(fit.sigma), f[f"full_sigma_{variant}"], rtol=0, atol=FULL_TOL)
  np.testing.assert_array_equal(fit.W_dag != 0, f[f"full_W_thr_{variant}"] != 0)
  np.testing.assert_allclose(fit.W_dag, f[f"full_W_thr_{variant}"], rtol=0, atol=FULL_TOL)
  m = causal.graph_metrics(f["W_true"], fit.W_dag)
  np.testing.assert_allclose([m["fdr"], m["tpr"], m["fpr"], m["shd"], m["nnz"]], f[f"full_metrics_{variant}"],
                             rtol=1e-12)
  np.testing.assert_allclose(float(causal.logdet_acyclicity(fit.W, 1.0)), f[f"full_h_{variant}"], rtol=1e-3)


def test_restarts_match_numpy_reference_and_domain_error(ev_data):
  """A warm start with a strong 2-cycle (rho(W o W) = 0.49) is admissible at s_0 = 1; the first solution is not
  admissible at s_1 = 0.3, so the second subproblem restarts with s += 0.1 and lr /= 2 (reference semantics)."""
  f = ev_data
  W_init = np.zeros((10, 10))
  W_init[0, 1] = W_init[1, 0] = 0.7
  cfg = causal.CoLiDEConfig(s_schedule=(1.0, 0.3), warm_iters=300, final_iters=200, check_every=100)
  fit = causal.colide_fit(f["X"], cfg, "nv", W_init=W_init)
  info = jax.device_get(fit.info)
  assert info.restarts[0] == 0 and info.restarts[1] >= 1
  assert info.s[1] > 0.35 and info.lr[1] <= cfg.lr / 2
  assert info.status[1] in (causal.colide.CONVERGED, causal.colide.MAX_ITERS)
  W_ref, sigma_ref, _ = _numpy_reference()(f["X"], "nv", lambda1=cfg.lambda1, s_schedule=cfg.s_schedule,
                                           warm_iters=300, final_iters=200, lr=cfg.lr, check_every=100,
                                           w_init=W_init)
  np.testing.assert_allclose(np.asarray(fit.W), W_ref, rtol=0, atol=SHORT_TOL)
  np.testing.assert_allclose(np.asarray(fit.sigma), sigma_ref, rtol=0, atol=SHORT_TOL)
  with pytest.raises(ValueError, match="left the admissible domain"):
    causal.colide_fit(f["X"], cfg._replace(max_restarts=0), "nv", W_init=W_init)


@pytest.mark.parametrize("variant", ["ev", "nv"])
def test_backtracking_and_restart_match_numpy_reference(ev_data, variant):
  """A huge step size (lr = 0.5) leaves the domain at s = 1 mid-subproblem (undo, halve lr, redo) and at s = 0.9
  (abandon, restart with s = 1.0 and lr / 2): both paths follow the reference semantics."""
  f = ev_data
  cfg = causal.CoLiDEConfig(s_schedule=(1.0, 0.9), warm_iters=300, final_iters=200, check_every=100, lr=0.5)
  fit = causal.colide_fit(f["X"], cfg, variant)
  info = jax.device_get(fit.info)
  assert info.lr[0] < cfg.lr and info.restarts[0] == 0                       # backtracked in subproblem 0
  assert info.restarts[1] == 1 and info.s[1] == 0.9 + 0.1                    # restarted subproblem 1
  W_ref, sigma_ref, _ = _numpy_reference()(f["X"], variant, lambda1=cfg.lambda1, s_schedule=cfg.s_schedule,
                                           warm_iters=300, final_iters=200, lr=cfg.lr, check_every=100)
  np.testing.assert_allclose(np.asarray(fit.W), W_ref, rtol=0, atol=SHORT_TOL)
  np.testing.assert_allclose(np.asarray(fit.sigma), sigma_ref, rtol=0, atol=SHORT_TOL)


def _numpy_dagma(X, *, lambda1, s, mu, lr, num_iters, beta1=0.99, beta2=0.999):
  """An independent float64 NumPy DAGMA inner loop (least-squares score, no restarts needed here)."""
  X = X - X.mean(0, keepdims=True)
  n, d = X.shape
  cov, eye = X.T @ X / n, np.eye(d)
  W, m, v = np.zeros((d, d)), 0.0, 0.0
  for t in range(1, num_iters + 1):
    M = np.linalg.inv(s * eye - W * W) + 1e-16
    assert np.all(M >= -1e-6)
    g = -mu * cov @ (eye - W) + mu * lambda1 * np.sign(W) + 2 * W * M.T
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    W = W - lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + 1e-8)
  return W


def test_engine_step_equals_dagma_step_when_sigma_is_frozen(ev_data):
  """Invariant 6: with sigma = 1 and no d sigma / 2 term, a CoLiDE-EV engine step is a DAGMA step; and the engine's
  least-squares path reproduces an independent NumPy DAGMA loop."""
  f = ev_data
  C = causal.covariance(f["X"])
  rng = np.random.default_rng(0)
  W = jnp.asarray(0.1 * rng.normal(size=(10, 10)))
  hp = colide_lib._hyper(causal.CoLiDEConfig(), jnp.float64)
  state = colide_lib._InnerState(
      W=W, sigma=jnp.ones(()), rhs=C @ (jnp.eye(10) - W), m=0.01 * jnp.ones((10, 10)), v=0.02 * jnp.ones((10, 10)),
      direction=jnp.zeros((10, 10)), lr=jnp.asarray(3e-4), t=jnp.asarray(7, jnp.int32), obj_prev=jnp.asarray(1e16),
      status=jnp.asarray(colide_lib.RUNNING, jnp.int32))
  step = jax.jit(colide_lib._adam_step, static_argnames="variant")
  steps = {v: step(state, C, jnp.asarray(0.1), jnp.asarray(1.0), jnp.asarray(100), variant=v, hp=hp)
           for v in ("ev", "ls")}
  for field in ("W", "m", "v", "direction", "rhs"):
    np.testing.assert_allclose(getattr(steps["ev"], field), getattr(steps["ls"], field), rtol=1e-13, atol=1e-15)
  # The EV objective at sigma = 1 is the DAGMA objective plus the constant mu d / 2.
  np.testing.assert_allclose(
      colide_lib._objective("ev", W, jnp.ones(()), C, 0.1, 1.0, 0.05),
      colide_lib._objective("ls", W, jnp.ones(()), C, 0.1, 1.0, 0.05) + 0.1 * 10 / 2, rtol=1e-13)

  cfg = causal.CoLiDEConfig(s_schedule=(1.0,), final_iters=250, check_every=50, rel_tol=1e-30)
  fit = causal.dagma_linear_fit(f["X"], cfg)
  W_ref = _numpy_dagma(f["X"], lambda1=0.05, s=1.0, mu=1.0, lr=3e-4, num_iters=250)
  np.testing.assert_allclose(np.asarray(fit.W), W_ref, rtol=0, atol=1e-10)
  assert np.isnan(float(fit.sigma)) and causal.is_dag(fit.W_dag)


def test_vmap_and_jit_over_datasets_match_single_fits(ev_data):
  f = ev_data
  cfg = causal.CoLiDEConfig(s_schedule=(1.0, 0.9), warm_iters=200, final_iters=300, check_every=100)
  Xs = jnp.stack([f["X"], 2.0 * f["X"][:, ::-1]])                            # two datasets of one shape
  batched = jax.jit(jax.vmap(lambda X: causal.colide_solve(X, cfg, "nv")))(Xs)
  for b in range(2):
    single = causal.colide_fit(np.asarray(Xs[b]), cfg, "nv")
    np.testing.assert_allclose(batched.W[b], single.W, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batched.sigma[b], single.sigma, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(batched.info.iters[b], single.info.iters)


@pytest.mark.parametrize("noise_std", [1.0, 3.0])
def test_oriented_chain_is_recovered(noise_std):
  """Invariant 8: chain 0 -> 1 -> 2 with unit weights, n = 5000, equal noise std 1 (resp. 3)."""
  W_true = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
  X = np.asarray(causal.sample_linear_sem(jax.random.key(7), jnp.asarray(W_true), 5000, "gaussian", noise_std ** 2))
  Z = X - X @ W_true                                                          # the realised noise
  realised = {"ev": np.sqrt(np.mean(np.var(Z, axis=0))), "nv": np.std(Z, axis=0)}
  for variant in ("ev", "nv"):
    fit = causal.colide_fit(X, causal.CoLiDEConfig(), variant)
    np.testing.assert_array_equal(fit.W_dag != 0, W_true != 0, err_msg=variant)
    np.testing.assert_allclose(fit.W_dag[W_true != 0], 1.0, atol=0.1, err_msg=variant)   # ~0.94-1.0 (L1 shrink)
    np.testing.assert_allclose(np.asarray(fit.sigma), realised[variant], rtol=0.02, err_msg=variant)
    np.testing.assert_allclose(np.asarray(fit.sigma), noise_std, rtol=0.04, err_msg=variant)


def test_float32_fit_runs_and_recovers_a_chain():
  """Without x64 the same engine runs in float32 (the default JAX dtype)."""
  W_true = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
  X = np.random.default_rng(0).normal(size=(2000, 3)) @ np.linalg.inv(np.eye(3) - W_true)
  with jax.enable_x64(False):
    fit = causal.colide_fit(X, causal.CoLiDEConfig(warm_iters=3000, final_iters=5000), "ev")
    assert fit.W.dtype == jnp.float32
  np.testing.assert_array_equal(fit.W_dag != 0, W_true != 0)
  np.testing.assert_allclose(float(fit.sigma), 1.0, rtol=0.05)
