"""Stable-SPAM: official-code fixtures, counters, AdaClip/AdaGN/reset oracles, Adam reduction, scale invariance,
clean-reset variant, sharded and shard_map runs, NaN policy, jit == eager, bf16 stability, validation.

(Data-parallel mesh and pmap training for both optimizers are in battery_test.py.)"""

import functools
import importlib
import json
import math
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgen.optim import StableSpamState, scale_by_stable_spam, stable_spam, stable_spam_diagnostics, stable_spam_moments

# The package re-exports the function `stable_spam`, which shadows the module of the same name as an attribute.
stable_spam_module = importlib.import_module("jaxgen.optim.stable_spam")
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "optim"


def _load(name):
  data = np.load(FIXTURES / f"{name}.npz")
  config = json.loads(str(data["config_json"]))
  assert json.loads((FIXTURES / f"{name}.json").read_text()) == config
  return data, config


def _official_kwargs(config):
  """The official StableSPAM(...) arguments mapped to ours."""
  c = config["config"]
  return dict(b1=c["betas"][0], b2=c["betas"][1], eps=c["eps"], weight_decay=c["weight_decay"],
              gamma1=c["gamma1"], gamma2=c["gamma2"], gamma3=c["gamma3"], total_steps=c["total_T"],
              eta_min=c["eta_min"], reset_interval=c["update_proj_gap"])


@functools.cache
def _runner(tx):
  """A jitted ``(params, grads) -> (param trajectory, state trajectory)``; grads[t] is fed at step t (lax.scan)."""
  def step(carry, g):
    p, s = carry
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, u)
    return (p, s), (p, s)

  return jax.jit(lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g)[1])


def _run(tx, params, grads):
  return _runner(tx)(params, grads)


def _fixture_run(name, dtype, injected=False):
  data, config = _load(name)
  names = list(data["param_names"])
  lr = jnp.asarray(data["lr"], dtype)
  factory = optax.inject_hyperparams(stable_spam) if injected else stable_spam
  tx = factory(learning_rate=lambda count: lr[count], **_official_kwargs(config))
  params = {n: jnp.asarray(data[f"init__{n}"], dtype) for n in names}
  grads = {n: jnp.asarray(data[f"grads__{n}"], dtype) for n in names}
  traj, states = _run(tx, params, grads)
  inner = (states.inner_state if injected else states)[0]
  # The reference zeroes the moments after a reset step; we do it when they are next read (stable_spam_moments).
  mu, nu = jax.vmap(lambda st: stable_spam_moments(st, config["config"]["update_proj_gap"]))(inner)
  return data, names, traj, inner._replace(mu=mu, nu=nu)


@pytest.mark.parametrize("name, injected", [
    ("stablespam_4bit_defaults", False),
    ("stablespam_bf16style_totalT_wd", True),   # every hyper-parameter traced (optax.inject_hyperparams)
])
def test_matches_official_fixture_float64(name, injected):
  with jax.enable_x64(True):
    data, names, traj, state = _fixture_run(name, jnp.float64, injected)
  for n in names:
    assert traj[n].dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(traj[n]), data[f"params__{n}"], rtol=1e-9, atol=0, err_msg=n)
    for ours, theirs in [(state.clip_ema, "m_max_t"), (state.norm_m, "m_norm_t"), (state.norm_v, "v_norm_t"),
                         (state.mu, "exp_avg"), (state.nu, "exp_avg_sq")]:
      np.testing.assert_allclose(np.asarray(ours[n]), data[f"state__{n}__{theirs}"], rtol=1e-9, atol=1e-15,
                                 err_msg=f"{n} {theirs}")


def test_matches_official_fixture_float32():
  data, names, traj, state = _fixture_run("stablespam_4bit_defaults_float32", jnp.float32)
  for n in names:
    assert traj[n].dtype == jnp.float32 and state.mu[n].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(traj[n], np.float64), data[f"params__{n}"], rtol=1e-4, atol=1e-6,
                               err_msg=n)


@pytest.mark.parametrize("name", ["stablespam_4bit_defaults", "stablespam_bf16style_totalT_wd"])
def test_counters_and_decay_match_fixture(name):
  data, config = _load(name)
  kw = _official_kwargs(config)
  counts = jnp.arange(60, dtype=jnp.int32)                # state count before step t = count + 1
  step = jax.jit(jax.vmap(lambda c: stable_spam_module._step_scalars(c, kw["reset_interval"], kw["total_steps"],
                                                                      kw["eta_min"], True)))(counts)
  # The reference's stored per-tensor `step` is k_adam (1 on reset steps, then 2, 3, ...).
  np.testing.assert_array_equal(np.asarray(step.k_adam), data["state__w_a__step"])
  with jax.enable_x64(True):
    hp = {"total_steps": kw["total_steps"] or 1, "eta_min": kw["eta_min"]}
    s = jax.jit(lambda t: stable_spam_module._decay_factor(t, hp, jnp.float64))(jnp.arange(1, 61))
  if kw["total_steps"] is not None:
    np.testing.assert_allclose(np.asarray(s), data["scale_used"], rtol=1e-14)
  else:
    np.testing.assert_array_equal(data["scale_used"], 1.0)


def _stream(num_steps, shape=(6, 8), seed=0):
  return np.random.default_rng(seed).normal(size=(num_steps, *shape))


def test_gradient_scale_invariance():
  # With eps = 0 and c a power of two the trajectories are bit-identical; with eps = 1e-8 they differ by eps effects.
  data, config = _load("stablespam_4bit_defaults")
  names = list(data["param_names"])
  with jax.enable_x64(True):
    params = {n: jnp.asarray(data[f"init__{n}"]) for n in names}
    grads = {n: jnp.asarray(data[f"grads__{n}"]) for n in names}
    tx = stable_spam(1e-3, **{**_official_kwargs(config), "eps": 0.0})
    base, _ = _run(tx, params, grads)
    for factor in (2.0**10, 2.0**-7):
      scaled, _ = _run(tx, params, jax.tree.map(lambda g, c=factor: g * c, grads))
      chex.assert_trees_all_equal(base, scaled)
    tx = stable_spam(1e-3, **_official_kwargs(config))
    base, _ = _run(tx, params["w_a"], grads["w_a"])
    scaled, _ = _run(tx, params["w_a"], 1e3 * grads["w_a"])
  # Spec: relative difference ~3e-10 for c = 1e3 (measured against the parameter scale).
  assert np.max(np.abs(np.asarray(scaled) - np.asarray(base))) < 1e-9 * np.max(np.abs(np.asarray(base)))


def _diagnostics(**kw):
  return jax.jit(functools.partial(stable_spam_diagnostics, **kw))


def test_adaclip_clips_a_single_spike_to_the_threshold():
  # b1 = 0: the stored first moment is the AdaGN output r * g_clipped, r = c / n (one scalar per leaf).
  grads = _stream(121)
  grads[120, 2, 3] = 1e4 * grads[120, 2, 3]
  kw = dict(b1=0.0, reset_interval=None)
  with jax.enable_x64(True):
    _, states = _run(scale_by_stable_spam(**kw), jnp.zeros((6, 8)), jnp.asarray(grads))
    before = jax.tree.map(lambda x: x[119], states)
    diag = _diagnostics(**kw)(jnp.asarray(grads[120]), before)
    g_hat = np.asarray(states.mu[120])
  tau = float(diag["clip_threshold"])
  assert float(diag["clip_fraction"]) == pytest.approx(1 / 48, rel=1e-12)
  raw = grads[120]
  clipped = np.abs(raw) > tau
  assert clipped.sum() == 1 and clipped[2, 3]
  r = g_hat[~clipped] / raw[~clipped]                    # one common ratio for the untouched entries
  np.testing.assert_allclose(r, r[0], rtol=1e-13)
  np.testing.assert_allclose(g_hat[2, 3] / r[0], np.sign(raw[2, 3]) * tau, rtol=1e-12)
  # After AdaClip no entry exceeds tau (signs preserved).
  assert np.all(np.abs(g_hat / r[0]) <= tau * (1 + 1e-12))
  assert np.sign(g_hat[2, 3]) == np.sign(raw[2, 3])


def test_nothing_is_clipped_at_the_first_step_and_adagn_normalises():
  g = jnp.asarray(_stream(1)[0] * 100.0, jnp.float32)
  diag = _diagnostics()(g, scale_by_stable_spam().init(g))
  n = float(jnp.linalg.norm(g))
  assert float(diag["clip_fraction"]) == 0.0
  assert float(diag["raw_norm"]) == pytest.approx(n, rel=1e-6)
  assert float(diag["normalized_norm"]) == pytest.approx(n / (n + 1e-8), rel=1e-6)


def test_adagn_keeps_constant_norm_streams_at_unit_norm():
  rng = np.random.default_rng(0)
  stream = rng.normal(size=(30, 5, 4))
  stream = 7.0 * stream / np.linalg.norm(stream.reshape(30, -1), axis=1)[:, None, None]
  tx = scale_by_stable_spam(gamma3=0.0, reset_interval=None)   # AdaClip off: it would change the norm
  with jax.enable_x64(True):
    _, states = _run(tx, jnp.zeros((5, 4)), jnp.asarray(stream))
  t = np.arange(1, 31)
  m_hat = np.asarray(states.norm_m) / (1 - 0.7**t)
  v_hat = np.asarray(states.norm_v) / (1 - 0.9**t)
  np.testing.assert_allclose(m_hat / (np.sqrt(v_hat) + 1e-8), 7.0 / (7.0 + 1e-8), rtol=1e-12)   # AdaGN gain
  np.testing.assert_allclose(np.asarray(states.norm_m), 7.0 * (1 - 0.7**t), rtol=1e-12)


def test_zero_gradient_leaf_gives_zero_update_and_finite_derivatives():
  params = {"a": jnp.ones((3, 4)), "zero": jnp.ones(5)}
  tx = stable_spam(1e-3)
  update = jax.jit(tx.update)
  g0 = {"a": jnp.asarray(_stream(1, (3, 4))[0], jnp.float32), "zero": jnp.zeros(5)}
  updates, state = update(g0, tx.init(params), params)
  assert np.all(np.asarray(updates["zero"]) == 0.0) and np.all(np.isfinite(np.asarray(updates["a"])))
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
  # Differentiating through the optimizer at an all-zero leaf (AdaGN divides by ||g||) gives no NaN.
  grads1 = {"a": jnp.asarray(_stream(1, (3, 4), seed=1)[0], jnp.float32),
            "zero": jnp.asarray(_stream(1, (5,), seed=2)[0], jnp.float32)}
  _, state = update(grads1, state, params)
  total_update = lambda g: sum(jnp.sum(u) for u in jax.tree.leaves(tx.update(g, state, params)[0]))  # noqa: E731
  d = jax.jit(jax.grad(total_update))(g0)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(d))


def test_reset_every_step_is_a_sign_step():
  # Delta T = 1: every step is a reset step, stored moments stay 0, k_adam = 1 => u = g/(|g| + eps) = sign(g).
  grads = _stream(12, (4, 3))
  tx = scale_by_stable_spam(eps=0.0, reset_interval=1)
  with jax.enable_x64(True):
    traj, states = _run(tx, jnp.zeros((4, 3)), jnp.asarray(grads))
  updates = np.diff(np.concatenate([np.zeros((1, 4, 3)), np.asarray(traj)]), axis=0)
  np.testing.assert_allclose(updates, np.sign(grads), rtol=1e-15, atol=0)
  mu, nu = jax.vmap(lambda st: stable_spam_moments(st, reset_interval=1))(states)
  assert not np.any(np.asarray(mu)) and not np.any(np.asarray(nu))
  assert np.all(np.asarray(states.mu)[:, np.abs(grads[0]) > 0] != 0)   # stored lazily: zeroed when next read


def _normalised(grads, eps=1e-8):
  norms = np.linalg.norm(grads.reshape(grads.shape[0], -1), axis=1)
  return grads / (norms + eps)[:, None, None]


def test_without_adaclip_adagn_and_resets_it_is_adam_on_normalised_gradients():
  grads = _stream(40, (5, 3)) * np.geomspace(1e-2, 1e2, 40)[:, None, None]
  with jax.enable_x64(True):
    ours, _ = _run(stable_spam(1e-2, gamma1=0.0, gamma2=0.0, gamma3=0.0, reset_interval=None),
                   jnp.ones((5, 3)), jnp.asarray(grads))
    adam, _ = _run(optax.adam(1e-2, eps=1e-8), jnp.ones((5, 3)), jnp.asarray(_normalised(grads)))
  np.testing.assert_allclose(np.asarray(ours), np.asarray(adam), rtol=1e-12)


def _numpy_adam(params, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
  """Textbook Adam (torch eps convention) in float64; returns the parameter trajectory."""
  m, v, out = np.zeros_like(params), np.zeros_like(params), []
  for k, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    params = params - lr * (m / (1 - b1**k)) / (np.sqrt(v) / np.sqrt(1 - b2**k) + eps)
    out.append(params)
  return np.array(out)


def test_clean_reset_variant_restarts_adam():
  # reference_quirks=False with AdaClip/AdaGN reduced to g/(||g|| + eps): a fresh Adam from each reset step on.
  interval, steps = 7, 24
  raw = _stream(steps, (5, 3))
  grads = _normalised(raw)
  kw = dict(gamma1=0.0, gamma2=0.0, gamma3=0.0, reset_interval=interval)
  with jax.enable_x64(True):
    clean, _ = _run(stable_spam(1e-2, reference_quirks=False, **kw), jnp.ones((5, 3)), jnp.asarray(raw))
  # Moments restart at t = 7, 14, 21: segments of 0-based gradient indices [0, 6), [6, 13), [13, 20), [20, 24).
  bounds = [0, *range(interval - 1, steps, interval), steps]
  expected, p = [], np.ones((5, 3))
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    expected.append(_numpy_adam(p, grads[lo:hi], 1e-2))
    p = expected[-1][-1]
  expected = np.concatenate(expected)
  np.testing.assert_allclose(np.asarray(clean), expected, rtol=1e-12)


def test_nonfinite_gradient_skips_the_whole_step():
  # bad = g1..g4, NaN, g5..g7; clean = g1..g8: after the NaN step, bad[t + 1] must equal clean[t] exactly.
  grads = {"a": _stream(8, (4, 3)), "b": _stream(8, (5,), seed=1)}
  bad = jax.tree.map(lambda g: np.concatenate([g[:4], g[4:5] * np.nan, g[4:7]]), grads)
  params = {"a": jnp.ones((4, 3)), "b": jnp.zeros(5)}
  tx = stable_spam(optax.linear_schedule(1e-2, 1e-3, 8), weight_decay=0.1, reset_interval=3, total_steps=8)
  traj, states = _run(tx, params, jax.tree.map(jnp.asarray, bad))
  traj_clean, states_clean = _run(tx, params, jax.tree.map(jnp.asarray, grads))
  at = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
  chex.assert_trees_all_equal(at(traj, 4), at(traj, 3))     # the NaN step changes nothing ...
  chex.assert_trees_all_equal(at(states, 4), at(states, 3))  # ... not even the counts or the schedule
  chex.assert_trees_all_equal(at(traj, 7), at(traj_clean, 6))
  chex.assert_trees_all_equal(at(states, 7), at(states_clean, 6))
  assert int(states[0].count[7]) == 7


def test_scale_by_stable_spam_skips_inf_and_keeps_state_eager_and_jit():
  tx = scale_by_stable_spam(reset_interval=2)
  params = jnp.ones(4)
  stream = [jnp.array([1.0, 2.0, 3.0, -1.0]), jnp.array([1.0, jnp.inf, 0.0, 2.0]), jnp.array([-1.0, 0.5, 2.0, 0.1])]
  results = {}
  for mode, update in (("eager", tx.update), ("jit", jax.jit(tx.update))):   # jit == eager (spec)
    state, out = tx.init(params), []
    for grads in stream:
      updates, new_state = update(grads, state, params)
      out.append((updates, new_state, state))
      state = new_state
    results[mode] = out
  updates, new_state, old_state = results["jit"][1]
  chex.assert_trees_all_equal(updates, jnp.zeros(4))
  chex.assert_trees_all_equal(new_state, old_state)
  assert isinstance(new_state, StableSpamState) and int(new_state.count) == 1
  chex.assert_trees_all_close(results["eager"], results["jit"], rtol=1e-6, atol=1e-7)


def test_state_dtypes_for_bf16_params():
  params = {"w": jnp.ones((3, 2), jnp.bfloat16)}
  state = scale_by_stable_spam(mu_dtype=jnp.float32).init(params)
  assert state.count.dtype == jnp.int32
  assert state.mu["w"].dtype == jnp.float32 and state.nu["w"].dtype == jnp.bfloat16
  assert state.clip_ema["w"].dtype == state.norm_m["w"].dtype == state.norm_v["w"].dtype == jnp.float32


class _TinyLM(nn.Module):
  """Bigram LM with tied embeddings: one bf16 parameter leaf."""

  vocab: int = 16

  @nn.compact
  def __call__(self, tokens):
    embed = nn.Embed(self.vocab, 16, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    return embed.attend(nn.gelu(embed(tokens)))


def test_bf16_params_with_bf16_hyperparameters_train_200_steps_without_nan():
  # Upstream issue #3 (NaN losses with the BF16 setting): bf16 params, gamma1 0.85, gamma2 0.99999, 200 steps.
  rng = np.random.default_rng(0)
  cdf = np.cumsum(rng.dirichlet(0.3 * np.ones(16), size=16), axis=1)     # a random bigram "language"
  tokens, u = np.zeros(1024, np.int64), rng.random(1024)
  for i in range(1, 1024):
    tokens[i] = min(np.searchsorted(cdf[tokens[i - 1]], u[i]), 15)
  tokens = jnp.asarray(tokens.reshape(32, 32), jnp.int32)
  model = _TinyLM()
  params = model.init(jax.random.key(0), tokens[:1, :-1])
  tx = stable_spam(3e-3, gamma1=0.85, gamma2=0.99999, gamma3=0.999, reset_interval=50, total_steps=200)

  def loss_fn(p, batch):
    logits = model.apply(p, batch[:, :-1]).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

  def step(carry, i):
    p, s = carry
    batch = jax.lax.dynamic_slice_in_dim(tokens, (i % 4) * 8, 8)
    loss, g = jax.value_and_grad(loss_fn)(p, batch)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), loss

  (params_end, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), jnp.arange(200)))(params)
  losses = np.asarray(losses)
  assert np.all(np.isfinite(losses))
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params_end))
  assert losses[-20:].mean() < losses[:5].mean() - 0.3


_SHARD_TX = stable_spam(1e-2, reset_interval=3)


def _sharded_problem():
  """Params, gradient stream and the single-device trajectory."""
  grads = {"w": np.asarray(_stream(6, (8, 6)), np.float32), "b": np.asarray(_stream(6, (16,), seed=1), np.float32)}
  params = {"w": np.ones((8, 6), np.float32), "b": np.zeros(16, np.float32)}
  single, _ = _run(_SHARD_TX, jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, grads))
  return params, grads, jax.device_get(single)


def test_leaves_sharded_under_jit_give_the_unsharded_result():
  params, grads, single = _sharded_problem()
  mesh = Mesh(np.asarray(jax.devices()), ("model",))
  p = jax.device_put(params, {"w": NamedSharding(mesh, P("model", None)), "b": NamedSharding(mesh, P("model"))})
  g = jax.device_put(grads, {"w": NamedSharding(mesh, P(None, "model", None)),
                             "b": NamedSharding(mesh, P(None, "model"))})
  multi, _ = _run(_SHARD_TX, p, g)
  assert len(multi["w"].sharding.device_set) == 8
  chex.assert_trees_all_close(jax.device_get(multi), single, rtol=1e-6, atol=1e-7)


def test_shard_map_with_axis_name_gives_the_unsharded_result():
  params, grads, single = _sharded_problem()
  mesh = Mesh(np.asarray(jax.devices()), ("model",))
  tx = stable_spam(1e-2, reset_interval=3, axis_name="model")
  stream_spec = {"w": P(None, "model", None), "b": P(None, "model")}

  @functools.partial(jax.shard_map, mesh=mesh, in_specs=({"w": P("model", None), "b": P("model")}, stream_spec),
                     out_specs=stream_spec)
  def run_local(p, g):   # each device holds 1/8 of every leaf; statistics are pmax/psum-reduced over "model"
    traj, _ = _run_unjitted(tx, p, g)
    return traj

  multi = jax.jit(run_local)(params, grads)
  chex.assert_trees_all_close(jax.device_get(multi), single, rtol=1e-6, atol=1e-7)


def _run_unjitted(tx, params, grads):
  def step(carry, g):
    p, s = carry
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, u)
    return (p, s), (p, s)

  _, out = jax.lax.scan(step, (params, tx.init(params)), grads)
  return out


@pytest.mark.parametrize("kwargs, name", [
    ({"b1": 1.0}, "b1"), ({"b2": -0.5}, "b2"), ({"gamma1": 1.0}, "gamma1"), ({"gamma2": 1.2}, "gamma2"),
    ({"gamma3": -1e-3}, "gamma3"), ({"gamma3": math.nan}, "gamma3"), ({"eps": -1.0}, "eps"),
    ({"reset_interval": -5}, "reset_interval"), ({"total_steps": 0}, "total_steps"),
    ({"eta_min": 1.5}, "eta_min"), ({"weight_decay": -1e-4}, "weight_decay"),
    ({"learning_rate": -1.0}, "learning_rate"),
])
def test_invalid_hyperparameters_raise(kwargs, name):
  kwargs = {"learning_rate": 1e-3, **kwargs}
  with pytest.raises(ValueError, match=name):
    stable_spam(**kwargs)


def test_non_integer_interval_raises_type_error():
  with pytest.raises(TypeError, match="reset_interval"):
    scale_by_stable_spam(reset_interval=10.5)
  with pytest.raises(TypeError, match="total_steps"):
    scale_by_stable_spam(total_steps=False)


def test_reset_interval_none_and_zero_agree():
  counts = jnp.arange(40, dtype=jnp.int32)
  for quirks in (True, False):
    none = jax.vmap(lambda c, q=quirks: stable_spam_module._step_scalars(c, None, None, 0.5, q))(counts)
    zero = jax.vmap(lambda c, q=quirks: stable_spam_module._step_scalars(c, 0, None, 0.5, q))(counts)
    chex.assert_trees_all_equal(none, zero)
    np.testing.assert_array_equal(np.asarray(none.k_adam), np.arange(1, 41))
