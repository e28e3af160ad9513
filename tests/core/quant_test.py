"""Fake quantization: closed-form INT4 grids, outlier handling, FP4 E1M2 value set, STE gradients, Dense wrappers."""

import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.core import quant
from jaxgen.nn import MLP


def _np_int4_weight(group):
  """The spec's formula for one group, in float64."""
  lo, hi = group.min(), group.max()
  scale = max(hi - lo, 1e-5) / 15
  zero = np.clip(-np.round(lo / scale), 0, 15)
  q = np.clip(np.round(group / scale) + zero, 0, 15)
  return (q - zero) * scale


def _np_symmetric(group, keep_topk, qmin):
  keep = np.zeros(group.shape, bool)
  keep[np.argsort(-np.abs(group), kind="stable")[:keep_topk]] = True
  a = max(np.max(np.abs(np.where(keep, 0.0, group))), 1e-6)
  q = np.clip(np.round(group * 7 / a), qmin, 7)
  return np.where(keep, group, q * a / 7), keep, a


def test_fp4_e1m2_value_set_from_bit_patterns():
  values = set()
  for sign, exponent, mantissa in itertools.product((0, 1), (0, 1), range(4)):
    # 1 sign, 1 exponent (bias 1), 2 mantissa bits; exponent 0 is subnormal.
    magnitude = (mantissa / 4) if exponent == 0 else (1 + mantissa / 4) * 2.0 ** (exponent - 1)
    values.add((-1) ** sign * magnitude + 0.0)
  np.testing.assert_array_equal(quant.FP4_E1M2_VALUES, np.array(sorted(values)))
  assert len(quant.FP4_E1M2_VALUES) == 15 and quant.FP4_E1M2_VALUES.max() == 1.75
  np.testing.assert_allclose(np.diff(quant.FP4_E1M2_VALUES), 0.25)      # E1M2 is a uniform grid


def test_fp4_rounds_every_non_outlier_to_the_nearest_e1m2_value():
  x = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
  x_hat = np.asarray(quant.fp4_e1m2_fake_quant(jnp.asarray(x), group_size=64, keep_topk=2))
  for row, row_hat in zip(x, x_hat):                     # each row is one group of 64
    keep = np.zeros(64, bool)
    keep[np.argsort(-np.abs(row))[:2]] = True
    np.testing.assert_array_equal(row_hat[keep], row[keep])
    a = np.max(np.abs(row[~keep]))
    scaled = row[~keep] / a * 1.75
    nearest = quant.FP4_E1M2_VALUES[np.argmin(np.abs(scaled[:, None] - quant.FP4_E1M2_VALUES[None, :]), axis=1)]
    np.testing.assert_allclose(row_hat[~keep], nearest * a / 1.75, rtol=1e-6, atol=1e-7)


def test_int4_weight_closed_form_grid():
  # One group spanning [-0.5, 1.0]: scale = 0.1, zero = 5, w_hat = (clip(round(w / 0.1) + 5, 0, 15) - 5) * 0.1.
  w = np.array([-0.5, -0.26, -0.04, 0.0, 0.04, 0.33, 0.5, 0.77, 0.96, 1.0])
  with jax.enable_x64(True):
    w_hat = np.asarray(quant.int4_weight_fake_quant(jnp.asarray(w), group_size=10))
  expected = (np.clip(np.round(w / 0.1) + 5, 0, 15) - 5) * 0.1
  np.testing.assert_allclose(w_hat, expected, rtol=0, atol=1e-15)
  np.testing.assert_allclose(w_hat, [-0.5, -0.3, -0.0, 0.0, 0.0, 0.3, 0.5, 0.8, 1.0, 1.0], atol=1e-15)


def test_int4_weight_groups_are_independent_and_have_at_most_16_levels():
  rng = np.random.default_rng(1)
  w = np.concatenate([0.01 * rng.normal(size=256), 10.0 * rng.normal(size=256), rng.normal(size=100)])
  with jax.enable_x64(True):
    w_hat = np.asarray(quant.int4_weight_fake_quant(jnp.asarray(w.reshape(4, 153)), group_size=256)).ravel()
  for lo in (0, 256, 512):                              # the last group has 100 entries only
    group = w[lo:lo + 256]
    np.testing.assert_allclose(w_hat[lo:lo + 256], _np_int4_weight(group), rtol=1e-12, atol=1e-15)
    assert len(np.unique(w_hat[lo:lo + 256])) <= 16
    scale = (group.max() - group.min()) / 15
    assert np.max(np.abs(w_hat[lo:lo + 256] - group)) <= scale / 2 + 1e-12


def test_int4_weight_reference_quirk_saturates_groups_away_from_zero():
  # zero point clipped to [0, 15]: a group in [10, 11] has scale 1/15, zero 0, and every entry becomes 15 * scale = 1.
  w = jnp.linspace(10.0, 11.0, 32)
  np.testing.assert_allclose(np.asarray(quant.int4_weight_fake_quant(w, group_size=32)), 1.0, rtol=1e-6)
  # A constant negative group (range floored at 1e-5, zero point clipped to 15) collapses to -15 * 1e-5 / 15.
  c = jnp.full((16,), -0.3)
  np.testing.assert_allclose(np.asarray(quant.int4_weight_fake_quant(c, group_size=16)), -1e-5, rtol=1e-6)
  # A group that straddles zero is reproduced to within scale / 2.
  g = jnp.linspace(-0.2, 0.1, 16)
  assert np.max(np.abs(np.asarray(quant.int4_weight_fake_quant(g, group_size=16) - g))) <= 0.3 / 30 + 1e-7


def test_int4_activation_keeps_the_top2_of_every_group_and_spans_tokens():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(3, 40))                           # groups of 32 span token rows; last group has 24 entries
  x[1, 5] = 50.0
  x[2, 30] = -80.0
  with jax.enable_x64(True):
    x_hat = np.asarray(quant.int4_act_fake_quant(jnp.asarray(x), group_size=32, keep_topk=2)).ravel()
  flat = x.ravel()
  for lo in range(0, 120, 32):
    group = flat[lo:lo + 32]
    expected, keep, a = _np_symmetric(group, 2, -8)
    np.testing.assert_allclose(x_hat[lo:lo + 32], expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(x_hat[lo:lo + 32][keep], group[keep])      # outliers exact
    q = np.round(x_hat[lo:lo + 32][~keep] * 7 / a)
    np.testing.assert_allclose(x_hat[lo:lo + 32][~keep], q * a / 7, rtol=1e-12)
    assert q.min() >= -8 and q.max() <= 7 and len(np.unique(q)) <= 16
  assert x_hat[45] == 50.0 and x_hat[110] == -80.0


def test_without_kept_outliers_a_spike_flattens_its_group():
  x = np.full(16, 0.01)
  x[3] = 100.0
  kept = np.asarray(quant.int4_act_fake_quant(jnp.asarray(x, jnp.float32), group_size=16, keep_topk=2))
  flattened = np.asarray(quant.int4_act_fake_quant(jnp.asarray(x, jnp.float32), group_size=16, keep_topk=0))
  np.testing.assert_allclose(kept, x, rtol=1e-6)          # rest is constant 0.01 -> exactly on the grid
  assert flattened[3] == pytest.approx(100.0) and np.all(flattened[np.arange(16) != 3] == 0.0)


@pytest.mark.parametrize("quantizer", [
    lambda x: quant.int4_weight_fake_quant(x, group_size=32),
    lambda x: quant.int4_act_fake_quant(x, group_size=32),
    lambda x: quant.fp4_e1m2_fake_quant(x, group_size=32),
])
def test_quantizers_are_idempotent_and_keep_shape_and_dtype(quantizer):
  x = jax.random.normal(jax.random.key(0), (4, 48))
  once = quantizer(x)
  assert once.shape == x.shape and once.dtype == x.dtype
  np.testing.assert_allclose(np.asarray(quantizer(once)), np.asarray(once), rtol=1e-5, atol=1e-6)
  assert quantizer(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("quantizer", [quant.int4_weight_fake_quant, quant.int4_act_fake_quant,
                                       quant.fp4_e1m2_fake_quant])
def test_straight_through_gradient_is_the_identity(quantizer):
  x = jax.random.normal(jax.random.key(1), (5, 70))
  c = jax.random.normal(jax.random.key(2), (5, 70))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(c * quantizer(x, group_size=64))))(x)
  np.testing.assert_array_equal(np.asarray(grad), np.asarray(c))


def test_quant_dense_is_a_drop_in_dense_with_ste_through_both_operands():
  x = jax.random.normal(jax.random.key(0), (2, 5, 96))  # [B, T, D]
  dense = nn.Dense(7)
  qdense = quant.QuantDense(7, mode="int4", group_size=32)
  params = jax.jit(dense.init)(jax.random.key(1), x)
  chex.assert_trees_all_equal_shapes_and_dtypes(params, jax.eval_shape(qdense.init, jax.random.key(1), x))
  kernel, bias = params["params"]["kernel"], params["params"]["bias"]

  @jax.jit
  def by_hand(x, kernel):
    x_hat = quant.int4_act_fake_quant(x, group_size=32)
    w_hat = quant.int4_weight_fake_quant(kernel.T, group_size=32).T    # grouped along `in` per output unit
    return x_hat, w_hat, x_hat @ w_hat + bias[None, None, :]

  x_hat, w_hat, expected = by_hand(x, kernel)
  y = jax.jit(qdense.apply)(params, x)
  np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)
  # Weight gradient from x_hat, input gradient through w_hat (straight-through both quantizers).
  dy = jax.random.normal(jax.random.key(2), y.shape)
  gp, gx = jax.jit(jax.grad(lambda p, x: jnp.sum(dy * qdense.apply(p, x)), argnums=(0, 1)))(params, x)
  np.testing.assert_allclose(np.asarray(gp["params"]["kernel"]),
                             np.asarray(jnp.einsum("btd,bto->do", x_hat, dy)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gx), np.asarray(dy @ w_hat.T), rtol=1e-5, atol=1e-5)
  # mode="none" is exactly nn.Dense.
  plain = quant.QuantDense(7, mode="none")
  np.testing.assert_array_equal(np.asarray(jax.jit(plain.apply)(params, x)),
                                np.asarray(jax.jit(dense.apply)(params, x)))


def test_fake_quantize_dense_wraps_the_dense_layers_of_any_model():
  model = MLP((64, 3))
  x = jax.random.normal(jax.random.key(0), (4, 40))
  params = jax.jit(model.init)(jax.random.key(1), x)
  apply = jax.jit(model.apply)
  plain = apply(params, x)

  @jax.jit
  def quantized(params, x):
    with quant.fake_quantize_dense("int4", group_size=32):
      return model.apply(params, x)

  @jax.jit
  def first_layer_only(params, x):
    with quant.fake_quantize_dense("int4", group_size=32, predicate=lambda m: m.name == "dense_0"):
      return model.apply(params, x)

  # The same computation written by hand.
  @jax.jit
  def by_hand(p, x):
    def q(x, layer):
      x_hat = quant.int4_act_fake_quant(x, group_size=32)
      w_hat = quant.int4_weight_fake_quant(p[layer]["kernel"].T, group_size=32).T
      return x_hat @ w_hat + p[layer]["bias"][None, :]
    h = nn.gelu(q(x, "dense_0"))
    return q(h, "dense_1"), h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"][None, :]

  both, first = by_hand(params["params"], x)
  np.testing.assert_allclose(np.asarray(quantized(params, x)), np.asarray(both), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(first_layer_only(params, x)), np.asarray(first), rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(quantized(params, x)), np.asarray(plain), atol=1e-4)
  # Outside the context nothing changes; init inside the context gives the usual params.
  np.testing.assert_array_equal(np.asarray(apply(params, x)), np.asarray(plain))
  with quant.fake_quantize_dense("fp4"):
    chex.assert_trees_all_equal(jax.jit(model.init)(jax.random.key(1), x), params)


@pytest.mark.parametrize("call, match", [
    (lambda: quant.int4_weight_fake_quant(jnp.ones(8), group_size=0), "group_size"),
    (lambda: quant.int4_act_fake_quant(jnp.ones(8), group_size=4, keep_topk=4), "keep_topk"),
    (lambda: quant.fp4_e1m2_fake_quant(jnp.ones(8), keep_topk=-1), "keep_topk"),
    (lambda: quant.fake_quant_dot_general("int8"), "mode"),
    (lambda: jax.eval_shape(quant.QuantDense(3, mode="int2").init, jax.random.key(0), jnp.ones((1, 4))), "mode"),
])
def test_invalid_arguments_raise_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_integer_input_raises_type_error():
  with pytest.raises(TypeError, match="w"):
    quant.int4_weight_fake_quant(jnp.arange(8))
