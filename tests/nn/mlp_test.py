"""Tests for jaxgen.nn.mlp."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn import MLP


def test_shapes_jit_and_determinism():
  model = MLP((16, 16, 3))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4)), jnp.float32)
  params = model.init(jax.random.key(0), x)
  assert [params["params"][f"dense_{i}"]["kernel"].shape for i in range(3)] == [(4, 16), (16, 16), (16, 3)]
  out = model.apply(params, x)
  chex.assert_shape(out, (5, 3))
  assert out.dtype == jnp.float32
  chex.assert_trees_all_close(jax.jit(model.apply)(params, x), out, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(model.apply(params, x), out)                    # deterministic


def test_dropout_only_when_not_deterministic():
  model = MLP((32, 2), dropout_rate=0.5)
  x = jnp.ones((4, 3))
  params = model.init(jax.random.key(0), x)
  chex.assert_trees_all_close(model.apply(params, x), MLP((32, 2)).apply(params, x))   # eval: no dropout
  a = model.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
  b = model.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
  assert float(jnp.max(jnp.abs(a - b))) > 0.0


def test_empty_features_raise():
  with pytest.raises(ValueError, match="features"):
    MLP(()).init(jax.random.key(0), jnp.ones((1, 2)))


def test_learns_a_regression_target(adam_losses):
  model = MLP((32, 32, 1))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(-1, 1, (64, 2)), jnp.float32)
  y = jnp.sin(3.0 * x[:, :1]) * x[:, 1:]
  params = model.init(jax.random.key(0), x)
  loss_fn = lambda p: jnp.mean((model.apply(p, x) - y) ** 2)
  losses = adam_losses(loss_fn, params, lr=1e-2, steps=100)  # losses[k]: before update k
  assert float(losses[-1]) < 0.3 * float(losses[0])
