"""Fuzzing jaxgen.stability (StableMax, Softmax Collapse, sharpness / linear stability) and jaxgen.optim.perp_grad.

Same contract as ``fuzz_core_test.py``: every generated case raises ``ValueError`` / ``TypeError`` whose message
names the offending argument, or returns the documented result. Valid-but-extreme inputs must stay finite where
the documentation says so (StableMax of logits up to the dtype's maximum; ⊥Grad of zero weights or zero gradients,
``eps = 0`` included); non-finite *data* propagates. Case counts per function are printed in the terminal summary.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxgen import stability
from jaxgen.optim import perp_grad
from tests.reliability._fuzz import FUZZ, finite, raises_clean

SMALL = settings(FUZZ, max_examples=10)
BAD_FLOATS = [math.nan, math.inf, -math.inf, -1.0, -1e-3, 0.0, 0.5, 1.0, 1.5, 1e30]
COUNTS = [-1, 0, 1, 3, 2.0, 1.5, True, math.nan, "4"]


# ----------------------------------------------------------------------------------------------------------------
# StableMax


@st.composite
def extreme_logits(draw):
  """A [2, 4] logit matrix in float32 / float16 / bfloat16 with entries up to the dtype's extremes."""
  dtype = draw(st.sampled_from([jnp.float32, jnp.float16, jnp.bfloat16]))
  big = float(jnp.finfo(dtype).max)
  values = [big, -big, 0.5 * big, -0.5 * big, 1e4, -1e4, 0.0, 1.0, -1.0, 1e-3]
  entries = draw(st.lists(st.sampled_from(values), min_size=8, max_size=8))
  return jnp.asarray(np.asarray(entries, np.float64).reshape(2, 4), dtype)


@FUZZ
@given(st.sampled_from(["stablemax", "log_stablemax", "stablemax_cross_entropy"]), extreme_logits(),
       st.integers(0, 3))
def test_stablemax_extreme_logits_stayfinite(fuzz_record, name, z, label):
  """Documented: any finite logits (up to the dtype's max/min) give finite probabilities summing to 1."""
  fuzz_record(f"stability.{name}")
  if name == "stablemax_cross_entropy":
    loss = stability.stablemax_cross_entropy(z, jnp.full((2,), label))
    assert finite(loss) and bool(jnp.all(loss >= 0))
    return
  out = getattr(stability, name)(z)
  assert out.dtype == z.dtype and finite(out)
  p = out.astype(jnp.float32) if name == "stablemax" else jnp.exp(out.astype(jnp.float32))
  tol = 1e-5 if z.dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=tol)
  assert bool(jnp.all((p >= 0) & (p <= 1 + tol)))


@FUZZ
@given(st.sampled_from(["stablemax", "log_stablemax", "stablemax_s", "stablemax_log_s"]),
       st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 3))
def test_stablemax_nonfinite_logits(fuzz_record, name, bad, col):
  """Documented: NaN / +inf logits give NaN in their row only; -inf is the limit s(-inf) = 0 (probability 0)."""
  fuzz_record(f"stability.{name}")
  z = jnp.asarray([[0.5, -1.0, 2.0, 0.0], [1.0, 2.0, -3.0, 0.25]]).at[0, col].set(bad)
  out = getattr(stability, name)(z)
  assert finite(out[1])                         # the other row is untouched
  if name in ("stablemax_s", "stablemax_log_s"):   # elementwise
    assert finite(jnp.delete(out[0], col)) and (math.isnan(bad) == bool(jnp.isnan(out[0, col])))
  elif bad == -math.inf:
    p = out[0] if name == "stablemax" else jnp.exp(out[0])
    assert float(p[col]) == 0.0 and finite(jnp.delete(out[0], col))
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
  else:
    assert bool(jnp.all(jnp.isnan(out[0])))


@FUZZ
@given(st.sampled_from(["stablemax", "log_stablemax", "stablemax_s", "stablemax_log_s", "stablemax_cross_entropy",
                        "softmax_collapse_mask", "softmax_collapse_fraction"]),
       st.sampled_from([jnp.int32, jnp.uint8, jnp.bool_]))
def test_integer_logits(fuzz_record, name, dtype):
  fuzz_record(f"stability.{name}")
  z = jnp.ones((2, 3), dtype)
  args = (z, jnp.zeros((2,), jnp.int32)) if name == "stablemax_cross_entropy" else (z,)
  raises_clean(lambda: getattr(stability, name)(*args), "logits", "x")


@FUZZ
@given(st.sampled_from(["stablemax", "log_stablemax", "softmax_collapse_mask", "softmax_collapse_fraction"]),
       st.sampled_from([2, -3, 5, 1.0, None, "0"]))
def test_bad_axis(fuzz_record, name, axis):
  fuzz_record(f"stability.{name}")
  raises_clean(lambda: getattr(stability, name)(jnp.ones((2, 3)), axis=axis), "axis")


@FUZZ
@given(st.sampled_from(["range", "float", "shape", "compute_dtype"]), st.integers(0, 1),
       st.sampled_from([-1, 3, 7]))
def test_cross_entropy_labels(fuzz_record, fault, row, bad):
  fuzz_record("stability.stablemax_cross_entropy")
  z, labels, kwargs = jnp.zeros((2, 3)), jnp.asarray([0, 2]), {}
  if fault == "range":
    labels, arg = labels.at[row].set(bad), "labels"
  elif fault == "float":
    labels, arg = labels.astype(jnp.float32), "labels"
  elif fault == "shape":
    labels, arg = (labels[:1], labels[:, None])[row], "labels"
  else:
    kwargs, arg = {"compute_dtype": (jnp.int32, "int8")[row]}, "compute_dtype"
  raises_clean(lambda: stability.stablemax_cross_entropy(z, labels, **kwargs), arg)


# ----------------------------------------------------------------------------------------------------------------
# Softmax Collapse


@FUZZ
@given(st.sampled_from(["softmax_collapse_mask", "softmax_collapse_fraction"]),
       st.sampled_from(["no_classes", "no_examples", "dtype_int", "float64_without_x64", "ok"]),
       st.sampled_from([0.0, 5.0, 20.0, 1e30, 3e38]))
def test_softmax_collapse(fuzz_record, name, fault, margin):
  fuzz_record(f"stability.{name}")
  fn = getattr(stability, name)
  z = jnp.asarray([[margin, 0.0, 0.0], [0.0, 0.0, 0.0]])
  if fault == "no_classes":
    raises_clean(lambda: fn(z[:, :0]), "logits")
  elif fault == "no_examples":
    if name == "softmax_collapse_mask":
      assert fn(z[:0]).shape == (0,)             # a mask of no examples is empty, not an error
    else:
      raises_clean(lambda: fn(z[:0]), "logits")
  elif fault == "dtype_int":
    raises_clean(lambda: fn(z, jnp.int32), "dtype")
  elif fault == "float64_without_x64":
    raises_clean(lambda: fn(z, jnp.float64), "dtype")
  else:
    out = np.asarray(fn(z))
    collapsed = margin > 17                      # e^-margin < 2^-24 (float32)
    if name == "softmax_collapse_mask":
      assert out.tolist() == [collapsed, False]
    else:
      assert out == pytest.approx(0.5 * collapsed)


@FUZZ
@given(st.sampled_from([(0,), (0, 3), (2, 0)]))
def test_zero_loss_fraction_empty(fuzz_record, shape):
  fuzz_record("stability.zero_loss_fraction")
  raises_clean(lambda: stability.zero_loss_fraction(jnp.zeros(shape)), "per_example_loss")


# ----------------------------------------------------------------------------------------------------------------
# Sharpness and linear stability


A = jnp.diag(jnp.asarray([1.0, 2.0, 3.0]))
PARAMS = {"w": jnp.ones(3)}


def _quad(p, batch=None):
  return 0.5 * p["w"] @ (A @ p["w"])


SHARPNESS = {   # name: call(loss_fn, params, **kwargs) with the spec-style ``(params, batch)`` functions wrapped
    "hessian_trace": lambda loss, p, **kw: stability.hessian_trace(loss, p, jax.random.key(0), kw.pop(
        "num_samples", 4), **kw),
    "hutchinson_trace": lambda loss, p, **kw: stability.hutchinson_trace(
        lambda q, b: loss(q), p, None, jax.random.key(0), **{"num_samples": 4, **kw}),
    "hutchinson_frobenius_sq": lambda loss, p, **kw: stability.hutchinson_frobenius_sq(
        lambda q, b: loss(q), p, None, jax.random.key(0), **{"num_samples": 4, **kw}),
    "top_hessian_eigenvalue": lambda loss, p, **kw: stability.top_hessian_eigenvalue(
        loss, p, jax.random.key(0), **{"num_iters": 20, **kw}),
    "top_eigenvalue": lambda loss, p, **kw: stability.top_eigenvalue(
        lambda q, b: loss(q), p, None, jax.random.key(0), **{"num_iters": 20, **kw}),
    "lanczos": lambda loss, p, **kw: stability.lanczos(lambda q, b: loss(q), p, None, jax.random.key(0),
                                                       **{"num_steps": 3, **kw}),
    "exact_hessian_trace": lambda loss, p, **kw: stability.exact_hessian_trace(loss, p),
    "stability_report": lambda loss, p, **kw: stability.stability_report(lambda q, b: loss(q), p, None, 0.1,
                                                                         **{"num_samples": 4, "num_iters": 20, **kw}),
}
EXPECTED = {"hessian_trace": 6.0, "hutchinson_trace": 6.0, "top_hessian_eigenvalue": 3.0, "top_eigenvalue": 3.0,
            "exact_hessian_trace": 6.0, "hutchinson_frobenius_sq": 14.0, "stability_report": 6.0}
COUNT_ARGS = {"hessian_trace": "num_samples", "hutchinson_trace": "num_samples", "hutchinson_frobenius_sq":
              "num_samples", "top_hessian_eigenvalue": "num_iters", "top_eigenvalue": "num_iters",
              "lanczos": "num_steps", "stability_report": "num_samples"}


def _value(name, out):
  if name in ("hutchinson_trace", "hutchinson_frobenius_sq", "top_eigenvalue"):
    return out[0]
  if name == "lanczos":
    return out.ritz_values[-1]
  if name == "stability_report":
    return out["trace"]
  return out


@FUZZ
@given(st.sampled_from(sorted(SHARPNESS)),
       st.sampled_from(["int_params", "empty_params", "vector_loss", "int_loss", "nan_params", "ok"]))
def test_sharpness_inputs(fuzz_record, name, fault):
  fuzz_record(f"stability.{name}")
  call = SHARPNESS[name]
  if fault == "int_params":
    raises_clean(lambda: call(_quad, {"w": jnp.ones(3, jnp.int32)}), "params")
  elif fault == "empty_params":
    raises_clean(lambda: call(_quad, {"w": jnp.ones(0)}), "params")
  elif fault == "vector_loss":
    raises_clean(lambda: call(lambda p: A @ p["w"], PARAMS), "loss_fn")
  elif fault == "int_loss":
    raises_clean(lambda: call(lambda p: jnp.sum(p["w"] > 0), PARAMS), "loss_fn")
  elif fault == "nan_params":                   # documented: non-finite data propagates
    out = call(lambda p: jnp.sum(p["w"] ** 4), {"w": jnp.asarray([1.0, jnp.nan, 2.0])})
    assert not finite(_value(name, out))
  else:
    value = float(_value(name, call(_quad, PARAMS)))
    assert value == pytest.approx(EXPECTED.get(name, 3.0), rel=1e-4)


@SMALL
@given(st.sampled_from(sorted(COUNT_ARGS)), st.sampled_from(COUNTS))
def test_sharpness_counts(fuzz_record, name, value):
  fuzz_record(f"stability.{name}")
  arg = COUNT_ARGS[name]
  call = lambda: SHARPNESS[name](_quad, PARAMS, **{arg: value})  # noqa: E731
  valid = isinstance(value, int) and not isinstance(value, bool) and value >= 1 and (name != "lanczos" or value <= 3)
  if valid:
    assert finite(_value(name, call()))
  else:
    raises_clean(call, arg)


@FUZZ
@given(st.sampled_from(["hessian_trace", "hutchinson_trace", "hutchinson_frobenius_sq"]),
       st.sampled_from(["rademacher", "gaussian", "Rademacher", "normal", ""]))
def test_probe_distribution(fuzz_record, name, dist):
  fuzz_record(f"stability.{name}")
  call = lambda: SHARPNESS[name](_quad, PARAMS, dist=dist)  # noqa: E731
  if dist in ("rademacher", "gaussian"):
    assert finite(_value(name, call()))
  else:
    raises_clean(call, "dist")


@FUZZ
@given(st.sampled_from(["top_hessian_eigenvalue", "top_eigenvalue", "stability_report"]), st.sampled_from(BAD_FLOATS))
def test_power_iteration_tol(fuzz_record, name, tol):
  fuzz_record(f"stability.{name}")
  call = lambda: SHARPNESS[name](_quad, PARAMS, tol=tol)  # noqa: E731
  if tol >= 0:                                   # inf is allowed: stop after two iterations
    assert finite(_value(name, call()))
  else:
    raises_clean(call, "tol")


@FUZZ
@given(st.sampled_from(["gd_linear_stable", "sgd_linear_stable"]), st.sampled_from(BAD_FLOATS))
def test_linear_stability(fuzz_record, name, sharpness):
  """Every lr of BAD_FLOATS against one drawn sharpness (the checks are cheap: a full sweep per case)."""
  for lr in BAD_FLOATS:
    fuzz_record(f"stability.{name}")
    call = lambda lr=lr: getattr(stability, name)(sharpness, lr)  # noqa: E731
    if not (math.isfinite(lr) and lr > 0):
      raises_clean(call, "lr")
    elif math.isnan(sharpness):
      raises_clean(call, "lambda_max", "trace")
    else:                                        # +-inf and negative sharpness have a verdict too
      assert bool(call()) == (sharpness <= 2.0 / lr)


@SMALL
@given(st.sampled_from(BAD_FLOATS))
def test_stability_report_lr(fuzz_record, lr):
  fuzz_record("stability.stability_report")
  call = lambda: stability.stability_report(lambda q, b: _quad(q), PARAMS, None, lr, num_samples=2,  # noqa: E731
                                            num_iters=10)
  if math.isfinite(lr) and lr > 0:
    out = call()
    assert bool(out["gd_stable"]) == (3.0 <= 2.0 / lr) and finite(out["lr_x_trace"])
  else:
    raises_clean(call, "lr")


@FUZZ
@given(st.sampled_from(["structure", "shape"]))
def test_hvp_tangent(fuzz_record, fault):
  fuzz_record("stability.hvp")
  v = {"w": jnp.ones(3), "b": jnp.ones(1)} if fault == "structure" else {"w": jnp.ones(4)}
  raises_clean(lambda: stability.hvp(_quad, PARAMS, None, v), "v")


@FUZZ
@given(st.sampled_from(["empty", "scalar_xs", "vector_output", "ok"]))
def test_gauss_newton_trace(fuzz_record, fault):
  fuzz_record("stability.gauss_newton_trace")
  model = lambda p, x: p["w"] @ x  # noqa: E731
  xs = jnp.eye(3)
  if fault == "empty":
    raises_clean(lambda: stability.gauss_newton_trace(model, PARAMS, xs[:0]), "xs")
  elif fault == "scalar_xs":
    raises_clean(lambda: stability.gauss_newton_trace(model, PARAMS, jnp.asarray(1.0)), "xs")
  elif fault == "vector_output":
    raises_clean(lambda: stability.gauss_newton_trace(lambda p, x: p["w"] * x, PARAMS, xs), "model_fn")
  else:
    assert float(stability.gauss_newton_trace(model, PARAMS, xs)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------------
# optim.perp_grad


@FUZZ
@given(st.sampled_from(BAD_FLOATS + [1e-30, True, "1e-30"]), st.booleans(),
       st.sampled_from(["generic", "zero_weights", "zero_grad", "parallel"]))
def test_perp_grad_eps_and_edge_cases(fuzz_record, eps, rescale, case):
  fuzz_record("optim.perp_grad")
  valid = not isinstance(eps, (bool, str)) and math.isfinite(eps) and eps >= 0
  if not valid:
    raises_clean(lambda: perp_grad(rescale=rescale, eps=eps), "eps")
    return
  w = {"generic": jnp.asarray([1.0, 0.0, 2.0]), "zero_weights": jnp.zeros(3), "zero_grad": jnp.asarray([1.0, 2.0, 3.0]),
       "parallel": jnp.asarray([1.0, 2.0, 3.0])}[case]
  g = {"generic": jnp.asarray([3.0, 4.0, -1.0]), "zero_weights": jnp.asarray([3.0, 4.0, -1.0]),
       "zero_grad": jnp.zeros(3), "parallel": -2.0 * w}[case]
  tx = perp_grad(rescale=rescale, eps=eps)
  out = tx.update({"w": g}, tx.init({"w": w}), {"w": w})[0]["w"]
  assert finite(out)
  if case == "zero_weights" and (not rescale or eps <= 1e-20):
    np.testing.assert_allclose(out, g, rtol=1e-6)       # documented: passes the gradient through
  elif case == "zero_grad":
    assert bool(jnp.all(out == 0))                       # documented: stays zero
  elif case == "generic" and eps < 1e-3:
    assert abs(float(out @ w)) < 1e-4                    # orthogonal to the weights
    if rescale:
      np.testing.assert_allclose(jnp.linalg.norm(out), jnp.linalg.norm(g), rtol=1e-5)


@FUZZ
@given(st.sampled_from(["shape", "structure", "int_dtype", "no_params", "nan_grad"]), st.booleans())
def test_perp_grad_inputs(fuzz_record, fault, rescale):
  fuzz_record("optim.perp_grad")
  tx = perp_grad(rescale=rescale)
  params = {"w": jnp.ones((2, 3)), "b": jnp.zeros((3,))}
  grads = {"w": jnp.full((2, 3), 0.5), "b": jnp.ones((3,))}
  if fault == "shape":
    raises_clean(lambda: tx.update({**grads, "w": jnp.ones((3, 2))}, tx.init(params), params), "updates", "params")
  elif fault == "structure":
    raises_clean(lambda: tx.update({"w": grads["w"]}, tx.init(params), params), "updates", "params")
  elif fault == "int_dtype":
    raises_clean(lambda: tx.update({**grads, "b": jnp.ones((3,), jnp.int32)}, tx.init(params), params), "updates")
  elif fault == "no_params":
    raises_clean(lambda: tx.update(grads, tx.init(params)), "params")
  else:                                                  # documented: non-finite gradients propagate
    out = tx.update({**grads, "w": grads["w"].at[0, 1].set(jnp.nan)}, tx.init(params), params)[0]
    assert not finite(out["w"]) and finite(out["b"])
