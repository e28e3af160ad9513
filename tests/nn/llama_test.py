"""Tests for jaxgen.nn.llama: shapes, causality, the rotary relative-position property, trainability."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.nn import TinyLlama
from jaxgen.nn.llama import apply_rotary

VOCAB = 11


def _model(**kw):
  return TinyLlama(VOCAB, **{"d_model": 16, "num_layers": 2, "num_heads": 2, "mlp_dim": 24, **kw})


def _tokens(batch=2, length=8, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, VOCAB, jnp.int32)


@pytest.mark.parametrize("tie", [False, True])
def test_shapes_and_parameters(tie):
  model = _model(tie_embeddings=tie)
  tokens = _tokens()
  params = model.init(jax.random.key(1), tokens)
  logits = jax.jit(model.apply)(params, tokens)
  chex.assert_shape(logits, (2, 8, VOCAB))
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  block = params["params"]["layers_0"]
  for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
    assert set(block[name]) == {"kernel"}, name  # no biases
  assert ("lm_head" in params["params"]) == (not tie)


def test_default_mlp_dim_is_llama_rounding():
  params = jax.eval_shape(TinyLlama(VOCAB, d_model=48, num_layers=1, num_heads=4).init, jax.random.key(0), _tokens())
  chex.assert_shape(params["params"]["layers_0"]["gate_proj"]["kernel"], (48, 128))


def test_causal():
  model = _model()
  tokens = _tokens(length=10)
  params = model.init(jax.random.key(1), tokens)
  apply = jax.jit(model.apply)
  base = apply(params, tokens)
  j = 6
  changed = tokens.at[:, j].set((tokens[:, j] + 3) % VOCAB)
  out = apply(params, changed)
  np.testing.assert_allclose(out[:, :j], base[:, :j], atol=1e-6)
  assert np.max(np.abs(out[:, j:] - base[:, j:])) > 1e-4


def test_rotary_dot_products_depend_on_relative_position_only():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))

  def score(pq, pk):
    rq = apply_rotary(q, jnp.array([pq]))
    rk = apply_rotary(k, jnp.array([pk]))
    return float(jnp.sum(rq * rk))

  np.testing.assert_allclose(score(5, 2), score(13, 10), rtol=1e-5)
  np.testing.assert_allclose(score(0, 0), float(jnp.sum(q * k)), rtol=1e-5)
  assert abs(score(5, 2) - score(5, 4)) > 1e-4
  # rotation preserves norms
  np.testing.assert_allclose(jnp.linalg.norm(apply_rotary(q, jnp.array([7]))), jnp.linalg.norm(q), rtol=1e-5)


def test_shift_equivariance_of_attention_scores():
  # Without absolute positions, the logits of a sequence's suffix depend on the prefix only through attention:
  # a sequence made of one repeated token gives identical logits at every position.
  model = _model()
  tokens = jnp.full((1, 6), 3, jnp.int32)
  params = model.init(jax.random.key(2), tokens)
  logits = model.apply(params, tokens)
  np.testing.assert_allclose(logits[0, 1:], jnp.broadcast_to(logits[0, :1], (5, VOCAB)), atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_heads": 3}, "num_heads"),
    ({"d_model": 12, "num_heads": 4}, "even"),
    ({"mlp_dim": 0}, "mlp_dim"),
    ({"num_layers": 0}, "num_layers"),
    ({"max_len": 4}, "max_len"),
])
def test_validation_errors_name_the_argument(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _model(**kwargs).init(jax.random.key(0), _tokens())


def test_token_validation():
  model = _model()
  with pytest.raises(ValueError, match="tokens"):
    model.init(jax.random.key(0), jnp.zeros((8,), jnp.int32))
  with pytest.raises(TypeError, match="tokens"):
    model.init(jax.random.key(0), jnp.zeros((2, 8), jnp.float32))


def test_a_few_adam_steps_reduce_the_loss():
  model = _model(num_layers=1)
  tokens = _tokens(batch=4, length=12)
  params = model.init(jax.random.key(3), tokens)
  tx = optax.adam(1e-2)

  def loss_fn(p):
    logits = model.apply(p, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  @jax.jit
  def train(p):
    def step(carry, _):
      p, s = carry
      loss, g = jax.value_and_grad(loss_fn)(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss
    (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), None, length=15)
    return losses, loss_fn(p)

  losses, final = train(params)
  assert float(final) < 0.8 * float(losses[0]), (losses, final)
