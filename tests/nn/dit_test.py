"""Tests for jaxgen.nn.dit: shapes, adaLN-Zero, patch layout, conditioning, masked cross-attention, learning."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn import DiT
from jaxgen.nn.dit import sincos_pos_embed_2d

SMALL = dict(patch_size=4, hidden_size=32, depth=2, num_heads=2, num_classes=3, context_dim=6, time_freq_dim=16)
B = 2
# Parameter initialisation compiles one threefry kernel per parameter tensor; an "rbg" key is much cheaper.
INIT_KEY = jax.random.key(0, impl="rbg")


def _perturb(params, seed, scale=0.05):
  """Adds noise to every parameter (so zero-initialised gates/outputs no longer hide the conditioning)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(np.float32), params)


@pytest.fixture(scope="module")
def env():
  model = DiT(**SMALL)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((B, 28, 28, 1)), jnp.float32)
  t = jnp.array([0.2, 0.7])
  y = jnp.array([0, 2])
  ctx = jnp.asarray(rng.standard_normal((B, 3, 6)), jnp.float32)
  params0 = jax.jit(model.init)(INIT_KEY, x, t, y)      # no context at init: the cross-attention still exists
  params = _perturb(params0, 1)
  # Eager apply: after the first call every primitive is compiled and cached, so the many conditioning
  # variants below cost ~0.1 s each, where each distinct jit trace would cost a full compilation.
  return model, model.apply, params0, params, x, t, y, ctx


def test_zero_initial_velocity_and_shapes(env):
  model, apply, params0, _, x, t, y, ctx = env
  v = apply(params0, x, t, y)
  chex.assert_shape(v, x.shape)
  assert v.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(v), 0.0)
  for shape, patch in [((B, 16, 16, 3), 4), ((B, 28, 28, 1), 2), ((B, 8, 12, 2), 2)]:
    m = DiT(**{**SMALL, "patch_size": patch})
    xs = jax.ShapeDtypeStruct(shape, jnp.float32)
    out = jax.eval_shape(m.apply, jax.eval_shape(m.init, INIT_KEY, xs, t), xs, t, y, ctx)
    assert out.shape == shape and out.dtype == jnp.float32


def test_default_config_param_count():
  x, t = jnp.ones((1, 28, 28, 1)), jnp.ones((1,))
  shapes = jax.eval_shape(DiT().init, jax.random.key(0), x, t)
  count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
  assert 500_000 < count < 2_000_000
  assert shapes["params"]["label_embed"]["embedding"].shape == (11, 128)
  assert DiT().null_class == 10


def test_adaln_zero_blocks_start_as_identity_and_patch_layout(env):
  """With zero-initialised modulations the blocks are the identity, so (a) time and class have no effect
  and (b) no information moves between patches: changing one patch of x changes only that patch of v."""
  _, apply, params0, _, x, t, y, _ = env
  params = jax.tree.map(lambda a: a, params0)
  kernel = params["params"]["final_proj"]["kernel"]
  params["params"]["final_proj"]["kernel"] = kernel + 0.1 * jnp.asarray(
      np.random.default_rng(2).standard_normal(kernel.shape), jnp.float32)
  v = apply(params, x, t, y)
  chex.assert_trees_all_close(apply(params, x, jnp.array([0.9, 0.1]), jnp.array([3, 3])), v, atol=1e-6)
  x2 = x.at[:, 4:8, 8:12, :].add(1.0)                      # patch (row 1, column 2) of the 4x4 grid
  changed = np.asarray(jnp.any(jnp.abs(apply(params, x2, t, y) - v) > 1e-6, axis=(0, 3)))   # [28, 28]
  expected = np.zeros((28, 28), bool)
  expected[4:8, 8:12] = True
  np.testing.assert_array_equal(changed, expected)


def test_null_class(env):
  model, apply, _, params, x, t, _, _ = env
  v_none = apply(params, x, t, None)
  v_null = apply(params, x, t, jnp.full((B,), model.null_class))
  chex.assert_trees_all_close(v_none, v_null, atol=1e-6)
  v_mixed = apply(params, x, t, jnp.array([1, model.null_class]))
  chex.assert_trees_all_close(v_mixed[1], v_null[1], atol=1e-6)
  assert float(jnp.max(jnp.abs(v_mixed[0] - v_null[0]))) > 1e-3


def test_time_conditioning(env):
  _, apply, _, params, x, _, y, _ = env
  v_a = apply(params, x, jnp.array([0.3, 0.3]), y)
  v_b = apply(params, x, jnp.array([0.31, 0.3]), y)
  assert float(jnp.max(jnp.abs(v_a[0] - v_b[0]))) > 1e-4
  chex.assert_trees_all_close(v_a[1], v_b[1], atol=1e-6)
  chex.assert_trees_all_close(apply(params, x, 0.3, y), v_a, atol=1e-6)      # scalar t is broadcast


def test_cross_attention_context_and_mask(env):
  """Context changes the output; a fully masked context equals context=None exactly (per sample)."""
  _, apply, _, params, x, t, y, ctx = env
  v_plain = apply(params, x, t, y)
  v_ctx = apply(params, x, t, y, ctx)
  assert float(jnp.max(jnp.abs(v_ctx - v_plain))) > 1e-3
  np.testing.assert_array_equal(np.asarray(apply(params, x, t, y, ctx, jnp.zeros((B, 3), jnp.bool_))),
                                np.asarray(v_plain))
  mask = jnp.array([[False, False, False], [True, False, True]])
  v_mask = apply(params, x, t, y, ctx, mask)
  np.testing.assert_array_equal(np.asarray(v_mask[0]), np.asarray(v_plain[0]))
  ctx2 = ctx.at[1, 1].set(100.0)                                          # a masked token is ignored
  chex.assert_trees_all_close(apply(params, x, t, y, ctx2, mask), v_mask, atol=1e-6)


def test_jit_matches_no_jit_and_intermediates(env):
  model, apply, _, params, x, t, y, _ = env
  v, state = apply(params, x, t, y, mutable=["intermediates"])
  chex.assert_trees_all_close(v, jax.jit(model.apply)(params, x, t, y), rtol=1e-5, atol=1e-5)
  feats = state["intermediates"]
  assert set(feats) == {"block_0", "block_1"} and set(feats["block_0"]) == {"sa", "ff"}
  chex.assert_shape(feats["block_0"]["sa"][0], (B, 49, 32))


def test_a_few_adam_steps_reduce_the_flow_matching_loss(env, adam_losses):
  model, _, params, _, _, _, _, _ = env
  rng = np.random.default_rng(3)
  x1 = jnp.asarray(np.tanh(rng.standard_normal((B, 28, 28, 1))), jnp.float32)
  x0 = jnp.asarray(rng.standard_normal((B, 28, 28, 1)), jnp.float32)
  t = jnp.array([0.3, 0.8])
  y = jnp.array([1, 3])
  tb = t[:, None, None, None]
  xt = tb * x1 + (1.0 - tb) * x0
  loss_fn = lambda p: jnp.mean((model.apply(p, xt, t, y) - (x1 - x0)) ** 2)
  losses = adam_losses(loss_fn, params, lr=3e-3, steps=15)  # losses[k]: before update k
  assert float(losses[-1]) < 0.8 * float(losses[0])


def test_sincos_position_embedding():
  emb = sincos_pos_embed_2d(16, 3, 5)
  assert emb.shape == (15, 16) and emb.dtype == np.float32
  dists = np.linalg.norm(emb[:, None] - emb[None], axis=-1) + np.eye(15)
  assert dists.min() > 0.1
  np.testing.assert_allclose(emb[0], np.tile(np.repeat([0.0, 1.0], 4), 2), atol=1e-7)   # position (0, 0)
  with pytest.raises(ValueError, match="divisible by 4"):
    sincos_pos_embed_2d(6, 2, 2)


@pytest.mark.parametrize("args,match", [
    (("x3d", "t"), "x must be"),
    (("x30", "t"), "x: height and width must be multiples of 4"),
    (("x", "t2d"), "t must be"),
    (("x", "t", "yfloat"), "y .class labels. must have an integer"),
    (("x", "t", "ybig"), r"y .class labels. must lie in \[0, 3\]"),
    (("x", "t", "y", "ctxdim"), "context must have shape"),
    (("x", "t", "y", "ctx", "maskint"), "context_mask must be boolean"),
])
def test_invalid_inputs_raise(env, args, match):
  model, _, _, params, x, t, y, ctx = env
  values = {"x": x, "x3d": x[0], "x30": jnp.ones((B, 30, 30, 1)), "t": t, "t2d": t[:, None], "y": y,
            "yfloat": y.astype(jnp.float32), "ybig": jnp.array([0, 4]), "ctx": ctx, "ctxdim": jnp.ones((B, 3, 5)),
            "maskint": jnp.ones((B, 3), jnp.int32)}
  with pytest.raises(ValueError, match=match):
    model.apply(params, *[values[a] for a in args])
  with pytest.raises(ValueError, match="hidden_size"):
    jax.eval_shape(DiT(hidden_size=30, num_heads=3).init, INIT_KEY, x, t)
