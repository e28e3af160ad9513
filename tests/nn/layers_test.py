"""Tests for jaxgen.nn.layers: time embedding, masked attention, label embedding with a null class."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn import Attention, LabelEmbedding, dot_product_attention, timestep_embedding
from jaxgen.nn.layers import _check_time


def _naive_attention(q, k, v, mask):
  out = np.zeros(q.shape[:3] + (v.shape[-1],))
  for b in range(q.shape[0]):
    for h in range(q.shape[2]):
      logits = q[b, :, h] @ k[b, :, h].T / np.sqrt(q.shape[-1])             # [Lq, Lk]
      keep = mask[b]
      if not keep.any():
        continue
      w = np.exp(logits[:, keep] - logits[:, keep].max(-1, keepdims=True))
      out[b, :, h] = (w / w.sum(-1, keepdims=True)) @ v[b, keep, h]
  return out


def test_timestep_embedding_values():
  emb = timestep_embedding(jnp.array([0.0, 0.5, 1.0]), 8)
  chex.assert_shape(emb, (3, 8))
  np.testing.assert_allclose(np.asarray(emb[0]), [1, 1, 1, 1, 0, 0, 0, 0], atol=1e-7)   # cos 0, sin 0
  # First frequency is 1 (times time_scale=1000): features are cos/sin(1000 t).
  np.testing.assert_allclose(np.asarray(emb[1, [0, 4]]), [np.cos(500.0), np.sin(500.0)], rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="even"):
    timestep_embedding(jnp.zeros((2,)), 7)
  with pytest.raises(ValueError, match=r"t must have shape \[B\]"):
    timestep_embedding(jnp.zeros((2, 1)), 8)


def test_check_time_broadcasts_scalars_explicitly():
  np.testing.assert_array_equal(np.asarray(_check_time(0.25, 3)), [0.25, 0.25, 0.25])
  with pytest.raises(ValueError, match="t must be a scalar or have shape"):
    _check_time(jnp.zeros((1,)), 3)
  with pytest.raises(ValueError, match="t must be a real"):
    _check_time(jnp.zeros((3,), jnp.bool_), 3)


def test_dot_product_attention_matches_naive_with_masks():
  rng = np.random.default_rng(0)
  q, k, v = (rng.standard_normal(s) for s in [(3, 4, 2, 5), (3, 6, 2, 5), (3, 6, 2, 7)])
  mask = np.array([[1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]], bool)
  out = dot_product_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(out), _naive_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out[2]), 0.0)                     # fully masked row: exact zero
  no_mask = dot_product_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)))
  chex.assert_trees_all_close(no_mask[0], out[0], atol=1e-6)
  # Gradients are finite even for the fully masked row.
  g = jax.grad(lambda kk: jnp.sum(dot_product_attention(jnp.asarray(q, jnp.float32), kk,
                                                        jnp.asarray(v, jnp.float32), jnp.asarray(mask))))(
      jnp.asarray(k, jnp.float32))
  assert bool(jnp.all(jnp.isfinite(g)))


def test_attention_module_cross_masking_and_zero_init():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32)
  ctx = jnp.asarray(rng.standard_normal((2, 3, 4)), jnp.float32)
  attn = Attention(num_heads=2)
  params = attn.init(jax.random.key(0), x, ctx)
  assert params["params"]["key"]["kernel"].shape == (4, 2, 4)
  out = attn.apply(params, x, ctx, jnp.array([[True, False, True], [False, False, False]]))
  chex.assert_shape(out, (2, 5, 8))
  np.testing.assert_array_equal(np.asarray(out[1]), 0.0)                     # bias of the out proj included
  assert float(jnp.max(jnp.abs(out[0]))) > 0.0
  chex.assert_shape(attn.apply(attn.init(jax.random.key(0), x), x), (2, 5, 8))   # self-attention
  zero = Attention(num_heads=2, zero_init_out=True)
  np.testing.assert_array_equal(np.asarray(zero.apply(zero.init(jax.random.key(0), x), x)), 0.0)
  with pytest.raises(ValueError, match="divisible by num_heads"):
    Attention(num_heads=3).init(jax.random.key(0), x)


def test_label_embedding_null_row_and_out_of_range():
  emb = LabelEmbedding(num_classes=3, features=4)
  params = emb.init(jax.random.key(0), jnp.array([0]))
  assert params["params"]["embedding"].shape == (4, 4)
  out = jax.jit(emb.apply)(params, jnp.array([0, 3, 4, -1]))
  chex.assert_trees_all_close(out[1], params["params"]["embedding"][3])      # null class row
  assert bool(jnp.all(jnp.isnan(out[2:])))                                   # no silent wrap or clip
