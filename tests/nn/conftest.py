"""Shared helper for the network tests: a short Adam run on a fixed batch, in one jitted lax.scan."""

import jax
import optax
import pytest


def _adam_losses(loss_fn, params, *, lr: float, steps: int) -> jax.Array:
  """``losses[k]`` = ``loss_fn`` before Adam update ``k`` (``steps`` updates at learning rate ``lr``)."""
  opt = optax.adam(lr)

  @jax.jit
  def train(params):
    def step(carry, _):
      p, s = carry
      loss, g = jax.value_and_grad(loss_fn)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss

    _, losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return losses

  losses = train(params)
  assert losses.shape == (steps,)
  return losses


@pytest.fixture
def adam_losses():
  """``adam_losses(loss_fn, params, lr=..., steps=...) -> losses [steps]``."""
  return _adam_losses
