"""Tests for jaxgen.nn.unet: shapes, conditioning (time, null class, masked cross-attention), jit, learning."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn import UNet, timestep_embedding

# A narrow two-level configuration (28 -> 14, attention at 14x14) keeps compilation fast on two CPU cores; the
# default three-level network (28 -> 14 -> 7) is checked shape-wise with jax.eval_shape (nothing compiled).
SMALL = dict(channels=(8, 16), num_heads=2, norm_groups=4, num_classes=3, context_dim=6, time_freq_dim=16)
B = 2


def _perturb(params, seed, scale=0.05):
  """Adds noise to every parameter (so zero-initialised gates/outputs no longer hide the conditioning)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(np.float32), params)


# Parameter initialisation compiles one threefry kernel per parameter tensor, which takes ~10 s on two busy
# cores for a UNet; an "rbg" key (XLA's RngBitGenerator) initialises the same structure in a fraction of that.
INIT_KEY = jax.random.key(0, impl="rbg")


@pytest.fixture(scope="module")
def env():
  model = UNet(**SMALL)                                  # zero_init_output=True, the training default
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((B, 28, 28, 1)), jnp.float32)
  t = jnp.array([0.2, 0.7])
  y = jnp.array([0, 2])
  ctx = jnp.asarray(rng.standard_normal((B, 3, 6)), jnp.float32)
  params0 = jax.jit(model.init)(INIT_KEY, x, t, y)      # no context at init: the cross-attention still exists
  params = _perturb(params0, 1)                         # non-zero output conv: conditioning becomes visible
  # Eager apply: after the first call every primitive is compiled and cached, so the many conditioning
  # variants below cost ~0.1 s each, where each distinct jit trace would cost a full compilation.
  return model, model.apply, params0, params, x, t, y, ctx


def test_zero_initial_velocity_and_shapes(env):
  model, apply, params0, _, x, t, y, ctx = env
  v = apply(params0, x, t, y)
  chex.assert_shape(v, x.shape)
  assert v.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(v), 0.0)    # zero_init_output=True: v == 0 at init
  # Other channel counts / sizes (shape-only evaluation, nothing is compiled).
  for shape in [(B, 16, 16, 3), (B, 32, 24, 2)]:
    xs = jax.ShapeDtypeStruct(shape, jnp.float32)
    shapes = jax.eval_shape(model.init, INIT_KEY, xs, t)
    out = jax.eval_shape(model.apply, shapes, xs, t, y, ctx)
    assert out.shape == shape and out.dtype == jnp.float32


def test_default_config_is_small_and_has_all_parameters():
  x, t = jnp.ones((1, 28, 28, 1)), jnp.ones((1,))
  shapes = jax.eval_shape(UNet(context_dim=32).init, jax.random.key(0), x, t)
  count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
  assert 100_000 < count < 1_500_000
  params = shapes["params"]
  assert "cross_attn" in params["mid_attn"] and "label_embed" in params
  assert params["label_embed"]["embedding"].shape == (11, 128)          # 10 classes + null
  assert UNet().null_class == 10


def test_null_class(env):
  model, apply, _, params, x, t, y, ctx = env
  v_none = apply(params, x, t, None)
  v_null = apply(params, x, t, jnp.full((B,), model.null_class))
  chex.assert_trees_all_close(v_none, v_null, atol=1e-6)
  v_real = apply(params, x, t, jnp.array([1, 1]))
  assert float(jnp.max(jnp.abs(v_real - v_null))) > 1e-3
  # The first sample's label changes only the first sample's output.
  v_mixed = apply(params, x, t, jnp.array([1, model.null_class]))
  chex.assert_trees_all_close(v_mixed[1], v_null[1], atol=1e-6)
  assert float(jnp.max(jnp.abs(v_mixed[0] - v_null[0]))) > 1e-3


def test_time_conditioning(env):
  _, apply, _, params, x, _, y, _ = env
  emb = timestep_embedding(jnp.linspace(0.0, 1.0, 101), 64)
  dists = jnp.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=-1) + jnp.eye(101)
  assert float(jnp.min(dists)) > 0.1                     # t spaced by 0.01 gives clearly distinct features
  v_a = apply(params, x, jnp.array([0.3, 0.3]), y)
  v_b = apply(params, x, jnp.array([0.31, 0.3]), y)
  assert float(jnp.max(jnp.abs(v_a[0] - v_b[0]))) > 1e-4
  chex.assert_trees_all_close(v_a[1], v_b[1], atol=1e-6)
  chex.assert_trees_all_close(apply(params, x, 0.3, y), v_a, atol=1e-6)      # a scalar t is broadcast


def test_cross_attention_context_and_mask(env):
  """Context changes the output; a fully masked context equals context=None exactly (per sample)."""
  _, apply, _, params, x, t, y, ctx = env
  v_plain = apply(params, x, t, y)
  v_ctx = apply(params, x, t, y, ctx)
  assert float(jnp.max(jnp.abs(v_ctx - v_plain))) > 1e-3
  all_off = jnp.zeros((B, 3), jnp.bool_)
  np.testing.assert_array_equal(np.asarray(apply(params, x, t, y, ctx, all_off)), np.asarray(v_plain))
  # Masking only sample 0: sample 0 is unconditional on the context, sample 1 keeps its context.
  row_off = jnp.array([[False, False, False], [True, True, True]])
  v_row = apply(params, x, t, y, ctx, row_off)
  np.testing.assert_array_equal(np.asarray(v_row[0]), np.asarray(v_plain[0]))
  chex.assert_trees_all_close(v_row[1], v_ctx[1], atol=1e-6)
  # A masked token is ignored: changing it leaves the output unchanged.
  mask = jnp.array([[True, True, False], [True, False, True]])
  ctx2 = ctx.at[0, 2].set(100.0).at[1, 1].set(-100.0)
  chex.assert_trees_all_close(apply(params, x, t, y, ctx, mask), apply(params, x, t, y, ctx2, mask), atol=1e-6)


def test_jit_matches_no_jit_and_bad_labels_under_jit_give_nan(env):
  model, apply, _, params, x, t, y, _ = env
  jitted = jax.jit(model.apply)
  v, state = apply(params, x, t, y, mutable=["intermediates"])
  chex.assert_trees_all_close(jitted(params, x, t, y), v, rtol=1e-5, atol=1e-5)
  assert set(state["intermediates"]) == {"down_1_attn_0", "mid_attn", "up_1_attn_0"}
  chex.assert_shape(state["intermediates"]["mid_attn"]["sa"][0], (B, 14 * 14, 16))
  # Label values cannot be checked inside jit: an out-of-range label gives NaNs in its own sample only.
  v = jitted(params, x, t, jnp.array([0, 7]))
  assert bool(jnp.all(jnp.isfinite(v[0]))) and bool(jnp.all(jnp.isnan(v[1])))


def test_a_few_adam_steps_reduce_the_flow_matching_loss(env, adam_losses):
  model, _, params, _, _, _, _, _ = env                  # zero-initialised output, as used for training
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


@pytest.mark.parametrize("args,kwargs,match", [
    (("x3d", "t"), {}, "x must be"),
    (("x29", "t"), {}, "x: height and width"),
    (("xint", "t"), {}, "x must have a floating"),
    (("x", "t2d"), {}, "t must be"),
    (("x", "t3"), {}, "t must be"),
    (("x", "t", "yfloat"), {}, "y .class labels. must have an integer"),
    (("x", "t", "y3"), {}, r"y .class labels. must have shape"),
    (("x", "t", "ybig"), {}, r"y .class labels. must lie in \[0, 3\]"),
    (("x", "t", "yneg"), {}, r"y .class labels. must lie"),
    (("x", "t", "y", "ctxdim"), {}, "context must have shape"),
    (("x", "t", "y", "ctx", "maskint"), {}, "context_mask must be boolean"),
    (("x", "t", "y", "ctx", "mask3"), {}, "context_mask must have shape"),
    (("x", "t", "y", None, "mask"), {}, "context_mask was given without a context"),
])
def test_invalid_inputs_raise(env, args, kwargs, match):
  model, _, _, params, x, t, y, ctx = env
  values = {
      "x": x, "x3d": x[0], "x29": jnp.ones((B, 29, 28, 1)), "xint": jnp.ones((B, 28, 28, 1), jnp.int32),
      "t": t, "t2d": t[:, None], "t3": jnp.ones((3,)),
      "y": y, "yfloat": y.astype(jnp.float32), "y3": jnp.array([0, 1, 2]), "ybig": jnp.array([0, 4]),
      "yneg": jnp.array([-1, 0]),
      "ctx": ctx, "ctxdim": jnp.ones((B, 3, 5)),
      "mask": jnp.ones((B, 3), jnp.bool_), "maskint": jnp.ones((B, 3), jnp.int32),
      "mask3": jnp.ones((B, 4), jnp.bool_),
  }
  with pytest.raises(ValueError, match=match):
    model.apply(params, *[None if a is None else values[a] for a in args], **kwargs)


def test_condition_not_configured_raises():
  model = UNet(channels=(8, 8), num_heads=2, norm_groups=4, num_classes=None)
  x = jnp.ones((1, 8, 8, 1))
  params = jax.eval_shape(model.init, jax.random.key(0), x, 0.1)     # validation runs before any compute
  with pytest.raises(ValueError, match="num_classes=None"):
    model.apply(params, x, 0.1, jnp.array([0]))
  with pytest.raises(ValueError, match="context_dim=None"):
    model.apply(params, x, 0.1, None, jnp.ones((1, 2, 4)))
  with pytest.raises(ValueError, match="attention_levels"):
    jax.eval_shape(UNet(channels=(8, 8), attention_levels=(2,)).init, jax.random.key(0), x, 0.1)
