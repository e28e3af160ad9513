r"""Rectified-flow path, flow-matching loss and condition dropout for classifier-free training.

Time convention (the library's "t-convention", see :mod:`jaxgen.core.ode`): ``t = 0`` is noise, ``t = 1``
is data. With noise :math:`x_0 \sim \mathcal N(0, I)` and data :math:`x_1`,

.. math::  x_t = (1 - t)\,x_0 + t\,x_1,\qquad u_t = \frac{d x_t}{dt} = x_1 - x_0,

and the conditional flow-matching loss (Lipman et al. 2023; Liu et al. 2023, rectified flow) regresses a
model velocity :math:`v_\theta(x_t, t, c)` on :math:`u_t`:

.. math::  \mathcal L(\theta) = \mathbb E_{t, x_0, x_1}\,
           \frac1D \lVert v_\theta(x_t, t, c) - (x_1 - x_0)\rVert^2 ,

with :math:`t \sim U(0, 1)` or logit-normal :math:`t = \operatorname{sigmoid}(m + s\,n)`,
:math:`n \sim \mathcal N(0, 1)` (Esser et al. 2024, SD3, their default :math:`m = 0, s = 1`). Samples are
then drawn by integrating :math:`dx/dt = v_\theta` from 0 to 1 with :func:`jaxgen.core.ode.odeint`.
A model in the diffusers/SD3 sigma-convention (:math:`\sigma = 1 - t`, output :math:`x_0 - x_1`) is
converted with :func:`jaxgen.core.ode.velocity_sigma_to_t`.

Classifier-free guidance is trained by replacing the condition by a null condition with probability
``rate`` (Ho & Salimans 2022): :func:`drop_labels` for class labels (null class id),
:func:`drop_condition` for token sequences / embeddings (a null token id, a given null sequence, or zeros).

References:
  Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling", ICLR 2023, arXiv 2210.02747.
  Liu, Gong, Liu, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow",
  ICLR 2023, arXiv 2209.03003.
  Esser et al., "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis", ICML 2024,
  arXiv 2403.03206.
  Ho, Salimans, "Classifier-Free Diffusion Guidance", arXiv 2207.12598.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
# velocity_fn(params, x_t, t) or velocity_fn(params, x_t, t, cond) -> v, with t of shape [B].
ModelVelocityFn = Callable[..., jax.Array]

TIME_DISTRIBUTIONS = ("uniform", "logit_normal")

__all__ = [
    "TIME_DISTRIBUTIONS",
    "drop_condition",
    "drop_labels",
    "flow_matching_loss",
    "flow_matching_mse",
    "interpolate",
    "sample_time",
    "target_velocity",
]


def _time_column(t: jax.Array, x: jax.Array, name: str = "t") -> jax.Array:
  """Returns ``t`` (scalar or ``[B]``) shaped to broadcast against ``x`` of shape ``[B, ...]``."""
  t = jnp.asarray(t)
  if t.ndim == 0:
    return t
  if t.ndim != 1 or x.ndim == 0 or t.shape[0] != x.shape[0]:
    raise ValueError(f"`{name}` must be a scalar or of shape [B] = [{x.shape[0] if x.ndim else '?'}] "
                     f"matching the batch axis of x {x.shape}, got shape {t.shape}")
  return t.reshape(t.shape + (1,) * (x.ndim - 1))


def _check_rate(rate: Any) -> None:
  if isinstance(rate, (int, float, np.number)) and not 0.0 <= float(rate) <= 1.0:
    raise ValueError(f"`rate` must lie in [0, 1], got {rate}")


def interpolate(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
  r"""The rectified-flow path :math:`x_t = (1 - t)\,x_0 + t\,x_1` (``x0`` noise, ``x1`` data).

  Args:
    x0: noise :math:`x_0`, shape ``[B, ...]``.
    x1: data :math:`x_1`, same shape.
    t: scalar or ``[B]`` times in [0, 1] (broadcast over the non-batch axes).

  Returns:
    :math:`x_t`, shape ``[B, ...]`` in the dtype of ``x0``/``x1``; exactly ``x0`` at ``t = 0`` and ``x1``
    at ``t = 1``.
  """
  x0, x1 = jnp.asarray(x0), jnp.asarray(x1)
  if x0.shape != x1.shape:
    raise ValueError(f"`x0` and `x1` must have the same shape, got {x0.shape} and {x1.shape}")
  tc = _time_column(t, x1)
  return ((1 - tc) * x0 + tc * x1).astype(jnp.result_type(x0, x1))


def target_velocity(x0: jax.Array, x1: jax.Array) -> jax.Array:
  r"""The conditional velocity :math:`u_t = x_1 - x_0` of :func:`interpolate` (independent of ``t``)."""
  return jnp.asarray(x1) - jnp.asarray(x0)


def sample_time(key: jax.Array, shape: tuple[int, ...], *, distribution: str = "uniform",
                loc: float = 0.0, scale: float = 1.0, dtype: Any = jnp.float32) -> jax.Array:
  r"""Draws flow-matching times.

  Args:
    key: PRNG key.
    shape: output shape (usually ``(B,)``).
    distribution: ``"uniform"`` (:math:`U[0, 1)`) or ``"logit_normal"``
      (:math:`\operatorname{sigmoid}(m + s\,n)`, :math:`n \sim \mathcal N(0,1)`; SD3).
    loc: logit-normal location :math:`m` (SD3 default 0).
    scale: logit-normal scale :math:`s > 0` (SD3 default 1).
    dtype: floating dtype of the times.

  Returns:
    Times of the given shape in [0, 1].
  """
  if distribution == "uniform":
    return jax.random.uniform(key, shape, dtype)
  if distribution == "logit_normal":
    if isinstance(scale, (int, float)) and scale <= 0:
      raise ValueError(f"`scale` of the logit-normal distribution must be positive, got {scale}")
    return jax.nn.sigmoid(loc + scale * jax.random.normal(key, shape, dtype)).astype(dtype)
  raise ValueError(f"`distribution` must be one of {TIME_DISTRIBUTIONS}, got {distribution!r}")


def flow_matching_mse(v_pred: jax.Array, x0: jax.Array, x1: jax.Array) -> jax.Array:
  r"""Mean squared error :math:`\operatorname{mean}\,(v - (x_1 - x_0))^2` over all elements, in float32.

  Args:
    v_pred: model velocity, shape ``[B, ...]`` (any floating dtype; bf16 is upcast).
    x0: noise, same shape.
    x1: data, same shape.

  Returns:
    Scalar float32 (or float64 under x64 with float64 inputs) loss.
  """
  v_pred = jnp.asarray(v_pred)
  if v_pred.shape != jnp.shape(x1) or jnp.shape(x0) != jnp.shape(x1):
    raise ValueError(f"`v_pred`, `x0` and `x1` must have the same shape, got {v_pred.shape}, "
                     f"{jnp.shape(x0)} and {jnp.shape(x1)}")
  acc = jnp.promote_types(jnp.result_type(v_pred, x0, x1), jnp.float32)
  resid = v_pred.astype(acc) - target_velocity(jnp.asarray(x0, acc), jnp.asarray(x1, acc))
  return jnp.mean(jnp.square(resid))


def flow_matching_loss(
    velocity_fn: ModelVelocityFn,
    params: PyTree,
    x1: jax.Array,
    key: jax.Array,
    *,
    cond: PyTree | None = None,
    time_distribution: str = "uniform",
    logit_normal_loc: float = 0.0,
    logit_normal_scale: float = 1.0,
) -> jax.Array:
  r"""Monte-Carlo flow-matching loss on a data batch (one :math:`(t, x_0)` draw per example).

  ``key`` is split as ``key_t, key_noise = jax.random.split(key)``; :math:`t` ~ ``time_distribution``
  of shape ``[B]``, :math:`x_0 \sim \mathcal N(0, I)` like ``x1``; the loss is
  ``flow_matching_mse(velocity_fn(params, x_t, t[, cond]), x0, x1)``.

  Args:
    velocity_fn: ``velocity_fn(params, x_t, t)`` (or ``(params, x_t, t, cond)`` when ``cond`` is given)
      returning the t-convention velocity, shape like ``x_t``; ``t`` has shape ``[B]``.
    params: model parameters (differentiate the loss with respect to them).
    x1: data batch :math:`x_1`, shape ``[B, ...]``, floating.
    key: PRNG key.
    cond: optional condition passed through to ``velocity_fn`` (apply :func:`drop_labels` /
      :func:`drop_condition` before for classifier-free training).
    time_distribution: ``"uniform"`` or ``"logit_normal"`` (see :func:`sample_time`).
    logit_normal_loc: location :math:`m` of the logit-normal times.
    logit_normal_scale: scale :math:`s` of the logit-normal times.

  Returns:
    Scalar loss.
  """
  x1 = jnp.asarray(x1)
  if x1.ndim < 1 or not jnp.issubdtype(x1.dtype, jnp.floating):
    raise ValueError(f"`x1` must be a floating array with a batch axis, got shape {x1.shape} dtype {x1.dtype}")
  key_t, key_noise = jax.random.split(key)
  t = sample_time(key_t, (x1.shape[0],), distribution=time_distribution, loc=logit_normal_loc,
                  scale=logit_normal_scale, dtype=x1.dtype)
  x0 = jax.random.normal(key_noise, x1.shape, x1.dtype)
  x_t = interpolate(x0, x1, t)
  v = velocity_fn(params, x_t, t) if cond is None else velocity_fn(params, x_t, t, cond)
  return flow_matching_mse(v, x0, x1)


def drop_condition(key: jax.Array, cond: PyTree, *, rate: float, null: Any = None,
                   return_mask: bool = False) -> PyTree | tuple[PyTree, jax.Array]:
  r"""Replaces whole examples' conditions by a null condition with probability ``rate`` (CFG training).

  One Bernoulli(``rate``) draw per example (leading axis ``B``); a dropped example has its entire condition
  (every token, every leaf of a pytree condition) replaced.

  Args:
    key: PRNG key.
    cond: condition, an array ``[B, ...]`` (e.g. token ids ``[B, L]`` or embeddings ``[B, L, D]``) or a
      pytree of such arrays sharing ``B``.
    rate: drop probability :math:`p` (often 0.1-0.2). May be a traced scalar.
    null: the null condition: ``None`` for zeros, a scalar (e.g. the null token id) filling the example,
      or an array broadcastable to ``leaf.shape[1:]`` (e.g. the embedded empty prompt ``[L, D]``); for a
      pytree ``cond`` either one of these for every leaf or a pytree of them with ``cond``'s structure.
    return_mask: also return the ``[B]`` boolean mask of dropped examples.

  Returns:
    The condition with dropped examples replaced (same structure, shapes and dtypes), and the mask if
    ``return_mask``.
  """
  _check_rate(rate)
  leaves, treedef = jax.tree.flatten(cond)
  if not leaves:
    raise ValueError("`cond` must contain at least one array")
  batch = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else None
  for leaf in leaves:
    if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != batch:
      raise ValueError(f"every leaf of `cond` needs the same leading batch axis, got shapes "
                       f"{[jnp.shape(l) for l in leaves]}")
  if null is None or isinstance(null, (bool, int, float, np.ndarray, np.number, jax.Array)):
    nulls = [null] * len(leaves)
  else:
    try:
      nulls = treedef.flatten_up_to(null)
    except (ValueError, TypeError) as e:
      raise ValueError(f"`null` must be None, a scalar, an array or a pytree matching `cond`: {e}") from e
  mask = jax.random.bernoulli(key, rate, (batch,))

  def replace(leaf, null_leaf):
    leaf = jnp.asarray(leaf)
    if null_leaf is None:
      fill = jnp.zeros(leaf.shape[1:], leaf.dtype)
    else:
      null_leaf = jnp.asarray(null_leaf)
      try:
        fill = jnp.broadcast_to(null_leaf, leaf.shape[1:]).astype(leaf.dtype)
      except ValueError as e:
        raise ValueError(f"`null` of shape {null_leaf.shape} cannot fill a condition example of shape "
                         f"{leaf.shape[1:]}") from e
    m = mask.reshape((batch,) + (1,) * (leaf.ndim - 1))
    return jnp.where(m, fill[None], leaf)

  out = treedef.unflatten([replace(l, n) for l, n in zip(leaves, nulls)])
  return (out, mask) if return_mask else out


def drop_labels(key: jax.Array, labels: jax.Array, *, rate: float, null_label: int,
                return_mask: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
  r"""Replaces class labels by the null class id with probability ``rate`` (classifier-free training).

  Args:
    key: PRNG key.
    labels: integer class labels ``[B]``.
    rate: drop probability :math:`p` (e.g. 0.1-0.2).
    null_label: id of the null ("unconditional") class, usually ``num_classes``.
    return_mask: also return the ``[B]`` boolean mask of dropped labels.

  Returns:
    Labels ``[B]`` with dropped entries equal to ``null_label`` (and the mask if ``return_mask``).
  """
  labels = jnp.asarray(labels)
  if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"`labels` must be a 1-D integer array [B], got shape {labels.shape} dtype {labels.dtype}")
  return drop_condition(key, labels, rate=rate, null=null_label, return_mask=return_mask)
