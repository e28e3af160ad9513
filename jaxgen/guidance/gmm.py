r"""Exact velocity of the flow from :math:`\mathcal N(0, I)` to an isotropic Gaussian mixture (analytic oracle).

The CFG-Zero* paper (Fan et al., arXiv 2503.18886, Sec. 3) studies guidance on a Gaussian mixture where the
ground-truth flow is known; this module provides that flow in closed form, so samplers and guidance rules
can be compared without learning error.

Setting (library t-convention: ``t = 0`` noise, ``t = 1`` data). Data
:math:`x_1 \sim \sum_k \pi_k\,\mathcal N(\mu_k, \sigma_k^2 I)` in :math:`\mathbb R^d`, noise
:math:`x_0 \sim \mathcal N(0, I)`, path :math:`x_t = t\,x_1 + (1 - t)\,x_0`, target velocity
:math:`x_1 - x_0`. Given component :math:`k`,
:math:`x_t \sim \mathcal N(t\,\mu_k, s_k^2(t)\,I)` with :math:`s_k^2(t) = t^2\sigma_k^2 + (1 - t)^2`, and the
conditional-expectation velocity :math:`v_k(x, t) = \mathbb E[x_1 - x_0 \mid x_t = x, k]` is

.. math::  v_k(x, t) = \frac{(1 - t)\,\mu_k + (t\,\sigma_k^2 - (1 - t))\,x}{t^2\sigma_k^2 + (1 - t)^2}.

The mixture (unconditional) velocity is :math:`v(x, t) = \sum_k \gamma_k(x, t)\,v_k(x, t)` with
responsibilities :math:`\gamma_k \propto \pi_k\,\mathcal N(x;\, t\,\mu_k, s_k^2(t)\,I)` (a softmax over
:math:`k` in log space). With one component per class, the class-conditional velocity of class
:math:`y` is :math:`v_y` (:func:`gmm_class_velocity`) and the unconditional velocity is the mixture
(:func:`gmm_velocity`). Closed-form checks: :math:`v(x, 0) = \sum_k \pi_k\mu_k - x`,
:math:`v_k(x, 0) = \mu_k - x`, :math:`v_k(x, 1) = x` for :math:`\sigma_k > 0`.

Arguments: ``means`` :math:`\mu` ``[K, d]``, ``stds`` :math:`\sigma` ``[K]`` (> 0), ``weights``
:math:`\pi` ``[K]`` (nonnegative, normalised internally), query points ``x`` ``[N, d]`` and time ``t``
(a scalar or one time per point ``[N]``, in ``[0, 1]``). Functions are pure and jittable; they compute in
the promoted dtype of their inputs (float64 under ``jax.enable_x64``).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "circle_gmm",
    "gmm_class_velocity",
    "gmm_component_velocity",
    "gmm_log_posterior",
    "gmm_posterior",
    "gmm_sample",
    "gmm_velocity",
]


def _check_mixture(means: Any, stds: Any, weights: Any = None) -> tuple[jax.Array, ...]:
  means, stds = jnp.asarray(means), jnp.asarray(stds)
  if means.ndim != 2:
    raise ValueError(f"`means` must have shape [K, d], got {means.shape}")
  if stds.shape != (means.shape[0],):
    raise ValueError(f"`stds` must have shape [K] = [{means.shape[0]}], got {stds.shape}")
  if not isinstance(stds, jax.core.Tracer):
    limit = float(np.sqrt(np.finfo(np.dtype(stds.dtype) if jnp.issubdtype(stds.dtype, jnp.floating)
                                   else np.float32).max)) / 4
    if not bool(np.all(np.isfinite(stds) & (np.asarray(stds) > 0) & (np.asarray(stds) < limit))):
      raise ValueError(f"`stds` must be positive and below {limit:.3g} (its variance must be finite in "
                       f"{stds.dtype}), got {stds}")
  if weights is None:
    return means, stds
  if not isinstance(weights, jax.core.Tracer):
    w = np.asarray(weights)
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
      raise ValueError(f"`weights` must be finite, nonnegative and not all zero, got {weights}")
  weights = jnp.asarray(weights)
  if weights.shape != (means.shape[0],):
    raise ValueError(f"`weights` must have shape [K] = [{means.shape[0]}], got {weights.shape}")
  return means, stds, weights


def _check_points(x: Any, t: Any, dim: int) -> tuple[jax.Array, jax.Array]:
  """Returns ``x [N, d]`` and ``t`` as a ``[N]`` vector."""
  x, t = jnp.asarray(x), jnp.asarray(t)
  if x.ndim != 2 or x.shape[1] != dim:
    raise ValueError(f"`x` must have shape [N, d] with d = {dim} (the means' dimension), got {x.shape}")
  if t.ndim == 0:
    t = jnp.broadcast_to(t, (x.shape[0],))
  elif t.shape != (x.shape[0],):
    raise ValueError(f"`t` must be a scalar or of shape [N] = [{x.shape[0]}], got {t.shape}")
  return x, t


def _promote(*arrays: jax.Array) -> list[jax.Array]:
  dtype = jnp.promote_types(jnp.result_type(*arrays), jnp.float32)
  return [a.astype(dtype) for a in arrays]


def gmm_component_velocity(x: jax.Array, t: jax.Array, means: jax.Array, stds: jax.Array) -> jax.Array:
  r"""Per-component (= per-class) exact velocities :math:`v_k(x, t)`.

  Args:
    x: query points ``[N, d]``.
    t: time, scalar or ``[N]``, in ``[0, 1]`` (t-convention: 0 noise, 1 data).
    means: component means :math:`\mu_k`, ``[K, d]``.
    stds: component standard deviations :math:`\sigma_k`, ``[K]``.

  Returns:
    ``[K, N, d]`` with ``out[k] = ((1 - t) mu_k + (t sigma_k^2 - (1 - t)) x) / (t^2 sigma_k^2 + (1 - t)^2)``.
  """
  means, stds = _check_mixture(means, stds)
  x, t = _check_points(x, t, means.shape[1])
  x, t, means, stds = _promote(x, t, means, stds)
  tc = t[None, :, None]                                  # [1, N, 1]
  var = stds[:, None, None] ** 2                          # [K, 1, 1]
  num = (1 - tc) * means[:, None, :] + (tc * var - (1 - tc)) * x[None, :, :]
  return num / (tc ** 2 * var + (1 - tc) ** 2)


def gmm_log_posterior(x: jax.Array, t: jax.Array, means: jax.Array, stds: jax.Array,
                      weights: jax.Array) -> jax.Array:
  r"""Log responsibilities :math:`\log \gamma_k(x, t)`, ``[N, K]`` (normalised over ``k``).

  :math:`\gamma_k \propto \pi_k\,\mathcal N(x;\, t\,\mu_k, (t^2\sigma_k^2 + (1 - t)^2) I)`.
  """
  means, stds, weights = _check_mixture(means, stds, weights)
  x, t = _check_points(x, t, means.shape[1])
  x, t, means, stds, weights = _promote(x, t, means, stds, weights)
  d = means.shape[1]
  tc = t[:, None]                                                      # [N, 1]
  var = tc ** 2 * (stds ** 2)[None, :] + (1 - tc) ** 2                 # [N, K]
  sq = jnp.sum((x[:, None, :] - tc[:, :, None] * means[None, :, :]) ** 2, axis=-1)   # [N, K]
  logits = jnp.log(weights)[None, :] - 0.5 * sq / var - 0.5 * d * jnp.log(var)
  return jax.nn.log_softmax(logits, axis=-1)


def gmm_posterior(x: jax.Array, t: jax.Array, means: jax.Array, stds: jax.Array, weights: jax.Array) -> jax.Array:
  """Responsibilities :math:`\\gamma_k(x, t)`, ``[N, K]`` (rows sum to 1); see :func:`gmm_log_posterior`."""
  return jnp.exp(gmm_log_posterior(x, t, means, stds, weights))


def gmm_velocity(x: jax.Array, t: jax.Array, means: jax.Array, stds: jax.Array, weights: jax.Array) -> jax.Array:
  r"""Exact mixture (unconditional) velocity :math:`v(x, t) = \sum_k \gamma_k(x, t)\,v_k(x, t)`, ``[N, d]``.

  Args:
    x: query points ``[N, d]``.
    t: time, scalar or ``[N]`` (0 noise, 1 data).
    means: :math:`\mu` ``[K, d]``.
    stds: :math:`\sigma` ``[K]``.
    weights: mixture weights :math:`\pi` ``[K]`` (normalised internally).

  Returns:
    ``[N, d]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> v = gmm_velocity(jnp.zeros((1, 2)), 0.0, jnp.array([[1.0, 0.0], [-1.0, 2.0]]), jnp.ones(2),
    ...                  jnp.array([0.5, 0.5]))
    >>> v.tolist()                                      # at t = 0: sum_k pi_k mu_k - x
    [[0.0, 1.0]]
  """
  gamma = gmm_posterior(x, t, means, stds, weights)                    # [N, K]
  v_k = gmm_component_velocity(x, t, means, stds)                      # [K, N, d]
  return jnp.einsum("nk,knd->nd", gamma.astype(v_k.dtype), v_k)


def gmm_class_velocity(x: jax.Array, t: jax.Array, means: jax.Array, stds: jax.Array,
                       labels: jax.Array) -> jax.Array:
  r"""Class-conditional velocity :math:`v_{y_n}(x_n, t)` for one label per point, ``[N, d]``.

  Labels may be traced; per point only its own component is evaluated.
  """
  means, stds = _check_mixture(means, stds)
  labels = jnp.asarray(labels)
  x, t = _check_points(x, t, means.shape[1])
  if labels.shape != (x.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"`labels` must be integer class ids of shape [N] = [{x.shape[0]}], got shape "
                     f"{labels.shape} dtype {labels.dtype}")
  x, t, means, stds = _promote(x, t, means, stds)
  mu, var, tc = means[labels], (stds[labels] ** 2)[:, None], t[:, None]
  return ((1 - tc) * mu + (tc * var - (1 - tc)) * x) / (tc ** 2 * var + (1 - tc) ** 2)


def gmm_sample(key: jax.Array, num_samples: int, means: jax.Array, stds: jax.Array, weights: jax.Array,
               labels: jax.Array | None = None, *, dtype: Any = None) -> tuple[jax.Array, jax.Array]:
  r"""Exact samples of the mixture (``labels=None``) or of given per-class components.

  Args:
    key: PRNG key.
    num_samples: N (Python int).
    means: :math:`\mu` ``[K, d]``.
    stds: :math:`\sigma` ``[K]``.
    weights: :math:`\pi` ``[K]``; labels are drawn from it when ``labels`` is None.
    labels: optional integer ``[N]`` component ids; sample ``n`` is drawn from
      :math:`\mathcal N(\mu_{y_n}, \sigma_{y_n}^2 I)` (the class-conditional truth).
    dtype: floating dtype of the samples (default: promoted dtype of ``means``/``stds``, at least float32).

  Returns:
    ``(x [N, d], labels [N] int32)``.
  """
  means, stds, weights = _check_mixture(means, stds, weights)
  if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
    raise ValueError(f"`num_samples` must be a Python int >= 0, got {num_samples!r}")
  dtype = dtype or jnp.promote_types(jnp.result_type(means, stds), jnp.float32)
  key_label, key_noise = jax.random.split(key)
  if labels is None:
    labels = jax.random.categorical(key_label, jnp.log(weights.astype(dtype)), shape=(num_samples,))
  labels = jnp.asarray(labels)
  if labels.shape != (num_samples,) or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"`labels` must be integer ids of shape [num_samples] = [{num_samples}], got shape "
                     f"{labels.shape} dtype {labels.dtype}")
  labels = labels.astype(jnp.int32)
  noise = jax.random.normal(key_noise, (num_samples, means.shape[1]), dtype)
  x = means.astype(dtype)[labels] + stds.astype(dtype)[labels][:, None] * noise
  return x, labels


def circle_gmm(num_components: int = 8, radius: float = 4.0, std: float = 0.5,
               dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""The 2-D study mixture: ``num_components`` equal-weight modes on a circle (spec E1: 8, radius 4, std 0.5).

  Means :math:`\mu_k = r(\cos 2\pi k/K, \sin 2\pi k/K)`.

  Returns:
    ``(means [K, 2], stds [K], weights [K])``.
  """
  if isinstance(num_components, bool) or not isinstance(num_components, (int, np.integer)) or num_components < 1:
    raise ValueError(f"`num_components` must be a Python int >= 1, got {num_components!r}")
  if not (np.isfinite(std) and std > 0):
    raise ValueError(f"`std` must be a finite positive number, got {std}")
  angles = 2 * np.pi * np.arange(num_components) / num_components
  means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
  return (jnp.asarray(means, dtype), jnp.full((num_components,), std, dtype),
          jnp.full((num_components,), 1.0 / num_components, dtype))
