"""Tests for the sgd-stability experiment (diagonal linear net, SGD vs GD over eta)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.experiments import reproduce
from jaxgen.experiments import sgd_stability as experiment

_TOY = dict(dim=12, num_train=6, num_test=50, learning_rates=(0.01, 0.05), num_steps=400, log_every=200,
            power_iters=50, min_converged=1, converge_tol=1e-1)


def test_gd_lane_matches_float64_numpy_reference():
  config = experiment.Config(dim=8, num_train=5, num_test=10, num_steps=30, log_every=10)
  data = experiment.make_data(config)
  rng = np.random.default_rng(0)
  u0, v0 = rng.normal(size=8), rng.normal(size=8)
  params0 = {"u": jnp.asarray(u0, jnp.float32), "v": jnp.asarray(v0, jnp.float32)}
  params, logs = experiment._train(config, data, params0, jnp.array([0.05]), jnp.array([False]), progress=False)
  x, y = np.asarray(data["x_train"], np.float64), np.asarray(data["y_train"], np.float64)
  u, v = u0.copy(), v0.copy()
  for _ in range(30):   # closed-form gradient of 1/(2n) sum (x_i.(u*v) - y_i)^2
    r = x @ (u * v) - y
    g_beta = x.T @ r / len(y)
    u, v = u - 0.05 * g_beta * v, v - 0.05 * g_beta * u
  np.testing.assert_allclose(params["u"][0], u, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(params["v"][0], v, rtol=1e-4, atol=1e-5)
  assert logs["train_loss"].shape == (4, 1)
  np.testing.assert_allclose(logs["train_loss"][-1, 0], 0.5 * np.mean((x @ (u * v) - y) ** 2), rtol=1e-3)
  # The logged trace is the closed form of tr(G) for this model.
  np.testing.assert_allclose(logs["trace"][-1, 0], np.mean(np.sum(x ** 2 * (u ** 2 + v ** 2), axis=1)), rtol=1e-4)


def test_toy_run_writes_files(tmp_path):
  result = reproduce("sgd-stability", quick=True, out_dir=tmp_path, progress=False, **_TOY)
  run_dir = tmp_path / "sgd-stability"
  for name in ("config.json", "result.json", "run.json", "report.md", "metrics.jsonl", "sharpness_vs_lr.png",
               "training.png"):
    assert (run_dir / name).exists(), name
  saved = json.loads((run_dir / "result.json").read_text())
  assert isinstance(saved["held"], bool) and saved["held"] == result["held"]
  runs = saved["metrics"]["runs"]
  assert set(runs) == {"sgd/lr=0.01", "sgd/lr=0.05", "gd/lr=0.01", "gd/lr=0.05"}
  for label, r in runs.items():
    if r["converged"]:   # power iteration agrees with the exact Gram-matrix eigenvalue
      np.testing.assert_allclose(r["lambda_max"], r["lambda_max_exact"], rtol=1e-3, err_msg=label)
      assert r["lambda_max"] <= r["trace"] + 1e-4
      assert r["frobenius"] <= r["trace"] + 1e-4
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert len(records) == 4 * 3 and {r["step"] for r in records} == {0, 200, 400}


def _result(method, lr, trace, lam, l1, converged=True):
  return {"method": method, "lr": lr, "two_over_lr": 2 / lr, "converged": converged, "trace": trace,
          "lambda_max": lam, "beta_l1": l1, "test_mse": l1 / 4, "train_loss": 0.0}


def test_decide():
  config = experiment.Config()
  good = {f"sgd/{lr}": _result("sgd", lr, tr, 5.0, l1) for lr, tr, l1 in
          ((0.01, 45.0, 37.0), (0.02, 41.0, 34.0), (0.04, 26.0, 22.0), (0.06, 8.5, 10.0))}
  good.update({f"gd/{lr}": _result("gd", lr, 45.0 + lr, 5.0, 37.0) for lr in (0.01, 0.02, 0.04, 0.06)})
  good["sgd/0.08"] = _result("sgd", 0.08, float("nan"), float("nan"), float("nan"), converged=False)
  held, checks, measured = experiment._decide(config, good)
  assert held, checks
  assert "not converged" in measured
  bad = dict(good)
  bad["sgd/0.06"] = _result("sgd", 0.06, 40.0, 5.0, 10.0)            # tr 40 > 2/eta = 33.3
  held, checks, _ = experiment._decide(config, bad)
  assert not held and not checks["sgd_trace_below_2_over_lr"]
  moving = dict(good)
  moving["gd/0.06"] = _result("gd", 0.06, 30.0, 5.0, 25.0)           # GD's solution moves with eta
  held, checks, _ = experiment._decide(config, moving)
  assert not held and not checks["gd_trace_flat"]


def test_config_validation(tmp_path):
  with pytest.raises(ValueError, match="learning_rates"):
    reproduce("sgd-stability", quick=True, out_dir=tmp_path, progress=False, learning_rates=())
  with pytest.raises(ValueError, match="log_every"):
    reproduce("sgd-stability", quick=True, out_dir=tmp_path, progress=False, num_steps=1000, log_every=300)


@pytest.mark.slow
def test_quick_preset(tmp_path):
  result = reproduce("sgd-stability", quick=True, out_dir=tmp_path, progress=False)
  checks = result["metrics"]["checks"]
  assert checks["sgd_trace_below_2_over_lr"] and checks["gd_lambda_max_below_2_over_lr"]
  assert isinstance(result["held"], bool)
