"""FlowMLP: zero initial velocity, conditioning on time and class, skip path, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.nn import FlowMLP


def _init(model, batch=4):
  x = jnp.ones((batch, 28, 28, 1))
  return model.init(jax.random.key(0), x, jnp.zeros((batch,)), jnp.zeros((batch,), jnp.int32)), x


def test_initial_velocity_is_zero_and_shape_kept():
  model = FlowMLP(width=32, depth=2)
  params, x = _init(model)
  v = model.apply(params, x, jnp.full((4,), 0.3), jnp.array([0, 1, 2, 10]))
  assert v.shape == x.shape and v.dtype == x.dtype
  np.testing.assert_array_equal(np.asarray(v), 0.0)


def test_learns_time_and_class_dependent_target():
  model = FlowMLP(width=32, depth=2)
  params, _ = _init(model, 8)
  key = jax.random.key(1)
  x = jax.random.normal(key, (8, 28, 28, 1))
  t = jnp.linspace(0.0, 1.0, 8)
  y = jnp.array([0, 1, 2, 3, 10, 10, 4, 5])
  target = (t[:, None, None, None] * x + y[:, None, None, None].astype(jnp.float32) / 10.0)
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, x, t, y) - target) ** 2))(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(150):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert losses[-1] < 0.1 * losses[0]
  # The output now depends on the label and on t.
  v1 = model.apply(params, x, t, y)
  v2 = model.apply(params, x, t, jnp.full((8,), 10))
  v3 = model.apply(params, x, t[::-1], y)
  assert float(jnp.abs(v1 - v2).max()) > 1e-3 and float(jnp.abs(v1 - v3).max()) > 1e-3


def test_invalid_inputs_raise():
  model = FlowMLP(width=16, depth=1)
  params, x = _init(model)
  with pytest.raises(ValueError, match="t must"):
    model.apply(params, x, jnp.zeros((3,)), jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="y"):
    model.apply(params, x, jnp.zeros((4,)), jnp.full((4,), 11))
  with pytest.raises(ValueError, match="y"):
    model.apply(params, x, jnp.zeros((4,)), jnp.zeros((4,)))
  with pytest.raises(ValueError, match="x must be"):
    model.apply(params, x[0], jnp.zeros((4,)), jnp.zeros((4,), jnp.int32))
