r"""Differentiable inner-adaptation loops (``lax.scan``) for bilevel / meta-learning objectives.

The inner loop adapts parameters :math:`\theta_0` for :math:`K` steps on an inner loss
:math:`\ell_{in}`; the outer (meta) objective evaluates the adapted parameters on an outer loss:

.. math::  \theta_{k+1} = \theta_k + U_k(g_k),\quad g_k = \nabla_\theta \ell_{in}(\theta_k; b_k),\qquad
           F(\theta_0) = \ell_{out}(\theta_K; b_{out}),

with :math:`U_k(g) = -\alpha g` for SGD or the update of an optax ``GradientTransformation`` (its state is
carried through the scan). ``jax.grad(F)`` differentiates through the unrolled loop. Three gradient modes:

* ``"full"`` - exact: :math:`\nabla F = \prod_k (\partial\theta_{k+1}/\partial\theta_k)^\top
  \nabla\ell_{out}(\theta_K)`, with second-order terms :math:`I - \alpha\nabla^2\ell_{in}(\theta_k)` for SGD
  (MAML, Finn et al. 2017).
* ``"first_order"`` - ``stop_gradient`` on every inner gradient :math:`g_k` (FOMAML): each step's Jacobian
  becomes the identity, so :math:`\nabla_{\theta_0} F = \nabla\ell_{out}(\theta_K)`, the outer gradient
  at the adapted point applied to the starting point. Gradients with respect to quantities the update uses
  *besides* :math:`g_k` (e.g. a traced learning rate) keep their first-order part:
  :math:`\partial F/\partial\alpha = -\sum_k g_k^\top \nabla\ell_{out}(\theta_K)` for SGD.
* ``"truncated"`` with ``truncation = T`` - the first :math:`K - T` steps are first-order (gradients stop
  through their inner gradients), the last :math:`T` steps are exact. ``T = K`` equals ``"full"`` and
  ``T = 0`` equals ``"first_order"``; this is the usual truncated backpropagation for long inner loops
  (memory and compute of the backward pass scale with :math:`T`).

The forward value (the adapted parameters) is identical in all three modes.

Conventions: ``loss_fn(params, batch)`` (or ``loss_fn(params, batch, key)`` when a ``key`` is given)
returns a scalar. Parameters the inner loop must *not* update (e.g. IMMA's fixed weights) are closed over
by ``loss_fn``: ``lambda p, b: loss(theta_fixed, p, b)``; gradients with respect to ``theta_fixed`` still
flow through the loop. If the inner optimizer is an optax adaptive method set ``eps_root > 0`` (e.g.
``optax.adam(lr, eps_root=1e-8)``): :math:`\sqrt{\cdot}` at 0 has an infinite derivative.
``lax.while_loop`` is never used (it cannot be reverse-differentiated).

References:
  Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks", ICML 2017,
  arXiv 1703.03400 (MAML, and the first-order approximation FOMAML).
  Shaban, Cheng, Hatch, Boots, "Truncated Back-propagation for Bilevel Optimization", AISTATS 2019,
  arXiv 1810.10667.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
LossFn = Callable[..., jax.Array]     # loss_fn(params, batch[, key]) -> scalar

MODES = ("full", "truncated", "first_order")

__all__ = ["MODES", "inner_adapt", "meta_value_and_grad", "outer_objective"]


def _sgd_update(lr):
  def update(grads, opt_state, params):
    new = jax.tree.map(lambda p, g: (p - lr * g).astype(jnp.result_type(p)), params, grads)
    return new, opt_state

  return update


def _optax_update(optimizer: optax.GradientTransformation):
  def update(grads, opt_state, params):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return update


def inner_adapt(
    params: PyTree,
    batch: PyTree,
    loss_fn: LossFn,
    *,
    num_steps: int,
    lr: float | jax.Array | None = None,
    optimizer: optax.GradientTransformation | None = None,
    mode: str = "full",
    truncation: int | None = None,
    key: jax.Array | None = None,
    batch_per_step: bool = False,
    checkpoint: bool = False,
    return_losses: bool = False,
) -> PyTree | tuple[PyTree, jax.Array]:
  r"""Runs ``num_steps`` differentiable inner updates of ``params`` on ``loss_fn`` inside ``lax.scan``.

  Args:
    params: starting parameters :math:`\theta_0` (any pytree of floating arrays).
    batch: the inner batch :math:`b`, reused at every step; with ``batch_per_step=True`` a pytree whose
      leaves have a leading axis of length ``num_steps`` (step :math:`k` uses ``batch[k]``).
    loss_fn: ``loss_fn(params, batch) -> scalar`` (``loss_fn(params, batch, key)`` when ``key`` is given).
    num_steps: number of inner steps :math:`K` (static Python int >= 1).
    lr: SGD step size :math:`\alpha` (a Python float or a traced scalar, so an outer loop may learn it).
      Exactly one of ``lr`` and ``optimizer`` must be given.
    optimizer: an optax ``GradientTransformation`` used instead of SGD; its state is initialised from
      ``params`` and carried through the scan (adaptive methods: use ``eps_root > 0``).
    mode: ``"full"``, ``"truncated"`` or ``"first_order"`` (see the module docstring).
    truncation: number :math:`T` of final exact steps, ``0 <= T <= num_steps``; required for (and only
      allowed with) ``mode="truncated"``.
    key: optional PRNG key; split into ``num_steps`` sub-keys, step :math:`k` calls
      ``loss_fn(params, batch_k, key_k)``.
    batch_per_step: whether ``batch`` holds one batch per step along its leading axis.
    checkpoint: wrap the scan body in :func:`jax.checkpoint` (recompute instead of storing activations).
    return_losses: also return the ``[num_steps]`` inner losses (each before its update).

  Returns:
    The adapted parameters :math:`\theta_K` (same tree and dtypes as ``params``), and the inner losses if
    ``return_losses``.
  """
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"`num_steps` must be a Python int >= 1, got {num_steps!r}")
  num_steps = int(num_steps)
  if (lr is None) == (optimizer is None):
    raise ValueError("exactly one of `lr` (SGD) and `optimizer` (optax) must be given")
  if mode not in MODES:
    raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
  if mode == "truncated":
    if isinstance(truncation, bool) or not isinstance(truncation, (int, np.integer)) or not (
        0 <= truncation <= num_steps):
      raise ValueError(f"`truncation` must be a Python int in [0, num_steps={num_steps}] for "
                       f"mode='truncated', got {truncation!r}")
    num_exact = int(truncation)
  elif truncation is not None:
    raise ValueError(f"`truncation` is only used with mode='truncated', got mode={mode!r}")
  else:
    num_exact = num_steps if mode == "full" else 0
  if lr is not None and jnp.ndim(lr) != 0:
    raise ValueError(f"`lr` must be a scalar, got shape {jnp.shape(lr)}")
  if batch_per_step:
    for leaf in jax.tree.leaves(batch):
      if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num_steps:
        raise ValueError(f"with batch_per_step=True every leaf of `batch` needs a leading axis of length "
                         f"num_steps={num_steps}, got shape {jnp.shape(leaf)}")

  if optimizer is None:
    update, opt_state = _sgd_update(lr), ()
  else:
    update, opt_state = _optax_update(optimizer), optimizer.init(params)
  use_key = key is not None

  def make_step(first_order: bool):
    def step(carry, xs):
      p, s = carry
      batch_k, key_k = xs
      if not batch_per_step:
        batch_k = batch
      args = (batch_k, key_k) if use_key else (batch_k,)
      loss, grads = jax.value_and_grad(loss_fn)(p, *args)
      if first_order:
        grads = jax.lax.stop_gradient(grads)
      p, s = update(grads, s, p)
      return (p, s), loss

    return jax.checkpoint(step) if checkpoint else step

  xs = (batch if batch_per_step else None, jax.random.split(key, num_steps) if use_key else None)
  num_first = num_steps - num_exact
  carry, losses = (params, opt_state), []
  for first_order, start, stop in ((True, 0, num_first), (False, num_first, num_steps)):
    if stop > start:
      seg = jax.tree.map(lambda a, start=start, stop=stop: a[start:stop], xs)
      carry, seg_losses = jax.lax.scan(make_step(first_order), carry, seg, length=stop - start)
      losses.append(seg_losses)
  adapted = carry[0]
  if return_losses:
    return adapted, jnp.concatenate(losses) if len(losses) > 1 else losses[0]
  return adapted


def outer_objective(
    params: PyTree,
    inner_batch: PyTree,
    outer_batch: PyTree,
    loss_fn: LossFn,
    *,
    outer_loss_fn: LossFn | None = None,
    key: jax.Array | None = None,
    **inner_kwargs: Any,
) -> jax.Array:
  r"""The bilevel objective :math:`F(\theta_0) = \ell_{out}(\text{inner\_adapt}(\theta_0; b_{in}); b_{out})`.

  Args:
    params: starting parameters :math:`\theta_0`.
    inner_batch: batch (or per-step batches) for the inner loop.
    outer_batch: batch for the outer loss.
    loss_fn: inner loss ``loss_fn(params, batch[, key])``; also the outer loss unless ``outer_loss_fn``.
    outer_loss_fn: outer loss with the same calling convention (default: ``loss_fn``).
    key: optional PRNG key, split into an inner key (for :func:`inner_adapt`) and an outer key; when given,
      both losses are called with a key as third argument.
    **inner_kwargs: keyword arguments of :func:`inner_adapt` (``num_steps``, ``lr`` or ``optimizer``,
      ``mode``, ``truncation``, ``batch_per_step``, ``checkpoint``).

  Returns:
    Scalar outer loss; ``jax.grad`` of it with respect to ``params`` is the meta-gradient.
  """
  if "return_losses" in inner_kwargs:
    raise ValueError("`return_losses` is not supported by outer_objective; call inner_adapt directly")
  outer_loss_fn = loss_fn if outer_loss_fn is None else outer_loss_fn
  if key is None:
    adapted = inner_adapt(params, inner_batch, loss_fn, **inner_kwargs)
    return outer_loss_fn(adapted, outer_batch)
  key_inner, key_outer = jax.random.split(key)
  adapted = inner_adapt(params, inner_batch, loss_fn, key=key_inner, **inner_kwargs)
  return outer_loss_fn(adapted, outer_batch, key_outer)


def meta_value_and_grad(
    params: PyTree,
    inner_batch: PyTree,
    outer_batch: PyTree,
    loss_fn: LossFn,
    **kwargs: Any,
) -> tuple[jax.Array, PyTree]:
  """``jax.value_and_grad`` of :func:`outer_objective` with respect to ``params`` (same arguments).

  Returns:
    ``(outer_loss, meta_gradient)`` with the meta-gradient shaped like ``params``. In ``"first_order"``
    and ``"truncated"`` modes it is the corresponding approximation of the exact meta-gradient.
  """
  return jax.value_and_grad(outer_objective)(params, inner_batch, outer_batch, loss_fn, **kwargs)
