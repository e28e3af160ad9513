"""Tests for jaxgen.nn.cnn: conv4 feature sizes and normalisation modes, SmallCNN features and learning."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.nn import Conv4, SmallCNN, TransductiveBatchNorm

INIT_KEY = jax.random.key(0, impl="rbg")   # cheap to compile (see unet_test.py)


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("size,channels,expected", [(28, 1, 64), (84, 3, 1600), (32, 3, 256)])
def test_conv4_feature_sizes(size, channels, expected):
  x = jax.ShapeDtypeStruct((5, size, size, channels), jnp.float32)
  for norm in ("transductive_batch", "batch", "group", "none"):
    model = Conv4(norm=norm)
    variables = jax.eval_shape(model.init, INIT_KEY, x)
    assert jax.eval_shape(model.apply, variables, x).shape == (5, expected)
    if norm == "transductive_batch":   # bias-free convs + per-channel scale and bias
      count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables))
      assert count == 9 * channels * 64 + 3 * 9 * 64 * 64 + 4 * 2 * 64


def test_transductive_batch_norm_uses_batch_statistics_and_has_no_state():
  x = _images((6, 5, 5, 3)) * 3.0 + 1.0
  variables = TransductiveBatchNorm().init(INIT_KEY, x)
  assert set(variables) == {"params"}
  y = TransductiveBatchNorm().apply(variables, x)
  np.testing.assert_allclose(np.asarray(jnp.mean(y, axis=(0, 1, 2))), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(jnp.var(y, axis=(0, 1, 2))), 1.0, atol=1e-3)


def test_conv4_normalisation_modes():
  x = _images((4, 28, 28, 1))
  x_other = x.at[1:].set(_images((3, 28, 28, 1), seed=1))          # same sample 0, different batch mates
  # Transductive (default): pure apply_fn(params, x), features depend on the rest of the batch.
  model = Conv4()
  variables = jax.jit(model.init)(INIT_KEY, x)
  assert set(variables) == {"params"}
  f = jax.jit(model.apply)
  assert float(jnp.max(jnp.abs(f(variables, x)[0] - f(variables, x_other)[0]))) > 1e-4
  # GroupNorm: per sample.
  model_g = Conv4(norm="group")
  vg = jax.jit(model_g.init)(INIT_KEY, x)
  fg = jax.jit(model_g.apply)
  chex.assert_trees_all_close(fg(vg, x)[0], fg(vg, x_other)[0], atol=1e-5)
  # Ordinary BatchNorm: running averages in batch_stats, updated only with train=True and mutable.
  model_b = Conv4(norm="batch")
  vb = jax.jit(model_b.init)(INIT_KEY, x)
  assert set(vb) == {"params", "batch_stats"}
  out, updates = model_b.apply(vb, x, train=True, mutable=["batch_stats"])
  chex.assert_shape(out, (4, 64))
  mean0 = vb["batch_stats"]["norm_0"]["mean"]
  assert float(jnp.max(jnp.abs(updates["batch_stats"]["norm_0"]["mean"] - mean0))) > 0.0
  vb = {"params": vb["params"], **updates}
  fb = jax.jit(model_b.apply)                                        # train=False: running averages
  chex.assert_trees_all_close(fb(vb, x)[0], fb(vb, x_other)[0], atol=1e-5)


def test_conv4_meta_gradient_through_inner_loop():
  """MAML-style: jax.grad of a query loss through 2 inner SGD steps on the support loss is finite."""
  model = Conv4(features=8, num_blocks=2)                            # narrow and shallow: fast to compile
  xs, xq = _images((4, 12, 12, 1), 2), _images((4, 12, 12, 1), 3)
  ys = yq = jnp.array([0, 1, 0, 1])
  params = jax.jit(model.init)(INIT_KEY, xs)["params"]
  head = jnp.zeros((8 * 3 * 3, 2))

  def loss(theta, x, y):
    logits = model.apply({"params": theta["body"]}, x) @ theta["head"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def outer(theta):
    def step(th, _):
      g = jax.grad(loss)(th, xs, ys)
      return jax.tree.map(lambda w, gw: w - 0.1 * gw, th, g), None
    adapted, _ = jax.lax.scan(step, theta, None, length=2)
    return loss(adapted, xq, yq)

  grads = jax.jit(jax.grad(outer))({"body": params, "head": head})
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert float(jnp.max(jnp.abs(grads["body"]["conv_0"]["kernel"]))) > 0.0


def test_small_cnn_features_logits_and_jit():
  model = SmallCNN()
  x = _images((3, 28, 28, 1))
  params = jax.jit(model.init)(INIT_KEY, x)
  logits, feats = jax.jit(lambda p, x: model.apply(p, x, return_features=True))(params, x)
  chex.assert_shape(logits, (3, 10))
  chex.assert_shape(feats, (3, 128))
  assert bool(jnp.all(feats >= 0.0))                                 # post-ReLU features
  chex.assert_trees_all_close(model.apply(params, x, method="features"), feats, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(model.apply(params, x), logits, rtol=1e-5, atol=1e-5)   # no-jit == jit
  x16 = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)            # shapes16-sized images also work
  p16 = jax.eval_shape(model.init, INIT_KEY, x16)
  assert jax.eval_shape(lambda p, x: model.apply(p, x, method="features"), p16, x16).shape == (2, 128)


def test_small_cnn_learns_a_fixed_batch(adam_losses):
  model = SmallCNN(channels=(8, 16), feature_dim=32)
  x = _images((16, 16, 16, 1))
  y = jnp.arange(16) % 10
  params = jax.jit(model.init)(INIT_KEY, x)
  loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()
  losses = adam_losses(loss_fn, params, lr=3e-3, steps=20)  # losses[k]: before update k
  assert float(losses[-1]) < 0.5 * float(losses[0])


def test_invalid_inputs_raise():
  with pytest.raises(ValueError, match="x: height and width must be .* at least 16"):
    jax.eval_shape(Conv4().init, INIT_KEY, jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32))
  with pytest.raises(ValueError, match="x must be a"):
    jax.eval_shape(Conv4().init, INIT_KEY, jax.ShapeDtypeStruct((28, 28, 1), jnp.float32))
  with pytest.raises(ValueError, match="Conv4.norm"):
    jax.eval_shape(Conv4(norm="layer").init, INIT_KEY, jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
  with pytest.raises(ValueError, match="x must have a floating"):
    jax.eval_shape(SmallCNN().init, INIT_KEY, jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.uint8))
