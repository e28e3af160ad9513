"""Fuzzing the public API of core, guidance, optim and nn with malformed inputs (hypothesis).

For every generated case the function must either raise ``ValueError`` / ``TypeError`` (with a message naming the
argument) or return the documented result; it must never return a silent NaN for bad *settings* or broadcast
mismatched shapes by accident. NaN/inf *data* has a documented result per function (propagated, or a skipped
optimizer step). The number of cases per function is printed in the pytest terminal summary.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from jaxgen import guidance, nn, optim
from jaxgen.core import flow, lora, metrics, ode, quant
from tests.reliability._fuzz import FUZZ, finite, raises_clean

BAD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -1e-3, 0.0, 1.0, 1.5, 1e30])
dims = st.integers(1, 5)


def _mismatched(draw):
  """Two different shapes of the same rank (a broadcastable pair included, e.g. (4, 1) vs (4, 3))."""
  rank = draw(st.integers(1, 3))
  a = tuple(draw(dims) for _ in range(rank))
  b = list(a)
  i = draw(st.integers(0, rank - 1))
  b[i] = draw(st.sampled_from([1, a[i] + 1]) if a[i] != 1 else st.just(2))
  return a, tuple(b)


mismatched_shapes = st.composite(lambda draw: _mismatched(draw))()


# ----------------------------------------------------------------------------------------------------------------
# guidance


@FUZZ
@given(mismatched_shapes, st.sampled_from(["optimized_scale", "cfg_combine", "cfg_zero_star_combine"]))
def test_guidance_rejects_mismatched_velocities(fuzz_record, shapes, name):
  fuzz_record(f"guidance.{name}")
  a, b = (jnp.ones(s) for s in shapes)
  calls = {"optimized_scale": lambda: guidance.optimized_scale(a, b),
           "cfg_combine": lambda: guidance.cfg_combine(a, b, 2.0),
           "cfg_zero_star_combine": lambda: guidance.cfg_zero_star_combine(a, b, 2.0, step=0)}
  raises_clean(calls[name], "v_cond", "v_uncond")


@FUZZ
@given(st.sampled_from([jnp.int32, jnp.bool_, jnp.uint8]))
def test_guidance_rejects_integer_velocities(fuzz_record, dtype):
  fuzz_record("guidance.optimized_scale")
  x = jnp.ones((2, 3), dtype)
  raises_clean(lambda: guidance.optimized_scale(x, x), "v_cond", "dtype")


@FUZZ
@given(BAD_FLOATS)
def test_cfg_scale_must_befinite(fuzz_record, w):
  fuzz_record("guidance.cfg_combine")
  v = jnp.ones((2, 3))
  if math.isfinite(w):
    assert finite(guidance.cfg_combine(v, 2 * v, w))    # any finite scale (negative too) is a valid extrapolation
  else:
    raises_clean(lambda: guidance.cfg_combine(v, 2 * v, w), "w")


@FUZZ
@given(st.integers(-5, 12), st.integers(-5, 12))
def test_zero_init_mask_counts(fuzz_record, num_steps, num_zero_steps):
  fuzz_record("guidance.zero_init_mask")
  if num_steps < 0 or num_zero_steps < 0:      # an empty grid (0 steps) is allowed: an empty mask
    raises_clean(lambda: guidance.zero_init_mask(num_steps, num_zero_steps), "num_steps", "num_zero_steps")
  else:
    mask = np.asarray(guidance.zero_init_mask(num_steps, num_zero_steps))
    assert mask.shape == (num_steps,) and mask.sum() == min(num_steps, num_zero_steps)


@FUZZ
@given(BAD_FLOATS, st.sampled_from(["stds", "weights"]))
def test_gmm_parameters(fuzz_record, bad, which):
  fuzz_record("guidance.gmm_velocity")
  means, stds, weights = jnp.ones((3, 2)), jnp.ones((3,)), jnp.ones((3,)) / 3
  args = {"stds": stds, "weights": weights}
  args[which] = args[which].at[1].set(bad)
  call = lambda: guidance.gmm_velocity(jnp.ones((5, 2)), jnp.asarray(0.5), means, args["stds"], args["weights"])  # noqa: E731
  # Documented: stds must be positive with a finite variance in the dtype (float32: below ~4.6e18).
  valid = math.isfinite(bad) and (0 < bad < 4e18 if which == "stds" else bad >= 0)
  if valid:
    assert finite(call())
  else:
    raises_clean(call, which)


# ----------------------------------------------------------------------------------------------------------------
# core.ode / core.flow / core.metrics / core.quant / core.lora


@FUZZ
@given(st.sampled_from(["euler", "heun", "midpoint", "rk4", "Euler", "dopri5", ""]),
       st.sampled_from([(5,), (1,), (0,), (5, 2), ()]))
def test_odeint_method_and_grid(fuzz_record, method, grid_shape):
  fuzz_record("core.ode.odeint")
  ts = jnp.linspace(0.0, 1.0, int(np.prod(grid_shape)) if grid_shape else 1).reshape(grid_shape)
  call = lambda: ode.odeint(lambda t, x: -x, jnp.ones((2, 3)), ts, method=method)  # noqa: E731
  if method in ode.METHODS if hasattr(ode, "METHODS") else method in ("euler", "heun", "midpoint", "rk4"):
    if grid_shape == (5,):
      out = call()
      assert finite(out) and out.shape == (2, 3)
      return
    raises_clean(call, "ts")
  else:
    raises_clean(call, "method")


@FUZZ
@given(st.integers(-3, 3))
def test_uniform_grid_steps(fuzz_record, n):
  fuzz_record("core.ode.uniform_grid")
  if n < 1:
    raises_clean(lambda: ode.uniform_grid(n), "num_steps")
  else:
    assert ode.uniform_grid(n).shape == (n + 1,)


@FUZZ
@given(mismatched_shapes)
def test_flow_interpolate_shapes(fuzz_record, shapes):
  fuzz_record("core.flow.interpolate")
  a, b = (jnp.ones(s) for s in shapes)
  raises_clean(lambda: flow.interpolate(a, b, jnp.asarray(0.5)), "x0", "x1")


@FUZZ
@given(BAD_FLOATS)
def test_drop_labels_rate(fuzz_record, rate):
  fuzz_record("core.flow.drop_labels")
  call = lambda: flow.drop_labels(jax.random.key(0), jnp.arange(6), rate=rate, null_label=10)  # noqa: E731
  if math.isfinite(rate) and 0 <= rate <= 1:
    out = np.asarray(call())
    assert out.shape == (6,) and set(out.tolist()) <= set(range(6)) | {10}
  else:
    raises_clean(call, "rate")


@FUZZ
@given(mismatched_shapes, st.sampled_from(["energy_distance", "frechet_distance"]))
def test_distances_reject_bad_shapes(fuzz_record, shapes, name):
  fuzz_record(f"core.metrics.{name}")
  a, b = (jnp.ones(s) for s in shapes)
  fn = getattr(metrics, name)
  if len(shapes[0]) == 2 and shapes[0][1] == shapes[1][1] and min(shapes[0][0], shapes[1][0]) >= 2:
    assert finite(fn(a + jnp.arange(a.shape[0])[:, None], b))   # different sample counts are allowed
  else:
    raises_clean(lambda: fn(a, b), "x", "y", "features_1", "features_2")


@FUZZ
@given(st.integers(-2, 40), st.sampled_from(["int4_weight_fake_quant", "int4_act_fake_quant", "fp4_e1m2_fake_quant"]))
def test_quant_group_size(fuzz_record, group_size, name):
  fuzz_record(f"core.quant.{name}")
  x = jax.random.normal(jax.random.key(1), (4, 32))
  call = lambda: getattr(quant, name)(x, group_size=group_size)  # noqa: E731
  keep_ok = name == "int4_weight_fake_quant" or group_size > 2
  if group_size >= 1 and keep_ok:
    out = call()
    assert out.shape == x.shape and finite(out)
  else:
    raises_clean(call, "group_size", "keep_topk")


@FUZZ
@given(st.integers(-2, 5))
def test_lora_rank(fuzz_record, rank):
  fuzz_record("core.lora.lora_init")
  params = {"dense": {"kernel": jnp.ones((4, 6))}}
  call = lambda: lora.lora_init(jax.random.key(0), params, rank=rank)  # noqa: E731
  if rank >= 1:
    assert jax.tree.leaves(call())
  else:
    raises_clean(call, "rank")


# ----------------------------------------------------------------------------------------------------------------
# optim


HYPERS = {
    "spam": {"b1": "unit", "b2": "unit", "eps": "nonneg", "threshold": "nonneg", "reset_interval": "count",
             "warmup_steps": "count", "clip_delay": "count", "weight_decay": "nonneg"},
    "stable_spam": {"b1": "unit", "b2": "unit", "eps": "nonneg", "gamma1": "unit", "gamma2": "unit",
                    "gamma3": "unit", "reset_interval": "count", "total_steps": "positive", "eta_min": "closed_unit",
                    "weight_decay": "nonneg"},
}


def _valid(kind, value):
  if isinstance(value, float) and not math.isfinite(value):
    return False
  return {"unit": 0 <= value < 1, "closed_unit": 0 <= value <= 1, "nonneg": value >= 0,
          "count": float(value).is_integer() and value >= 0,
          "positive": float(value).is_integer() and value >= 1}[kind]


@FUZZ
@given(st.sampled_from(["spam", "stable_spam"]), st.data())
def test_optimizer_hyperparameters(fuzz_record, name, data):
  fuzz_record(f"optim.{name}")
  arg = data.draw(st.sampled_from(sorted(HYPERS[name])))
  kind = HYPERS[name][arg]
  value = data.draw(st.sampled_from([-1, 0, 1, 3, -0.5, 0.5, 0.999, 1.0, 2.5, math.nan, math.inf]))
  if kind in ("count", "positive") and isinstance(value, float) and value.is_integer():
    value = int(value)
  factory = getattr(optim, name)
  call = lambda: factory(1e-3, **{arg: value})  # noqa: E731
  if _valid(kind, value):
    tx = call()
    params = {"w": jnp.ones((3, 2))}
    updates, _ = tx.update({"w": jnp.full((3, 2), 0.5)}, tx.init(params), params)
    assert finite(updates)
  else:
    raises_clean(call, arg)


@FUZZ
@given(st.sampled_from(["spam", "stable_spam"]), st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 5))
def test_nonfinite_gradients_skip_the_step(fuzz_record, name, bad, index):
  fuzz_record(f"optim.{name}(nonfinite grads)")
  tx = getattr(optim, name)(1e-2)
  params = {"w": jnp.ones((2, 3)), "b": jnp.zeros((4,))}
  state = tx.init(params)
  good = {"w": jnp.full((2, 3), 0.3), "b": jnp.full((4,), -0.2)}
  _, state = tx.update(good, state, params)
  poisoned = {"w": good["w"].reshape(-1).at[index].set(bad).reshape(2, 3), "b": good["b"]}
  updates, new_state = tx.update(poisoned, state, params)
  assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
  assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)))


# ----------------------------------------------------------------------------------------------------------------
# nn


@functools.cache
def _tiny_llama():
  model = nn.TinyLlama(11, d_model=16, num_layers=1, num_heads=2, mlp_dim=32, max_len=8)
  return model, model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))


@FUZZ
@given(st.integers(1, 4), st.integers(1, 4))
def test_tinyllama_rejects_bad_tokens(fuzz_record, batch, length):
  fuzz_record("nn.TinyLlama")
  model, params = _tiny_llama()
  raises_clean(lambda: model.apply(params, jnp.zeros((batch, length), jnp.float32)), "token", "dtype", "int")
  raises_clean(lambda: model.apply(params, jnp.zeros((batch, 9), jnp.int32)), "max_len", "length", "context")
