"""Every training path gives the same numbers on 8 simulated devices (data-parallel mesh) as on 1 device.

Each path is the loss + model + optimizer combination an experiment trains with, run for a few steps through
``core.train.make_train_step`` once plainly and once with ``mesh=make_data_mesh(8)`` (batch split over devices,
state replicated). float32 summation order is the only allowed difference (losses rtol 1e-5; parameters see
the tolerance note in the test). Areas with their own
training loops test the same property next to them (tests/core/train_test.py: core.fit; tests/optim: SPAM and
Stable-SPAM under shard_map).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen import nn, optim
from jaxgen.core import flow, parallel, quant, train

STEPS = 3


def _flow_matching_path():
  module = nn.FlowMLP(num_classes=10, width=32, depth=2)
  x = jax.random.normal(jax.random.key(0), (16, 28, 28, 1))
  y = jnp.arange(16) % 10
  params = module.init(jax.random.key(1), x[:1], jnp.zeros((1,)), y[:1])

  def loss_fn(params, batch, key):
    labels = flow.drop_labels(jax.random.fold_in(key, 1), batch["y"], rate=0.1, null_label=10)
    return flow.flow_matching_loss(lambda p, xt, t, c: module.apply(p, xt, t, c), params, batch["x"], key,
                                   cond=labels)

  return loss_fn, params, optax.adamw(1e-3), {"x": x, "y": y}


def _llama_path(optimizer, precision):
  model = nn.TinyLlama(20, d_model=32, num_layers=1, num_heads=4, mlp_dim=64, max_len=16)
  tokens = jax.random.randint(jax.random.key(2), (16, 17), 0, 20)
  params = model.init(jax.random.key(3), tokens[:1, :-1])

  def loss_fn(params, batch, key):
    del key
    with quant.fake_quantize_dense(precision, group_size=32, predicate=lambda m: m.name != "lm_head"):
      logits = model.apply(params, batch[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

  return loss_fn, params, optimizer, tokens


PATHS = {
    "flow_matching/FlowMLP/adamw": _flow_matching_path,
    "tiny_llama/stable_spam/int4": lambda: _llama_path(optim.stable_spam(3e-3, reset_interval=2), "int4"),
    "tiny_llama/spam/fp4": lambda: _llama_path(optim.spam(3e-3, reset_interval=2, clip_delay=1), "fp4"),
    "tiny_llama/adam/fp32": lambda: _llama_path(optax.adam(3e-3), "none"),
}


def _train(loss_fn, params, optimizer, batch, mesh):
  state = train.init_train_state(params, optimizer, jax.random.key(7))
  step = train.make_train_step(loss_fn, optimizer, mesh=mesh, donate=False)
  if mesh is not None:
    state, batch = parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh)
  losses = []
  for _ in range(STEPS):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return jax.device_get(state.params), losses


@pytest.mark.parametrize("name", sorted(PATHS))
def test_eight_devices_equal_one(name, fuzz_record):
  assert jax.device_count() >= 8, "tests run with 8 simulated CPU devices (tests/conftest.py)"
  loss_fn, params, optimizer, batch = PATHS[name]()
  p1, l1 = _train(loss_fn, params, optimizer, batch, None)
  p8, l8 = _train(loss_fn, params, optimizer, batch, parallel.make_data_mesh(8))
  # Fake-quantized forward passes are step functions of their inputs: a one-ulp difference in a per-device matmul
  # can move a value across a 4-bit rounding boundary, so those paths get a looser loss tolerance.
  np.testing.assert_allclose(l8, l1, rtol=1e-5 if name.endswith(("fp32", "adamw")) else 2e-4)
  # Adam-type updates are ~lr * sign(g) where g ~ 0, so a float32 summation-order difference in such a gradient
  # entry moves the parameter by up to a fraction of one step: atol = 1% of the largest total movement (lr * STEPS).
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=0.01 * 3e-3 * STEPS)
  assert not np.allclose(jax.tree.leaves(p1)[0], jax.tree.leaves(params)[0])   # it trained
