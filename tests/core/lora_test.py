"""Tests for jaxgen.core.lora: selection, zero init, exact merge/unmerge, frozen-base gradients."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.core import lora
from jaxgen.nn import MLP

FEATURES = (16, 12, 3)


@functools.cache
def _base_float32():
  model = MLP(FEATURES)
  x = jax.random.normal(jax.random.key(0), (5, 6))
  params = jax.jit(model.init)(jax.random.key(1), x)
  return model, jax.device_get(params), np.asarray(x)


def _model_and_params(dtype=jnp.float32):
  """A small Flax MLP, its params and an input batch (built once; cast to `dtype`)."""
  model, params, x = _base_float32()
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
  return model, params, jnp.asarray(x, dtype)


def _randomize_b(lora_params, key, scale=0.3):
  """Gives every adapter a nonzero B (as after training)."""
  leaves, treedef = jax.tree.flatten(lora_params, is_leaf=lambda z: isinstance(z, lora.LoRAWeights))
  keys = iter(jax.random.split(key, len(leaves)))
  out = [w if w is None else lora.LoRAWeights(w.a, scale * jax.random.normal(next(keys), w.b.shape, w.b.dtype),
                                              w.alpha)
         for w in leaves]
  return treedef.unflatten(out)


def _factored_forward(params, lora_params, x):
  """The MLP forward pass written with lora_dot: x W + (alpha/r) (x A) B + bias per layer, GELU between."""
  p, lp = params["params"], lora_params["params"]
  h = x
  for i in range(len(FEATURES)):
    name = f"dense_{i}"
    h = lora.lora_dot(h, p[name]["kernel"], lp[name]["kernel"]) + p[name]["bias"][None, :]
    if i < len(FEATURES) - 1:
      h = nn.gelu(h)
  return h


def _selected_paths(lora_params):
  with_paths = jax.tree_util.tree_flatten_with_path(lora_params, is_leaf=lambda z: isinstance(z, lora.LoRAWeights)
                                                    or z is None)[0]
  return sorted(lora.path_to_str(p) for p, w in with_paths if isinstance(w, lora.LoRAWeights))


def test_default_selection_is_every_dense_kernel():
  _, params, _ = _model_and_params()
  lp = lora.lora_init(jax.random.key(2), params, rank=2)
  assert _selected_paths(lp) == [f"params/dense_{i}/kernel" for i in range(3)]
  assert lp["params"]["dense_0"]["bias"] is None
  w = lp["params"]["dense_1"]["kernel"]
  assert w.a.shape == (16, 2) and w.b.shape == (2, 12) and w.alpha == 2.0 and w.scale == 1.0
  # alpha is static metadata: only A and B are leaves.
  assert len(jax.tree.leaves(lp)) == 6


def test_regex_and_predicate_selection():
  _, params, _ = _model_and_params()
  lp = lora.lora_init(jax.random.key(2), params, rank=2, targets=r"dense_[12]")
  # The regex also matches the 1-D biases, but only 2-D leaves are adapted.
  assert _selected_paths(lp) == ["params/dense_1/kernel", "params/dense_2/kernel"]
  lp = lora.lora_init(jax.random.key(2), params, rank=2, targets=lambda path, leaf: path.endswith("0/kernel"))
  assert _selected_paths(lp) == ["params/dense_0/kernel"]
  with pytest.raises(ValueError, match="2-D kernels only"):
    lora.lora_init(jax.random.key(2), params, rank=2, targets=lambda path, leaf: "bias" in path)
  with pytest.raises(ValueError, match="selected no 2-D leaf"):
    lora.lora_init(jax.random.key(2), params, rank=2, targets="conv")


def test_zero_b_init_leaves_params_and_outputs_unchanged():
  model, params, x = _model_and_params()
  lp = lora.lora_init(jax.random.key(3), params, rank=4, alpha=8.0)
  chex.assert_trees_all_equal(lora.lora_apply(params, lp), params)
  outs = jax.jit(lambda p, a: (model.apply(lora.lora_apply(p, a), x), model.apply(p, x)))(params, lp)
  np.testing.assert_array_equal(*outs)


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_merged_params_match_factored_forward_and_unmerge_restores(dtype, rtol):
  with jax.enable_x64(dtype == jnp.float64):
    model, params, x = _model_and_params(dtype)
    lp = _randomize_b(lora.lora_init(jax.random.key(4), params, rank=3, alpha=6.0), jax.random.key(5))
    merged = lora.lora_merge(params, lp)
    chex.assert_trees_all_equal_shapes_and_dtypes(merged, params)
    out_merged, out_base, out_factored = jax.jit(
        lambda p, m, a: (model.apply(m, x), model.apply(p, x), _factored_forward(p, a, x)))(params, merged, lp)
    assert not np.allclose(out_merged, out_base, rtol=1e-3)   # the adapter does something
    np.testing.assert_allclose(out_merged, out_factored, rtol=rtol, atol=rtol)
    # The kernel update is exactly (alpha / r) A @ B.
    w = lp["params"]["dense_0"]["kernel"]
    np.testing.assert_allclose(merged["params"]["dense_0"]["kernel"] - params["params"]["dense_0"]["kernel"],
                               2.0 * w.a @ w.b, rtol=rtol, atol=rtol)
    chex.assert_trees_all_close(lora.lora_unmerge(merged, lp), params, rtol=0, atol=10 * rtol)


def test_gradients_flow_only_into_the_adapter():
  model, params, x = _model_and_params()
  y = jnp.ones((5, 3))
  lp = lora.lora_init(jax.random.key(6), params, rank=2)

  def loss(base, adapter):
    out = model.apply(lora.lora_apply(jax.lax.stop_gradient(base), adapter), x)
    return jnp.mean((out - y) ** 2)

  g_base, g_lora = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, lp)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_base))
  chex.assert_trees_all_equal_structs(g_lora, lp)
  for w in jax.tree.leaves(g_lora, is_leaf=lambda z: isinstance(z, lora.LoRAWeights)):
    # At B = 0 the gradient reaches B only: dL/dA = scale * dL/dW B^T = 0.
    assert float(jnp.abs(w.a).max()) == 0.0 and float(jnp.abs(w.b).max()) > 0.0


def test_training_the_adapter_fits_a_low_rank_change_and_keeps_the_base():
  # Linear regression whose target differs from the base kernel by a rank-1 matrix.
  kw, ku, kv, kx = jax.random.split(jax.random.key(7), 4)
  params = {"dense": {"kernel": jax.random.normal(kw, (6, 4)), "bias": jnp.zeros(4)}}
  w_true = params["dense"]["kernel"] + jnp.outer(jax.random.normal(ku, (6,)), jax.random.normal(kv, (4,)))
  x = jax.random.normal(kx, (64, 6))
  y = x @ w_true
  base_before = jax.tree.map(jnp.copy, params)
  lp = lora.lora_init(jax.random.key(8), params, rank=1)
  tx = optax.adam(0.05)

  def loss(adapter):
    p = lora.lora_apply(params, adapter)["dense"]
    return jnp.mean((x @ p["kernel"] + p["bias"][None, :] - y) ** 2)

  def step(carry, _):
    adapter, state = carry
    value, grads = jax.value_and_grad(loss)(adapter)
    updates, state = tx.update(grads, state, adapter)
    return (optax.apply_updates(adapter, updates), state), value

  (lp_trained, _), losses = jax.jit(lambda a: jax.lax.scan(step, (a, tx.init(a)), None, length=400))(lp)
  assert float(losses[0]) > 1.0 and float(loss(lp_trained)) < 1e-3 * float(losses[0])
  chex.assert_trees_all_equal(params, base_before)
  assert lp_trained["dense"]["bias"] is None


def test_initializers_and_dtypes():
  params = {"k": jnp.zeros((400, 300), jnp.bfloat16)}
  lp = lora.lora_init(jax.random.key(9), params, rank=8, targets="k")
  w = lp["k"]
  assert w.a.dtype == w.b.dtype == jnp.bfloat16
  np.testing.assert_array_equal(w.b, 0)
  np.testing.assert_allclose(float(jnp.std(w.a.astype(jnp.float32))), 1 / np.sqrt(400), rtol=0.05)
  w = lora.lora_init(jax.random.key(9), params, rank=8, targets="k", a_init="kaiming_uniform",
                     dtype=jnp.float32)["k"]
  assert w.a.dtype == jnp.float32
  assert float(jnp.abs(w.a).max()) <= 1 / np.sqrt(400)
  np.testing.assert_allclose(float(jnp.std(w.a)), 1 / np.sqrt(3 * 400), rtol=0.05)
  custom = lora.lora_init(jax.random.key(9), params, rank=2, targets="k",
                          a_init=lambda key, shape, dtype: jnp.ones(shape, dtype))["k"]
  np.testing.assert_array_equal(custom.a, 1)


def test_jit_over_adapter_and_validation():
  model, params, x = _model_and_params()
  lp = lora.lora_init(jax.random.key(10), params, rank=2, alpha=1.0)
  out = jax.jit(lambda p, a: model.apply(lora.lora_apply(p, a), x))(params, lp)
  chex.assert_shape(out, (5, 3))
  with pytest.raises(ValueError, match="`rank`"):
    lora.lora_init(jax.random.key(0), params, rank=0)
  # A rank above min(d_in, d_out) (dense_2 is 12 x 3) is allowed: one rank for every layer.
  assert lora.lora_init(jax.random.key(0), params, rank=7)["params"]["dense_2"]["kernel"].b.shape == (7, 3)
  with pytest.raises(ValueError, match="`a_init`"):
    lora.lora_init(jax.random.key(0), params, rank=2, a_init="orthogonal")
  with pytest.raises(ValueError, match="`targets`"):
    lora.lora_init(jax.random.key(0), params, rank=2, targets=3)
  with pytest.raises(ValueError, match="`lora_params`"):
    lora.lora_apply({"other": params["params"]}, lp)
  other = lora.lora_init(jax.random.key(0), {"params": {"dense_0": {"kernel": jnp.zeros((6, 7)), "bias": 0.0},
                                                       "dense_1": {"kernel": jnp.zeros((7, 12)), "bias": 0.0},
                                                       "dense_2": {"kernel": jnp.zeros((12, 3)), "bias": 0.0}}},
                         rank=2)
  with pytest.raises(ValueError, match="do not fit"):
    lora.lora_apply(params, other)
