"""Fuzzing the public API of jaxgen.causal (CoLiDE, the DAGMA baseline, linear-SEM utilities) with hypothesis.

Same contract as ``fuzz_core_test.py``: every generated case raises ``ValueError`` / ``TypeError`` whose message
names the offending argument, or returns the documented result (a finite fit whose ``W_dag`` is a DAG — or the
documented ``ValueError`` when the path cannot stay inside the log-det domain). Fits are tiny (d = 3, T = 2, a few
dozen Adam steps) and share one compiled shape. Case counts per function are printed in the terminal summary.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from jaxgen import causal
from tests.reliability._fuzz import FUZZ, finite, raises_clean

BAD_FLOATS = [math.nan, math.inf, -math.inf, -1.0, -1e-3, 0.0, 0.5, 1.0, 1.5, 1e30]

D, N_SAMPLES = 3, 24
TINY = causal.CoLiDEConfig(s_schedule=(1.0, 0.9), warm_iters=20, final_iters=20, check_every=10)
_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(N_SAMPLES, D)) @ np.array([[1.0, 0.8, 0.0], [0.0, 1.0, 0.7], [0.0, 0.0, 1.0]])
W_SMALL = jnp.asarray([[0.0, 0.3, 0.0], [0.0, 0.0, 0.4], [0.0, 0.0, 0.0]])
C = causal.covariance(X)

FITS = {"colide_fit(ev)": lambda x, cfg=TINY, w=None: causal.colide_fit(x, cfg, "ev", w),
        "colide_fit(nv)": lambda x, cfg=TINY, w=None: causal.colide_fit(x, cfg, "nv", w),
        "dagma_linear_fit": lambda x, cfg=TINY, w=None: causal.dagma_linear_fit(x, cfg, w)}


def _check_fit(fit, name):
  assert fit.W.shape == (D, D) and finite(fit.W) and causal.is_dag(fit.W_dag)
  if name == "dagma_linear_fit":
    assert bool(jnp.isnan(fit.sigma))           # documented: DAGMA estimates no scale
  else:
    assert finite(fit.sigma) and bool(jnp.all(fit.sigma > 0))


# ----------------------------------------------------------------------------------------------------------------
# colide_fit / dagma_linear_fit


@FUZZ
@given(st.sampled_from(sorted(FITS)),
       st.sampled_from(["1d", "3d", "one_row", "no_rows", "no_columns", "nan", "inf", "-inf", "bool", "complex"]),
       st.integers(0, N_SAMPLES * D - 1))
def test_fit_rejects_bad_data(fuzz_record, name, fault, index):
  fuzz_record(f"causal.{name.split('(')[0]}")
  x = X.copy()
  if fault in ("nan", "inf", "-inf"):
    x.reshape(-1)[index] = float(fault)
  else:
    x = {"1d": X[:, 0], "3d": X[None], "one_row": X[:1], "no_rows": X[:0], "no_columns": X[:, :0],
         "bool": X > 0, "complex": X + 1j}[fault]
  original = np.array(x, copy=True)
  raises_clean(lambda: FITS[name](x), "X")
  np.testing.assert_array_equal(x, original)    # never mutated


CONFIG_VALUES = {
    "s_schedule": ([(1.0, 0.9), (2.0, 1.0)], [(), (0.0, 0.9), (1.0, -1.0), (math.nan, 0.9), (math.inf, 0.9), 1.0]),
    "warm_iters": ([20, 30.0], [0, -1, 1.5, math.nan, math.inf, True]),
    "final_iters": ([20, 30.0], [0, -1, 1.5, math.nan, math.inf]),
    "check_every": ([10], [0, -1, 2.5, math.nan, math.inf]),
    "max_restarts": ([0, 3], [-1, 1.5, math.nan, math.inf]),
    "lr": ([1e-3, 0.02], [0.0, -1.0, math.nan, math.inf]),
    "mu_init": ([0.5, 2.0], [0.0, -1.0, math.nan, math.inf]),
    "mu_factor": ([0.1, 1.5], [0.0, -1.0, math.nan, math.inf]),
    "rel_tol": ([1e-6, 0.5], [0.0, -1.0, math.nan, math.inf]),
    "adam_eps": ([1e-8, 1.0], [0.0, -1.0, math.nan, math.inf]),
    "lambda1": ([0.0, 0.5], [-1e-3, math.nan, math.inf, "0.1"]),
    "sigma_floor": ([0.0, 0.5], [-1.0, math.nan, math.inf]),
    "w_threshold": ([0.0, 0.5], [-1.0, math.nan, math.inf]),
    "beta1": ([0.0, 0.5], [-0.1, 1.0, math.nan, math.inf]),
    "beta2": ([0.0, 0.999], [-0.1, 1.0, math.nan, math.inf]),
}


@FUZZ
@given(st.sampled_from(sorted(CONFIG_VALUES)), st.booleans(), st.data())
def test_fit_config(fuzz_record, field, valid, data):
  fuzz_record("causal.colide_fit")
  good, bad = CONFIG_VALUES[field]
  value = data.draw(st.sampled_from(good if valid else bad))
  cfg = TINY._replace(**{field: value})
  call = lambda: FITS["colide_fit(ev)"](X, cfg)  # noqa: E731
  if not valid:
    raises_clean(call, f"config.{field}", f"config.{field}[0]", f"config.{field}[1]")
    return
  try:
    fit = call()
  except ValueError as e:                       # documented: the path could not stay inside the log-det domain
    assert re.search(r"s_schedule|\blr\b", str(e)), str(e)
    return
  _check_fit(fit, "colide_fit")


@FUZZ
@given(st.sampled_from(sorted(FITS)), st.sampled_from(["not_a_config", "variant", "W_init_shape", "W_init_nan",
                                                        "W_init_domain", "ok"]))
def test_fit_arguments(fuzz_record, name, fault):
  fuzz_record(f"causal.{name.split('(')[0]}")
  if fault == "ok":
    _check_fit(FITS[name](X, TINY, np.asarray(W_SMALL)), name)
  elif fault == "not_a_config":
    raises_clean(lambda: FITS[name](X, TINY._asdict()), "config")
  elif fault == "variant":
    raises_clean(lambda: causal.colide_fit(X, TINY, "EV"), "variant")
  else:
    w = {"W_init_shape": np.zeros((D, D + 1)), "W_init_nan": np.full((D, D), np.nan),
         "W_init_domain": np.full((D, D), 2.0)}[fault]
    raises_clean(lambda: FITS[name](X, TINY, w), "W_init")


@FUZZ
@given(st.sampled_from(["colide_solve", "dagma_linear_solve"]), st.sampled_from(["X_rank", "variant", "W_init"]))
def test_solve_shapes(fuzz_record, name, fault):
  fuzz_record(f"causal.{name}")
  x, w, variant = X, None, "ev"
  if fault == "X_rank":
    x = X[:, 0]
  elif fault == "variant":
    variant = "ls"                               # least squares is DAGMA's engine, not a CoLiDE variant
  else:
    w = jnp.zeros((D + 1, D + 1))
  if name == "colide_solve":
    call = lambda: causal.colide_solve(x, TINY, variant, w)  # noqa: E731
  elif fault == "variant":
    return                                       # dagma_linear_solve takes no variant
  else:
    call = lambda: causal.dagma_linear_solve(x, TINY, w)  # noqa: E731
  raises_clean(call, {"X_rank": "X", "variant": "variant", "W_init": "W_init"}[fault])


# ----------------------------------------------------------------------------------------------------------------
# Scores, scales and the acyclicity function


SCORES = {
    "ev_score": (lambda W, C, sigma: causal.ev_score(W, sigma, C), "scalar"),
    "nv_score": (lambda W, C, sigma: causal.nv_score(W, sigma, C), "vector"),
    "ls_score": (lambda W, C, sigma: causal.ls_score(W, C), None),
    "ev_score_grad": (lambda W, C, sigma: causal.ev_score_grad(W, sigma, C), "scalar"),
    "nv_score_grad": (lambda W, C, sigma: causal.nv_score_grad(W, sigma, C), "vector"),
    "ls_score_grad": (lambda W, C, sigma: causal.ls_score_grad(W, C), None),
    "ev_sigma": (lambda W, C, sigma: causal.ev_sigma(W, C), None),
    "nv_sigma": (lambda W, C, sigma: causal.nv_sigma(W, C), None),
    "logdet_acyclicity": (lambda W, C, sigma: causal.logdet_acyclicity(W), None),
    "logdet_acyclicity_grad": (lambda W, C, sigma: causal.logdet_acyclicity_grad(W), None),
    "admissible": (lambda W, C, sigma: causal.admissible(W), None),
}


def _sigma(kind, d=D):
  return jnp.asarray(0.7) if kind == "scalar" else jnp.full((d,), 0.7)


@FUZZ
@given(st.sampled_from(sorted(SCORES)), st.sampled_from(["W_rect", "W_vector", "C_shape", "sigma_shape", "ok"]))
def test_score_shapes(fuzz_record, name, fault):
  fuzz_record(f"causal.{name}")
  fn, sigma_kind = SCORES[name]
  W, c, sigma = W_SMALL, C, _sigma(sigma_kind)
  uses_c = not name.startswith(("logdet", "admissible"))
  if fault == "W_rect":
    W, arg = jnp.zeros((D, D + 1)), "W"
  elif fault == "W_vector":
    W, arg = jnp.zeros((D,)), "W"
  elif fault == "C_shape" and uses_c:
    c, arg = jnp.eye(D + 1), "C"
  elif fault == "sigma_shape" and sigma_kind is not None:
    sigma, arg = (jnp.full((D,), 0.7) if sigma_kind == "scalar" else jnp.asarray([0.7])), "sigma"
  else:
    out = fn(W, c, sigma)
    assert finite(out) if name != "admissible" else bool(out)
    return
  raises_clean(lambda: fn(W, c, sigma), arg)


@FUZZ
@given(st.sampled_from(sorted(k for k, v in SCORES.items() if v[1] is not None)), st.sampled_from(BAD_FLOATS),
       st.integers(0, D - 1))
def test_score_sigma_values(fuzz_record, name, value, index):
  fuzz_record(f"causal.{name}")
  fn, kind = SCORES[name]
  sigma = _sigma(kind).at[() if kind == "scalar" else index].set(value)
  if math.isfinite(value) and value > 0:
    assert finite(fn(W_SMALL, C, sigma))
  else:
    raises_clean(lambda: fn(W_SMALL, C, sigma), "sigma")


@FUZZ
@given(st.sampled_from(["logdet_acyclicity", "logdet_acyclicity_grad", "admissible"]), st.sampled_from(BAD_FLOATS))
def test_logdet_s(fuzz_record, name, s):
  fuzz_record(f"causal.{name}")
  call = lambda: getattr(causal, name)(W_SMALL, s)  # noqa: E731
  if math.isfinite(s) and s > 0:
    out = call()
    assert finite(out)
    if name == "logdet_acyclicity":
      assert abs(float(out)) < 1e-3             # W_SMALL is a DAG: h = 0 for every s (up to float32 rounding)
  else:
    raises_clean(call, "s")


@FUZZ
@given(st.sampled_from(["1d", "rect", "3d"]))
def test_covariance_rank(fuzz_record, fault):
  fuzz_record("causal.covariance")
  x = {"1d": X[:, 0], "rect": X[:0], "3d": X[None]}[fault]
  raises_clean(lambda: causal.covariance(x), "X")


# ----------------------------------------------------------------------------------------------------------------
# Linear-SEM utilities


@FUZZ
@given(st.sampled_from(["shape", "nan", "thr"]), st.sampled_from(BAD_FLOATS))
def test_threshold_to_dag(fuzz_record, fault, value):
  fuzz_record("causal.threshold_to_dag")
  W = np.array([[0.0, 0.9, 0.2], [0.5, 0.0, 0.8], [0.7, 0.0, 0.0]])   # has cycles
  if fault == "shape":
    raises_clean(lambda: causal.threshold_to_dag(W[:, :2]), "W")
  elif fault == "nan" and not math.isfinite(value):
    W[1, 2] = value
    raises_clean(lambda: causal.threshold_to_dag(W), "W")
  elif math.isfinite(value) and value >= 0:
    out = causal.threshold_to_dag(W, value)
    assert causal.is_dag(out) and np.all((out == 0) | (np.abs(W) > value))
  else:
    raises_clean(lambda: causal.threshold_to_dag(W, value), "thr")


@FUZZ
@given(st.sampled_from(["shape", "nan", "ok"]), st.sampled_from(["B_true", "B_est"]))
def test_graph_metrics(fuzz_record, fault, which):
  fuzz_record("causal.graph_metrics")
  mats = {"B_true": np.triu(np.ones((D, D)), 1), "B_est": np.triu(np.ones((D, D)), 1)}
  if fault == "shape":
    mats[which] = mats[which][:, :2]
  elif fault == "nan":
    mats[which] = mats[which].copy()
    mats[which][0, 1] = np.nan
  call = lambda: causal.graph_metrics(mats["B_true"], mats["B_est"])  # noqa: E731
  if fault == "ok":
    assert call() == {"fdr": 0.0, "tpr": 1.0, "fpr": 0.0, "shd": 0, "nnz": 3}
  else:
    raises_clean(call, which)


@FUZZ
@given(st.sampled_from([(3,), (2, 3), (2, 2, 2)]))
def test_is_dag_shape(fuzz_record, shape):
  fuzz_record("causal.is_dag")
  raises_clean(lambda: causal.is_dag(np.zeros(shape)), "W")


COUNTS = [math.nan, math.inf, -math.inf, -1, 0, 1, 1.5, 2, 3, 4.0]   # for integer arguments (no huge sizes)


@FUZZ
@given(st.sampled_from(["d", "expected_edges", "w_range", "kind"]), st.data())
def test_random_dag(fuzz_record, arg, data):
  value = data.draw(st.sampled_from(COUNTS if arg == "d" else BAD_FLOATS + [3, 5]))
  fuzz_record("causal.random_dag")
  kwargs = {"d": 4, "expected_edges": 4.0, "kind": "er", "w_range": (0.5, 2.0)}
  if arg == "kind":
    kwargs["kind"], valid = ("sf" if value == 3 else "ER"), value == 3
  elif arg == "w_range":
    kwargs["w_range"] = (0.5, value) if value != 5 else (0.5, 1.0, 2.0)
    valid = math.isfinite(value) and value >= 0.5 and value != 5
  elif arg == "d":
    kwargs["d"] = value
    valid = math.isfinite(value) and value >= 2 and float(value).is_integer()
  else:
    kwargs["expected_edges"] = value
    valid = math.isfinite(value) and value > 0
  call = lambda: causal.random_dag(jax.random.key(0), **kwargs)  # noqa: E731
  if valid:
    W = call()
    d = int(kwargs["d"])
    assert W.shape == (d, d) and finite(W) and causal.is_dag(np.asarray(W))
  else:
    raises_clean(call, arg)


@FUZZ
@given(st.sampled_from(["n", "noise", "noise_var", "noise_var_shape", "W_shape", "W_cycle", "W_nan"]), st.data())
def test_sample_linear_sem(fuzz_record, arg, data):
  value = data.draw(st.sampled_from(COUNTS if arg == "n" else BAD_FLOATS))
  fuzz_record("causal.sample_linear_sem")
  kwargs = {"W": W_SMALL, "n": 5, "noise": "gaussian", "noise_var": 1.0}
  valid, names = False, (arg,)
  if arg == "n":
    kwargs["n"] = value
    valid = math.isfinite(value) and value >= 1 and float(value).is_integer()
  elif arg == "noise":
    kwargs["noise"] = "cauchy"
  elif arg == "noise_var":
    kwargs["noise_var"] = jnp.ones(D).at[1].set(value)
    valid = math.isfinite(value) and value >= 0
  elif arg == "noise_var_shape":
    kwargs["noise_var"], names = jnp.ones((D + 1,)) if value > 0 else jnp.ones((1,)), ("noise_var",)
  elif arg == "W_shape":
    kwargs["W"], names = jnp.zeros((D, D + 1)), ("W",)
  elif arg == "W_cycle":
    kwargs["W"], names = W_SMALL.at[2, 0].set(0.5), ("W",)
  else:
    kwargs["W"], names = W_SMALL.at[0, 1].set(math.nan), ("W",)
  call = lambda: causal.sample_linear_sem(jax.random.key(1), **kwargs)  # noqa: E731
  if valid:
    out = call()
    assert out.shape == (int(kwargs["n"]), D) and finite(out)
  else:
    raises_clean(call, *names)


@FUZZ
@given(st.sampled_from(["d", "low", "high"]), st.data())
def test_nv_noise_variances(fuzz_record, arg, data):
  value = data.draw(st.sampled_from(COUNTS if arg == "d" else BAD_FLOATS + [3, 20.0]))
  fuzz_record("causal.nv_noise_variances")
  kwargs = {"d": 3, "low": 0.5, "high": 10.0}
  kwargs[arg] = value
  if arg == "d":
    valid = math.isfinite(value) and value >= 1 and float(value).is_integer()
  else:
    valid = math.isfinite(value) and 0 <= kwargs["low"] <= kwargs["high"]
  call = lambda: causal.nv_noise_variances(jax.random.key(0), **kwargs)  # noqa: E731
  if valid:
    var = np.asarray(call())
    assert var.shape == (int(kwargs["d"]),) and np.all((var >= kwargs["low"]) & (var <= kwargs["high"]))
  else:
    raises_clean(call, arg, "low", "high")
