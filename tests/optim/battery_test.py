"""The STYLE §4 optax battery, for both SPAM and Stable-SPAM, plus data-parallel == single-device training."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.core import parallel, train
from jaxgen.optim import spam, stable_spam

# name -> (factory, keyword arguments). Short reset intervals so that resets happen inside the short tests too.
OPTIMIZERS = {
    "spam": (spam, dict(reset_interval=100, warmup_steps=20, clip_delay=5)),
    "stable_spam": (stable_spam, dict(reset_interval=100, total_steps=30_000)),
}
NAMES = sorted(OPTIMIZERS)


def _make(name, learning_rate=1e-2, **overrides):
  factory, kwargs = OPTIMIZERS[name]
  return factory(learning_rate, **{**kwargs, **overrides})


def _parabola(dtype=jnp.float32):
  target = jnp.array([1.0, -1.0, 1.0], dtype)
  return jnp.array([-1.0, 10.0, 1.0], dtype), target, lambda p: jnp.sum((p - target) ** 2)


def _rosenbrock(dtype=jnp.float32):
  return (jnp.zeros(2, dtype), jnp.ones(2, dtype),
          lambda p: (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2)


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_parabola_and_rosenbrock_inside_one_scan(name):
  tx = _make(name)
  problems = [_parabola(), _rosenbrock()]

  def solve(init, objective):
    def step(carry, _):
      params, state = carry
      updates, state = tx.update(jax.grad(objective)(params), state, params)
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(step, (init, tx.init(init)), length=30_000)[0][0]

  results = jax.jit(lambda inits: [solve(x, f) for x, (_, _, f) in zip(inits, problems)])([p[0] for p in problems])
  for result, (_, target, _) in zip(results, problems):
    np.testing.assert_allclose(np.asarray(result), np.asarray(target), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name", NAMES)
def test_accepts_extra_kwargs_and_does_not_recompile(name, caplog):
  tx = _make(name)
  init, _, objective = _rosenbrock()

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(objective)(params), state, params, unexpected_extra_arg=1.0)
    return optax.apply_updates(params, updates), state

  params, state = step(init, tx.init(init))
  caplog.clear()
  with jax.log_compiles():
    params, state = step(params, state)
  compilations = [r for r in caplog.records if re.search(r"Finished .* compilation", r.getMessage())]
  assert not compilations, "the update recompiled on its second call"
  assert np.all(np.isfinite(np.asarray(params)))


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_gives_the_same_updates_and_state(name):
  factory, kwargs = OPTIMIZERS[name]
  params = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]
  grads = [jnp.ones((2, 3)), -jnp.linspace(0.0, 2.0, 20).reshape(2, 5, 2)]
  plain = factory(1e-2, **kwargs)
  injected = optax.inject_hyperparams(factory)(1e-2, **kwargs)   # every number (ints too) becomes a traced array

  def two_steps(tx):
    state = tx.init(params)
    _, state = tx.update(grads, state, params)
    return tx.update(grads, state, params)

  updates, state = jax.jit(lambda: two_steps(plain))()
  updates_inj, state_inj = jax.jit(lambda: two_steps(injected))()
  chex.assert_trees_all_close(updates_inj, updates, rtol=1e-5)
  chex.assert_trees_all_close(state_inj.inner_state, state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_updates_keep_the_params_dtype_and_multisteps_first_update_is_zero(name, dtype):
  tx = _make(name)
  params = jnp.array([1.0, 2.0], dtype)
  grads = jax.grad(lambda x: jnp.sum(x.astype(jnp.float32) ** 2))(params)
  assert grads.dtype == params.dtype
  updates, _ = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
  assert updates.dtype == params.dtype
  multi = optax.MultiSteps(tx, every_k_schedule=4)
  updates, _ = jax.jit(multi.update)(grads, jax.jit(multi.init)(params), params)
  chex.assert_trees_all_equal(updates, jnp.zeros_like(grads))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_state_keeps_shape_and_dtype_through_lax_cond(name, dtype):
  tx = _make(name)
  init, _, objective = _parabola(jnp.dtype(dtype))

  @jax.jit
  def step(params, state):
    grads = jax.grad(objective)(params)
    cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0      # not foldable: both branches compiled
    updates, state = jax.lax.cond(cond, lambda: tx.update(grads, state, params), lambda: (params, state))
    return optax.apply_updates(params, updates), state

  params, state = init, tx.init(init)
  for _ in range(2):
    params, new_state = step(params, state)
    assert params.dtype == jnp.dtype(dtype)
    cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
    state = jax.lax.cond(cond, lambda s=state: s, lambda s=new_state: s)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, tx.init(init))


@pytest.mark.parametrize("name", NAMES)
def test_schedule_as_learning_rate(name):
  init, _, objective = _parabola()
  constant, scheduled = _make(name, 1e-3), _make(name, optax.constant_schedule(1e-3))
  decaying = _make(name, optax.linear_schedule(1e-3, 0.0, 10))

  def run(tx):
    def step(carry, _):
      params, state = carry
      updates, state = tx.update(jax.grad(objective)(params), state, params)
      return (optax.apply_updates(params, updates), state), params
    return jax.lax.scan(step, (init, tx.init(init)), length=10)[1]

  traj_constant, traj_scheduled, traj_decaying = jax.jit(lambda: [run(constant), run(scheduled), run(decaying)])()
  chex.assert_trees_all_close(traj_scheduled, traj_constant, rtol=1e-6)
  # The schedule is called with the 0-based count: the first step uses schedule(0) = 1e-3 ...
  np.testing.assert_allclose(np.asarray(traj_decaying[1]), np.asarray(traj_constant[1]), rtol=1e-6)
  # ... and later steps are smaller.
  assert (np.linalg.norm(np.asarray(traj_decaying[-1] - traj_decaying[-2]))
          < 0.5 * np.linalg.norm(np.asarray(traj_constant[-1] - traj_constant[-2])))


def _tiny_regression(num_examples=64, dim=6, outputs=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_examples, dim)).astype(np.float32)
  w = rng.normal(size=(dim, outputs)).astype(np.float32)
  y = (np.tanh(x @ w) + 0.1 * rng.normal(size=(num_examples, outputs))).astype(np.float32)
  return {"x": x, "y": y}


@pytest.mark.parametrize("name", NAMES)
def test_data_parallel_mesh_and_pmap_equal_single_device(name):
  data = _tiny_regression()
  batches = train.epoch_batches(data, 16, seed=1)
  rng = np.random.default_rng(1)
  params = {"hidden": {"w": jnp.asarray(rng.normal(size=(6, 8)) / 3, jnp.float32), "b": jnp.zeros(8)},
            "out": {"w": jnp.asarray(rng.normal(size=(8, 3)) / 3, jnp.float32)}}

  def loss_fn(p, batch, key):
    del key
    h = jnp.tanh(batch["x"] @ p["hidden"]["w"] + p["hidden"]["b"][None, :])
    return jnp.mean((h @ p["out"]["w"] - batch["y"]) ** 2)

  # Resets, warm-up / clip windows and weight decay all happen within the 8 steps.
  tx = _make(name, optax.cosine_decay_schedule(3e-2, 8), weight_decay=1e-2, reset_interval=3,
             **({"warmup_steps": 2, "clip_delay": 1} if name == "spam" else {"total_steps": 8}))
  state0 = train.init_train_state(params, tx, jax.random.key(0))
  single = train.fit(state0, train.make_train_step(loss_fn, tx), batches, 8, progress=False, log_every=4)
  mesh = parallel.make_data_mesh(8)
  multi = train.fit(state0, train.make_train_step(loss_fn, tx, mesh=mesh), batches, 8, mesh=mesh, progress=False,
                    log_every=4)
  assert len(multi.state.params["hidden"]["w"].sharding.device_set) == 8
  chex.assert_trees_all_close(jax.device_get(multi.state.params), jax.device_get(single.state.params), rtol=1e-5,
                              atol=1e-7)
  assert int(multi.state.opt_state[0].count) == 8
  # Users' jax.pmap code (gradients pmean-ed over the axis) gives the same numbers too.
  n = 2
  pmap_step = jax.pmap(train.make_train_step(loss_fn, tx, pmap_axis_name="data"), axis_name="data",
                       devices=jax.devices()[:n])
  state = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), state0)
  for k in range(8):
    state, _ = pmap_step(state, jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batches(k)))
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], state.params), jax.device_get(single.state.params),
                              rtol=1e-5, atol=1e-7)
