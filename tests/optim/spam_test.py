"""SPAM: official-code fixtures, warm-up factor, spike clipping, resets, Adam reduction, weight decay, NaN policy,
jit == eager, validation. (The optax battery, mesh and pmap runs are in battery_test.py.)"""

import functools
import json
import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.optim import SpamState, scale_by_spam, spam

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "optim"


def _load(name):
  data = np.load(FIXTURES / f"{name}.npz")
  config = json.loads(str(data["config_json"]))
  sidecar = json.loads((FIXTURES / f"{name}.json").read_text())
  assert sidecar == config
  return data, config


def _spam_from_official(config, learning_rate, factory=spam):
  """The official SPAM(...) arguments mapped to ours."""
  c = config["config"]
  return factory(learning_rate=learning_rate, b1=c["betas"][0], b2=c["betas"][1], eps=c["eps"],
                 weight_decay=c["weight_decay"], threshold=c["threshold"], reset_interval=c["DeltaT"],
                 warmup_steps=c["warmup_steps"], clip_delay=c["grad_accu_steps"])


@functools.cache
def _runner(tx):
  def step(carry, g):
    p, s = carry
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, u)
    return (p, s), (p, s)

  return jax.jit(lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g))


def _run(tx, params, grads):
  """Feeds grads[t] at step t (one jitted lax.scan); returns (param trajectory, state trajectory, final state)."""
  (_, final), (traj, states) = _runner(tx)(params, grads)
  return traj, states, final


@pytest.mark.parametrize("name", ["spam_basic", "spam_wd_sched"])
@pytest.mark.parametrize("injected", [False, True])
def test_matches_official_fixture(name, injected):
  data, config = _load(name)
  names = list(data["param_names"])
  with jax.enable_x64(True):
    lr = jnp.asarray(data["lr"])
    schedule = lambda count: lr[count]  # noqa: E731  (lr[t-1] is used at step t; count is 0-based)
    factory = optax.inject_hyperparams(spam) if injected else spam   # injected: every number is traced
    tx = _spam_from_official(config, schedule, factory)
    params = {n: jnp.asarray(data[f"init__{n}"]) for n in names}
    grads = {n: jnp.asarray(data[f"grads__{n}"]) for n in names}
    traj, states, _ = _run(tx, params, grads)
    inner = (lambda s: s.inner_state) if injected else (lambda s: s)
    for n in names:
      assert traj[n].dtype == jnp.float64
      np.testing.assert_allclose(np.asarray(traj[n]), data[f"params__{n}"], rtol=1e-9, atol=0, err_msg=n)
      spam_state = inner(states)[0]
      np.testing.assert_allclose(np.asarray(spam_state.mu[n]), data[f"state__{n}__exp_avg"], rtol=1e-9,
                                 atol=1e-14, err_msg=n)
      np.testing.assert_allclose(np.asarray(spam_state.nu[n]), data[f"state__{n}__exp_avg_sq"], rtol=1e-9,
                                 atol=1e-14, err_msg=n)
      np.testing.assert_array_equal(np.asarray(spam_state.count), data[f"state__{n}__step"])


@pytest.mark.parametrize("name", ["spam_basic", "spam_wd_sched"])
def test_warmup_factor_matches_fixture(name):
  # With b1 = b2 = 0, eps = 0, no clipping and a unit gradient, u_t = w_t exactly.
  data, config = _load(name)
  c = config["config"]
  tx = scale_by_spam(b1=0.0, b2=0.0, eps=0.0, threshold=0.0, reset_interval=c["DeltaT"],
                     warmup_steps=c["warmup_steps"], clip_delay=c["grad_accu_steps"])
  with jax.enable_x64(True):
    traj, _, _ = _run(tx, jnp.zeros(3), jnp.ones((60, 3)))     # params_t = sum of u_1..u_t
    w = np.diff(np.concatenate([[0.0], np.asarray(traj[:, 0])]))
  np.testing.assert_allclose(w, data["scale_used"], rtol=1e-12)


def _stream(num_steps, shape=(4, 5), seed=0):
  return np.random.default_rng(seed).normal(size=(num_steps, *shape))


def test_spike_is_clipped_to_sqrt_threshold_times_v():
  # b1 = 0 makes the stored first moment equal to the (clipped) gradient of the step.
  theta, b2 = 50.0, 0.9
  grads = _stream(12)
  grads[10, 1, 2] = 1e4
  grads[10, 3, 0] = -3e3
  tx = scale_by_spam(b1=0.0, b2=b2, threshold=theta, reset_interval=None, clip_delay=3)
  with jax.enable_x64(True):
    _, states, _ = _run(tx, jnp.zeros((4, 5)), jnp.asarray(grads))
    v_prev = np.asarray(states.nu[9])
    g_tilde = np.asarray(states.mu[10])
  bound = np.sqrt(theta * v_prev)
  spiked = grads[10] ** 2 > theta * v_prev
  assert spiked[1, 2] and spiked[3, 0]
  # The bound is recovered from the new second moment (no copy of the donated v, see spam.py), so it equals
  # sqrt(theta v_prev) to within a couple of float64 roundings, not bit for bit.
  np.testing.assert_allclose(g_tilde[spiked], np.sign(grads[10][spiked]) * bound[spiked], rtol=1e-15, atol=0)
  np.testing.assert_array_equal(g_tilde[~spiked], grads[10][~spiked])


@pytest.mark.parametrize("spike_step", [2, 21, 22, 23])
def test_no_clipping_in_first_clip_delay_steps_and_after_resets(spike_step):
  # clip_delay A = 3, reset interval 20: steps 1, 2 and 20, 21, 22 (t mod 20 < 3) are never clipped.
  grads = _stream(25)
  grads[spike_step - 1, 0, 0] = 1e6
  tx = scale_by_spam(b1=0.0, threshold=5.0, reset_interval=20, clip_delay=3, warmup_steps=2)
  with jax.enable_x64(True):
    _, states, _ = _run(tx, jnp.zeros((4, 5)), jnp.asarray(grads))
  clipped = float(states.mu[spike_step - 1][0, 0]) != 1e6
  assert clipped == (spike_step % 20 >= 3)


def test_reset_zeroes_moments_before_use():
  grads = _stream(10)
  tx = scale_by_spam(b1=0.9, b2=0.999, reset_interval=5, clip_delay=2, warmup_steps=2)
  with jax.enable_x64(True):
    _, states, _ = _run(tx, jnp.zeros((4, 5)), jnp.asarray(grads))
  np.testing.assert_allclose(np.asarray(states.mu[4]), 0.1 * grads[4], rtol=1e-14)
  np.testing.assert_allclose(np.asarray(states.nu[4]), 0.001 * grads[4] ** 2, rtol=1e-12)


def test_threshold_zero_and_no_resets_is_adam():
  # HF-style Adam puts eps outside the bias correction; with eps = 0 it is optax.adam exactly.
  with jax.enable_x64(True):
    grads = {"a": jnp.asarray(_stream(40)), "b": jnp.asarray(_stream(40, (3,), seed=1))}
    params = {"a": jnp.ones((4, 5), jnp.float64), "b": jnp.zeros(3, jnp.float64)}
    ours, _, _ = _run(spam(1e-2, eps=0.0, threshold=0.0, reset_interval=None), params, grads)
    adam, _, _ = _run(optax.adam(1e-2, eps=0.0), params, grads)
  chex.assert_trees_all_close(ours, adam, rtol=1e-12)


def test_weight_decay_is_applied_after_the_step_and_respects_mask():
  lr, wd = 0.1, 0.5
  params = {"w": jnp.array([2.0, -1.0]), "b": jnp.array([3.0])}
  grads = {"w": jnp.array([1.0, -1.0]), "b": jnp.array([1.0])}
  base = spam(lr)
  decayed = spam(lr, weight_decay=wd, mask={"w": True, "b": False})
  u0, _ = base.update(grads, base.init(params), params)
  u1, _ = decayed.update(grads, decayed.init(params), params)
  # theta_final = (1 - lr wd) (theta + u0)  for decayed leaves; unchanged rule otherwise.
  expected_w = (1 - lr * wd) * (params["w"] + u0["w"]) - params["w"]
  chex.assert_trees_all_close(u1, {"w": expected_w, "b": u0["b"]}, rtol=1e-6)
  # jit == eager.
  u1_jit, _ = jax.jit(decayed.update)(grads, decayed.init(params), params)
  chex.assert_trees_all_close(u1_jit, u1, rtol=1e-6)


_NAN_TX = spam(optax.linear_schedule(1e-2, 1e-3, 8), weight_decay=0.1, reset_interval=4, warmup_steps=2,
               clip_delay=1)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_gradient_skips_the_whole_step(value):
  # bad = g1..g4, g5 with one bad entry, g5..g7; clean = g1..g8: bad[t + 1] must equal clean[t] after the bad step.
  grads = {"a": _stream(8), "b": _stream(8, (3,), seed=1)}
  poisoned = grads["b"][4].copy()
  poisoned[1] = value
  bad = {"a": np.concatenate([grads["a"][:5], grads["a"][4:7]]),
         "b": np.concatenate([grads["b"][:4], poisoned[None], grads["b"][4:7]])}
  params = {"a": jnp.ones((4, 5)), "b": jnp.zeros(3)}
  traj, states, _ = _run(_NAN_TX, params, jax.tree.map(jnp.asarray, bad))
  traj_clean, states_clean, _ = _run(_NAN_TX, params, jax.tree.map(jnp.asarray, grads))
  at = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
  # The bad step changes nothing: parameters and the whole state (counts, moments, schedule) are kept ...
  chex.assert_trees_all_equal(at(traj, 4), at(traj, 3))
  chex.assert_trees_all_equal(at(states, 4), at(states, 3))
  # ... and the run continues as if it had never seen that batch.
  chex.assert_trees_all_equal(at(traj, 7), at(traj_clean, 6))
  chex.assert_trees_all_equal(at(states, 7), at(states_clean, 6))
  assert int(states[0].count[7]) == 7


def test_scale_by_spam_skips_nonfinite_and_keeps_state():
  tx = scale_by_spam()
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  _, state = tx.update({"w": jnp.array([1.0, 2.0, 3.0])}, state, params)
  updates, new_state = tx.update({"w": jnp.array([1.0, jnp.nan, 3.0])}, state, params)
  chex.assert_trees_all_equal(updates, {"w": jnp.zeros(3)})
  chex.assert_trees_all_equal(new_state, state)
  assert isinstance(new_state, SpamState) and new_state.count.dtype == jnp.int32


@pytest.mark.parametrize("kwargs, name", [
    ({"b1": 1.0}, "b1"), ({"b1": -0.1}, "b1"), ({"b2": 1.5}, "b2"), ({"b2": math.nan}, "b2"),
    ({"eps": -1e-8}, "eps"), ({"threshold": -1.0}, "threshold"), ({"reset_interval": -1}, "reset_interval"),
    ({"warmup_steps": -2}, "warmup_steps"), ({"clip_delay": -1}, "clip_delay"),
    ({"weight_decay": -0.1}, "weight_decay"), ({"learning_rate": -1e-3}, "learning_rate"),
])
def test_invalid_hyperparameters_raise(kwargs, name):
  kwargs = {"learning_rate": 1e-3, **kwargs}
  with pytest.raises(ValueError, match=name):
    spam(**kwargs)


def test_non_integer_interval_raises_type_error():
  with pytest.raises(TypeError, match="reset_interval"):
    scale_by_spam(reset_interval=2.5)
  with pytest.raises(TypeError, match="clip_delay"):
    scale_by_spam(clip_delay=True)


def test_reset_interval_none_and_zero_agree():
  grads = jnp.asarray(_stream(30, (6,)))
  none, _, _ = _run(spam(1e-2, reset_interval=None, clip_delay=2), jnp.zeros(6), grads)
  zero, _, _ = _run(spam(1e-2, reset_interval=0, clip_delay=2), jnp.zeros(6), grads)
  chex.assert_trees_all_equal(none, zero)
